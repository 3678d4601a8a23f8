/**
 * Events tab: the instance's recent events (GET .../events, newest first) with live events
 * prepended as they arrive. Each shows its type, local time and a one-line JSON summary, with the
 * full data behind a disclosure.
 */

import { api } from '../../api.js';
import { alertBox, button, clearBox, h, loading, replace, shortJson, showLoadError, timeEl, withBusy } from '../../ui.js';

const LIMIT = 50;
const MAX_SHOWN = 200;

export function eventsTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const list = h('ol', { class: 'event-list', 'aria-label': 'Events, newest first' });
  const area = h('div', {}, loading('Loading events…'));
  const refresh = button('Refresh');

  function eventItem(event, { live = false } = {}) {
    const data = event.data || {};
    return h(
      'li',
      { class: `event${live ? ' event--live' : ''}` },
      h('p', { class: 'event-head' }, h('strong', { class: 'event-type' }, event.type), ' ', timeEl(event.timestamp), live ? h('span', { class: 'tag' }, 'live') : null),
      h('p', {}, h('code', { class: 'json-short' }, shortJson(data))),
      h('details', {}, h('summary', {}, 'Full data'), h('pre', { class: 'json' }, JSON.stringify(data, null, 2))),
    );
  }

  async function load() {
    try {
      const page = await api.events(id, { limit: LIMIT }, { signal: scope.signal });
      const events = page.events || [];
      clearBox(alert);
      list.replaceChildren(...events.map((e) => eventItem(e)));
      replace(area, events.length ? list : h('p', { class: 'empty' }, 'No events yet. New events will appear here as they happen.'));
    } catch (err) {
      showLoadError(alert, area, err);
    }
  }

  refresh.addEventListener('click', () => withBusy(refresh, load));
  scope.subscribe('*', (event) => {
    if (event.instanceId !== id) return;
    if (!list.isConnected) replace(area, list);
    list.prepend(eventItem(event, { live: true }));
    while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
  });
  scope.subscribe('ready', load);

  panel.append(
    h('div', { class: 'section-head' }, h('h2', {}, 'Events'), refresh),
    h('p', { class: 'muted' }, 'Newest first. Events appear here as they happen.'),
    alert,
    area,
  );
  load();
}
