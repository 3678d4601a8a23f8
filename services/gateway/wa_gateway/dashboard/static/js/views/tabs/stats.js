/**
 * Stats tab: the instance's usage counters (GET /api/stats/instances/<id>?period=today|week|month|all,
 * default today), with the daily breakdown for longer periods. Re-read a few seconds after
 * message events (the stats service counts asynchronously) and on "Refresh".
 */

import { api } from '../../api.js';
import {
  alertBox,
  button,
  dataTable,
  definitionList,
  field,
  formatBytes,
  formatNumber,
  h,
  loading,
  replace,
  showLoadError,
  timeEl,
  withBusy,
} from '../../ui.js';

export const PERIOD_LABELS = { today: 'Today', week: 'This week', month: 'This month', year: 'This year', all: 'All time' };

/** The counters of a usage object as [term, value] pairs. */
export function usagePairs(usage = {}) {
  return [
    ['Messages sent', formatNumber(usage.messagesSent)],
    ['Messages received', formatNumber(usage.messagesReceived)],
    ['Media sent', formatNumber(usage.mediaSent)],
    ['Media received', formatNumber(usage.mediaReceived)],
    ['Media size', formatBytes(usage.totalMediaSize)],
    ['API calls', formatNumber(usage.apiCalls)],
    ['Webhooks sent', formatNumber(usage.webhookSent)],
  ];
}

export function statsTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const area = h('div', {}, loading('Loading statistics…'));
  const period = h('select', { name: 'period' }, ['today', 'week', 'month', 'all'].map((p) => h('option', { value: p }, PERIOD_LABELS[p])));
  const refresh = button('Refresh');
  const heading = h('h2', {}, 'Usage today');

  async function load() {
    try {
      const { usage = {} } = await api.instanceStats(id, period.value, { signal: scope.signal });
      heading.textContent = period.value === 'today' ? 'Usage today' : `Usage: ${PERIOD_LABELS[period.value].toLowerCase()}`;
      const daily = usage.dailyStats || [];
      replace(
        area,
        definitionList(usagePairs(usage), 'facts stats-grid'),
        period.value !== 'today' && daily.length
          ? h(
              'section',
              { 'aria-labelledby': 'daily-title' },
              h('h3', { id: 'daily-title' }, 'Per day (UTC)'),
              dataTable({
                caption: 'Daily usage',
                captionHidden: true,
                rows: daily,
                columns: [
                  { label: 'Date', render: (d) => String(d.date).slice(0, 10) },
                  { label: 'Sent', render: (d) => formatNumber(d.messagesSent) },
                  { label: 'Received', render: (d) => formatNumber(d.messagesReceived) },
                  { label: 'Media sent', render: (d) => formatNumber(d.mediaSent) },
                  { label: 'Media received', render: (d) => formatNumber(d.mediaReceived) },
                ],
              }),
            )
          : null,
        h('p', { class: 'muted' }, 'Updated ', timeEl(new Date().toISOString()), '. Days are UTC calendar days.'),
      );
    } catch (err) {
      showLoadError(alert, area, err);
    }
  }

  period.addEventListener('change', load);
  refresh.addEventListener('click', () => withBusy(refresh, load));
  const reloadSoon = scope.debounce(load, 3000);
  for (const type of ['message_sent', 'message_received', 'webhook.delivered']) {
    scope.subscribe(type, (e) => e.instanceId === id && reloadSoon());
  }
  scope.subscribe('ready', load);

  panel.append(
    h('div', { class: 'section-head' }, heading, h('div', { class: 'toolbar' }, field('Period', period, { className: 'field--inline' }), refresh)),
    alert,
    area,
  );
  load();
}
