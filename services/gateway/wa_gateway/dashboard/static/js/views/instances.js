/**
 * #/instances: the caller's instances with live status badges, and the "New instance" form.
 * Live: connection events update the badges in place; instance.created/updated/deleted and a
 * (re)opened stream re-read the list. While the stream is down the list is re-read every 15 s.
 */

import { api } from '../api.js';
import { rememberInstances, statusFromEvent, statusOf } from '../instances-state.js';
import { href } from '../router.js';
import { streamState } from '../stream.js';
import {
  alertBox,
  button,
  dataTable,
  h,
  loading,
  pageHeading,
  replace,
  setBadge,
  showError,
  showLoadError,
  statusBadge,
  timeEl,
  validateForm,
  withBusy,
} from '../ui.js';
import { INSTANCE_FIELD_ALIASES, instanceForm } from './instance-form.js';

export function instancesView(main, ctx) {
  const { scope } = ctx;
  ctx.setTitle('Instances');

  const alert = alertBox();
  const listArea = h('div', { class: 'list-area' }, loading('Loading instances…'));
  /** instanceId → its status badge in the table. */
  let badges = new Map();

  // --- "New instance" ---------------------------------------------------------------------
  const createAlert = alertBox();
  const cancel = button('Cancel');
  const create = instanceForm({ mode: 'create', submitLabel: 'Create instance', extraActions: [cancel] });
  const createSection = h(
    'section',
    { class: 'card', id: 'new-instance', hidden: true, 'aria-labelledby': 'new-instance-title' },
    h('h2', { id: 'new-instance-title' }, 'New instance'),
    createAlert,
    create.form,
  );
  const toggle = button('New instance', {
    class: 'primary',
    'aria-expanded': 'false',
    'aria-controls': 'new-instance',
  });

  function setFormOpen(open) {
    createSection.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open) create.focusFirst();
    else toggle.focus();
  }
  toggle.addEventListener('click', () => setFormOpen(createSection.hidden));
  cancel.addEventListener('click', () => setFormOpen(false));

  create.form.addEventListener('submit', async (event) => {
    event.preventDefault();
    createAlert.replaceChildren();
    if (!validateForm(create.form, createAlert)) return;
    const body = create.read();
    if (!body) return;
    try {
      const instance = await withBusy(create.submit, () => api.createInstance(body, { signal: scope.signal }));
      rememberInstances([instance]);
      ctx.announce(`Instance ${instance.name} created`);
      ctx.navigate(`/instances/${encodeURIComponent(instance.id)}`);
    } catch (err) {
      showError(createAlert, err, { form: create.form, aliases: INSTANCE_FIELD_ALIASES });
    }
  });

  // --- the list ----------------------------------------------------------------------------
  async function load() {
    try {
      const { instances = [] } = await api.listInstances({ signal: scope.signal });
      rememberInstances(instances);
      alert.replaceChildren();
      render(instances);
    } catch (err) {
      showLoadError(alert, listArea, err);
    }
  }

  function render(instances) {
    badges = new Map();
    const sorted = [...instances].sort((a, b) => String(a.name).localeCompare(String(b.name)));
    replace(
      listArea,
      dataTable({
        caption: `Your instances (${sorted.length})`,
        captionHidden: true,
        empty: 'No instances yet. Create one with “New instance”.',
        rows: sorted,
        columns: [
          { label: 'Name', render: (i) => h('a', { href: href('instances', i.id) }, i.name) },
          { label: 'ID', render: (i) => h('code', { class: 'id', title: i.id }, i.id) },
          {
            label: 'Status',
            render: (i) => {
              const badge = statusBadge(statusOf(i));
              badges.set(i.id, badge);
              return badge;
            },
          },
          { label: 'Webhook', render: (i) => (i.webhookEnabled ? 'enabled' : 'disabled') },
          { label: 'Created', render: (i) => timeEl(i.createdAt) },
        ],
      }),
    );
  }

  const reload = scope.debounce(load, 300);
  scope.subscribe('ready', load);
  scope.subscribe('*', (event) => {
    if (event.type && event.type.startsWith('instance.')) {
      reload();
      return;
    }
    const status = statusFromEvent(event);
    const badge = badges.get(event.instanceId);
    if (status && badge) setBadge(badge, status);
    // "disconnected" may really be "logged_out": read the exact status shortly after.
    if (event.type === 'disconnected') reload();
  });
  scope.interval(() => {
    if (streamState() !== 'live') load();
  }, 15000);

  main.append(
    h('div', { class: 'page-head' }, pageHeading('Instances'), toggle),
    createSection,
    alert,
    listArea,
  );
  load();
}
