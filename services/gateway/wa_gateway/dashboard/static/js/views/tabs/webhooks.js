/**
 * Webhooks tab: the instance's webhook deliveries (GET .../webhooks/deliveries, newest first,
 * each with its attempts), filtered by status, with "Redeliver" per delivery, "Send test webhook"
 * and "Refresh". Live: re-read when a webhook.delivered / webhook.failed event of this instance
 * arrives (and when the stream reopens).
 */

import { api } from '../../api.js';
import {
  alertBox,
  button,
  clearBox,
  dataTable,
  field,
  h,
  loading,
  noticeBox,
  notify,
  onAction,
  replace,
  showLoadError,
  statusBadge,
  timeEl,
  withBusy,
} from '../../ui.js';

const LIMIT = 50;

export function webhooksTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const notice = noticeBox();
  const area = h('div', {}, loading('Loading deliveries…'));
  const refresh = button('Refresh');
  const test = button('Send test webhook', { class: 'primary' });
  const statusFilter = h(
    'select',
    { name: 'status' },
    ['', 'pending', 'delivered', 'failed', 'cancelled'].map((s) => h('option', { value: s }, s || 'All')),
  );
  const config = h('p', { class: 'muted' });

  function describeConfig(data) {
    if (!data) return;
    if (!data.webhookUrl) config.textContent = 'No webhook URL is set for this instance (Settings tab).';
    else config.textContent = `Webhook ${data.webhookEnabled ? 'enabled' : 'disabled'}: ${data.webhookUrl}`;
  }
  instance.onData(describeConfig, scope);
  describeConfig(instance.data);

  function attemptsDetails(delivery) {
    const attempts = delivery.attempts || [];
    if (attempts.length === 0) return h('span', { class: 'muted' }, 'no attempt yet');
    return h(
      'details',
      { class: 'attempts' },
      h('summary', {}, `Attempts (${attempts.length})`),
      h(
        'ol',
        {},
        attempts.map((a) =>
          h(
            'li',
            {},
            `#${a.number} · `,
            timeEl(a.at),
            ` · ${a.outcome}`,
            a.statusCode ? ` · HTTP ${a.statusCode}` : '',
            typeof a.durationMs === 'number' ? ` · ${a.durationMs} ms` : '',
            a.error ? ` · ${a.error}` : '',
          ),
        ),
      ),
    );
  }

  function lastResult(delivery) {
    const parts = [];
    if (delivery.lastStatusCode) parts.push(`HTTP ${delivery.lastStatusCode}`);
    if (delivery.lastError) parts.push(delivery.lastError);
    return parts.join(' · ') || '—';
  }

  /** After a delivery is queued: the API's message (else `fallback`) in the notice, the list re-read. */
  function queued(fallback) {
    return async (result) => {
      notify(notice, result.message || fallback);
      await load();
    };
  }

  function redeliverButton(delivery) {
    const descriptionId = `delivery-${delivery.id}`;
    const btn = button('Redeliver', { 'aria-describedby': descriptionId, disabled: delivery.status === 'pending' });
    if (delivery.status === 'pending') btn.title = 'Still being delivered';
    return onAction(btn, alert, {
      run: () => api.redeliver(id, delivery.id, { signal: scope.signal }),
      done: queued('Redelivery queued.'),
    });
  }

  let loadSeq = 0;
  async function load() {
    const seq = ++loadSeq;
    try {
      const page = await api.deliveries(id, { limit: LIMIT, status: statusFilter.value }, { signal: scope.signal });
      if (seq !== loadSeq) return;
      const deliveries = page.deliveries || [];
      const total = page.pagination ? page.pagination.total : deliveries.length;
      replace(
        area,
        h('p', { class: 'muted' }, `${total} deliver${total === 1 ? 'y' : 'ies'}${total > deliveries.length ? ` (showing the latest ${deliveries.length})` : ''}.`),
        dataTable({
          caption: 'Webhook deliveries',
          captionHidden: true,
          rows: deliveries,
          empty: 'No webhook deliveries yet.',
          columns: [
            {
              label: 'Event',
              render: (d) => h('span', { id: `delivery-${d.id}` }, d.event, d.redeliveryOf ? h('span', { class: 'tag' }, 'redelivery') : null),
            },
            { label: 'Status', render: (d) => statusBadge(d.status) },
            { label: 'Attempts', render: (d) => `${d.attemptCount} of ${d.maxRetries + 1}` },
            { label: 'Last result', render: lastResult },
            { label: 'Created', render: (d) => timeEl(d.createdAt) },
            { label: 'Details', render: attemptsDetails },
            { label: 'Actions', render: redeliverButton },
          ],
        }),
      );
    } catch (err) {
      if (seq !== loadSeq) return;
      showLoadError(alert, area, err);
    }
  }

  refresh.addEventListener('click', () => {
    clearBox(alert);
    withBusy(refresh, load);
  });
  statusFilter.addEventListener('change', load);
  onAction(test, alert, { run: () => api.testWebhook(id, { signal: scope.signal }), done: queued('Test webhook queued.') });

  const reloadSoon = scope.debounce(load, 500);
  scope.subscribe('webhook.delivered', (e) => e.instanceId === id && reloadSoon());
  scope.subscribe('webhook.failed', (e) => e.instanceId === id && reloadSoon());
  scope.subscribe('ready', load);

  panel.append(
    h('h2', {}, 'Webhook deliveries'),
    config,
    alert,
    notice,
    h('div', { class: 'toolbar' }, field('Status', statusFilter, { className: 'field--inline' }), h('div', { class: 'actions' }, refresh, test)),
    area,
  );
  load();
}
