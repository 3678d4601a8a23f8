/**
 * The instance form shared by "New instance" (POST /api/instances, flat body) and the Settings
 * tab (PUT /api/instances/<id>, webhook options nested in `webhookSettings`).
 *
 * Controls are named after the API fields so that error `details` land next to them
 * (`webhookSettings.maxRetries` → the control named `maxRetries`; `secret` → `webhookSecret`).
 */

import { checkboxField, field, h, showFieldError } from '../ui.js';

/** How error detail fields map onto control names. */
export const INSTANCE_FIELD_ALIASES = { secret: 'webhookSecret' };

const DEFAULTS = {
  name: '',
  description: '',
  webhookUrl: '',
  webhookEnabled: false,
  notifyReceived: true,
  notifySent: true,
  notifyDelivery: false,
  notifyRead: false,
  maxRetries: 3,
  retryInterval: 60000,
  secret: '',
  headers: {},
};

/** Form values from an instance detail (GET /api/instances/<id>). */
export function valuesFromInstance(instance) {
  const settings = instance.webhookSettings || {};
  return {
    ...DEFAULTS,
    name: instance.name || '',
    description: instance.description || '',
    webhookUrl: instance.webhookUrl || '',
    webhookEnabled: Boolean(instance.webhookEnabled),
    notifyReceived: settings.notifyReceived ?? DEFAULTS.notifyReceived,
    notifySent: settings.notifySent ?? DEFAULTS.notifySent,
    notifyDelivery: settings.notifyDelivery ?? DEFAULTS.notifyDelivery,
    notifyRead: settings.notifyRead ?? DEFAULTS.notifyRead,
    maxRetries: settings.maxRetries ?? DEFAULTS.maxRetries,
    retryInterval: settings.retryInterval ?? DEFAULTS.retryInterval,
    secret: settings.secret || '',
    headers: settings.headers || {},
  };
}

/**
 * Build the form. Returns {form, submit, read()} where read() gives the request body for `mode`
 * ('create' | 'edit'), or null after marking invalid fields (e.g. headers that are not a JSON
 * object).
 */
export function instanceForm({ mode, values = {}, submitLabel, extraActions = [] }) {
  const v = { ...DEFAULTS, ...values };
  const name = h('input', { type: 'text', name: 'name', required: true, maxLength: 200, value: v.name, autocomplete: 'off' });
  const description = h('textarea', { name: 'description', rows: 2, maxLength: 2000 }, v.description);
  const webhookUrl = h('input', {
    type: 'url',
    name: 'webhookUrl',
    value: v.webhookUrl,
    placeholder: 'https://example.com/webhook',
    autocomplete: 'off',
    spellcheck: false,
  });
  const webhookEnabled = h('input', { type: 'checkbox', name: 'webhookEnabled', checked: v.webhookEnabled });
  const notify = {
    notifyReceived: h('input', { type: 'checkbox', name: 'notifyReceived', checked: v.notifyReceived }),
    notifySent: h('input', { type: 'checkbox', name: 'notifySent', checked: v.notifySent }),
    notifyDelivery: h('input', { type: 'checkbox', name: 'notifyDelivery', checked: v.notifyDelivery }),
    notifyRead: h('input', { type: 'checkbox', name: 'notifyRead', checked: v.notifyRead }),
  };
  const maxRetries = h('input', { type: 'number', name: 'maxRetries', min: 0, max: 20, step: 1, required: true, value: v.maxRetries, inputMode: 'numeric' });
  const retryInterval = h('input', { type: 'number', name: 'retryInterval', min: 1000, max: 86400000, step: 1, required: true, value: v.retryInterval, inputMode: 'numeric' });
  const secret = h('input', { type: 'password', name: 'webhookSecret', value: v.secret, autocomplete: 'new-password', maxLength: 512, spellcheck: false });
  const headersText = Object.keys(v.headers || {}).length ? JSON.stringify(v.headers, null, 2) : '';
  const headers = h('textarea', { name: 'headers', rows: 3, spellcheck: false, placeholder: '{"X-Custom-Header": "value"}' }, headersText);

  // In edit mode only fields the user touched are sent for the secret and headers (the server
  // keeps the others), so an untouched secret is never re-sent.
  const touched = new Set();
  for (const control of [secret, headers]) control.addEventListener('input', () => touched.add(control.name));

  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  const form = h(
    'form',
    { class: 'stack instance-form', noValidate: true },
    field('Name', name),
    field('Description', description),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Webhook'),
      field('Webhook URL', webhookUrl, { hint: 'Where events are POSTed (http or https).' }),
      checkboxField('Webhook enabled', webhookEnabled),
      h(
        'fieldset',
        { class: 'checks' },
        h('legend', {}, 'Events to send'),
        checkboxField('Notify received messages', notify.notifyReceived),
        checkboxField('Notify sent messages', notify.notifySent),
        checkboxField('Notify delivery receipts', notify.notifyDelivery),
        checkboxField('Notify read receipts', notify.notifyRead),
      ),
      h(
        'div',
        { class: 'field-row' },
        field('Max retries', maxRetries, { hint: '0 to 20' }),
        field('Retry interval (ms)', retryInterval, { hint: '1000 to 86400000' }),
      ),
      field('Webhook secret', secret, { hint: 'Optional. Signs each webhook (X-Webhook-Signature, HMAC-SHA256).' }),
      field('Custom headers (JSON)', headers, { hint: 'Optional. A JSON object of extra HTTP headers.' }),
    ),
    h('div', { class: 'actions' }, submit, ...extraActions),
  );

  function parseHeaders() {
    const text = headers.value.trim();
    if (!text) return {};
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed;
    } catch {
      // fall through
    }
    showFieldError(headers, 'Enter a JSON object, e.g. {"X-Token": "abc"}.');
    return undefined;
  }

  function read() {
    const headerValues = parseHeaders();
    if (headerValues === undefined) {
      headers.focus();
      return null;
    }
    const webhookOptions = {
      notifyReceived: notify.notifyReceived.checked,
      notifySent: notify.notifySent.checked,
      notifyDelivery: notify.notifyDelivery.checked,
      notifyRead: notify.notifyRead.checked,
      maxRetries: Number(maxRetries.value),
      retryInterval: Number(retryInterval.value),
    };
    if (mode === 'create') {
      const body = {
        name: name.value.trim(),
        description: description.value.trim() || null,
        webhookUrl: webhookUrl.value.trim() || null,
        webhookEnabled: webhookEnabled.checked,
        ...webhookOptions,
      };
      if (secret.value) body.webhookSecret = secret.value;
      if (Object.keys(headerValues).length) body.headers = headerValues;
      return body;
    }
    const settings = { ...webhookOptions };
    if (touched.has('webhookSecret')) settings.secret = secret.value || null;
    if (touched.has('headers')) settings.headers = headerValues;
    return {
      name: name.value.trim(),
      description: description.value.trim() || null,
      webhookUrl: webhookUrl.value.trim() || null,
      webhookEnabled: webhookEnabled.checked,
      webhookSettings: settings,
    };
  }

  return { form, submit, read, focusFirst: () => name.focus() };
}
