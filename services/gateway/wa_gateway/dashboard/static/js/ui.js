/**
 * Shared UI pieces: form fields with labels, error display (role="alert" + per-field messages),
 * buttons that run an action, status badges, times, tables, cards, the confirmation dialog and the
 * polite live region.
 */

import { append, h, replace, uid } from './dom.js';

// --- messages -------------------------------------------------------------------------------

/** An (initially empty) error box: role="alert" so a new message is announced. */
export function alertBox() {
  return h('div', { role: 'alert', class: 'alert' });
}

/** An (initially empty) success/progress box: role="status" (polite). */
export function noticeBox() {
  return h('div', { role: 'status', class: 'notice' });
}

export function clearBox(box) {
  box.replaceChildren();
}

/** Show `children` in a notice box (role="status"). */
export function notify(box, ...children) {
  replace(box, ...children);
}

/** True for the AbortError of a request cancelled by navigation (nothing to show). */
export function isAbort(err) {
  return Boolean(err && err.name === 'AbortError');
}

/**
 * Show an API (or other) error: its text in `alertEl` (role="alert"), and each entry of the
 * body's `details` next to the form control whose `name` matches the detail's `field` (full dotted
 * path, its last segment, or an alias from `aliases`). Details that match no control are listed
 * in the alert.
 */
export function showError(alertEl, err, { form = null, aliases = {} } = {}) {
  if (isAbort(err)) return;
  if (form) clearFieldErrors(form);
  const message = (err && err.message) || 'Something went wrong.';
  const unmatched = [];
  for (const detail of (err && err.details) || []) {
    const control = form ? findControl(form, detail.field, aliases) : null;
    if (control) showFieldError(control, detail.message);
    else unmatched.push(`${detail.field}: ${detail.message}`);
  }
  replace(alertEl, h('p', {}, message), unmatched.length ? h('ul', {}, unmatched.map((t) => h('li', {}, t))) : null);
}

function findControl(form, field, aliases) {
  if (!field) return null;
  const last = field.split('.').pop();
  for (const name of [field, aliases[field], last, aliases[last]]) {
    if (!name) continue;
    const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (control) return control;
  }
  return null;
}

/** A load failed: the error in `alertEl`, and `area` emptied if it still shows "Loading…". */
export function showLoadError(alertEl, area, err) {
  showError(alertEl, err);
  if (area.querySelector('.loading')) area.replaceChildren();
}

/** Show `message` under `control` (aria-invalid, aria-describedby). */
export function showFieldError(control, message) {
  if (!control.id) control.id = uid('field');
  const id = `${control.id}-error`;
  let note = document.getElementById(id);
  if (!note) {
    note = h('p', { class: 'field-error', id });
    const wrapper = control.closest('.field') || control.parentElement;
    wrapper.append(note);
  }
  note.textContent = message;
  control.setAttribute('aria-invalid', 'true');
  const described = new Set((control.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean));
  described.add(id);
  control.setAttribute('aria-describedby', [...described].join(' '));
}

export function clearFieldErrors(form) {
  for (const note of form.querySelectorAll('.field-error')) {
    const control = form.querySelector(`[aria-describedby~="${CSS.escape(note.id)}"]`);
    if (control) {
      control.removeAttribute('aria-invalid');
      const rest = (control.getAttribute('aria-describedby') || '').split(/\s+/).filter((x) => x && x !== note.id);
      if (rest.length) control.setAttribute('aria-describedby', rest.join(' '));
      else control.removeAttribute('aria-describedby');
    }
    note.remove();
  }
}

/**
 * Browser constraint validation (required, type=email, min/max...) shown our way: the message
 * next to each invalid field, a summary in `alertEl`, focus on the first invalid field.
 * Returns true when the form is valid.
 */
export function validateForm(form, alertEl) {
  clearFieldErrors(form);
  const invalid = [...form.elements].filter((el) => el.willValidate && !el.checkValidity());
  if (invalid.length === 0) return true;
  for (const control of invalid) showFieldError(control, control.validationMessage);
  if (alertEl) replace(alertEl, h('p', {}, 'Please correct the highlighted fields.'));
  invalid[0].focus();
  return false;
}

// --- form fields ----------------------------------------------------------------------------

/** `<div class="field"><label>…</label>control<p hint></div>`; gives `control` an id if needed. */
export function field(labelText, control, { hint = null, className = '' } = {}) {
  if (!control.id) control.id = uid('field');
  let hintEl = null;
  if (hint) {
    hintEl = h('p', { class: 'hint', id: `${control.id}-hint` }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: `field ${className}`.trim() }, h('label', { for: control.id }, labelText), control, hintEl);
}

/** A checkbox with its label after it. */
export function checkboxField(labelText, control, { hint = null } = {}) {
  if (!control.id) control.id = uid('field');
  let hintEl = null;
  if (hint) {
    hintEl = h('p', { class: 'hint', id: `${control.id}-hint` }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field field--check' }, control, h('label', { for: control.id }, labelText), hintEl);
}

/** `<button type="button">`; `props.on` etc. as for h(). */
export function button(text, props = {}) {
  return h('button', { type: 'button', ...props }, text);
}

/**
 * Run `action` with `btn` disabled and aria-busy until it settles; returns its result.
 * Errors propagate to the caller.
 */
export async function withBusy(btn, action) {
  btn.disabled = true;
  btn.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    btn.disabled = false;
    btn.removeAttribute('aria-busy');
  }
}

/**
 * Wire `btn` to an action: on a click, ask first when `confirm` (confirmDialog options) is given,
 * then clear `alertEl`, `run()` with `btn` busy and hand its result to `done`; an error of either
 * is shown in `alertEl`. Returns `btn`.
 */
export function onAction(btn, alertEl, { confirm = null, run, done = () => {} }) {
  btn.addEventListener('click', async () => {
    if (confirm && !(await confirmDialog(confirm))) return;
    clearBox(alertEl);
    try {
      await done(await withBusy(btn, run));
    } catch (err) {
      showError(alertEl, err);
    }
  });
  return btn;
}

// --- status badges --------------------------------------------------------------------------

/** A badge whose text is the status word ("connected", "qr", "logged out"...). */
export function statusBadge(status) {
  const badge = h('span', { class: 'badge' });
  setBadge(badge, status);
  return badge;
}

/** Words for the status values the API uses (instances, webhook deliveries, workers). */
const STATUS_LABELS = {
  qr: 'Waiting for scan',
  connecting: 'Connecting',
  connected: 'Connected',
  disconnected: 'Disconnected',
  logged_out: 'Logged out',
  loading: 'Loading',
  unknown: 'Unknown',
  pending: 'Pending',
  delivered: 'Delivered',
  failed: 'Failed',
  cancelled: 'Cancelled',
  alive: 'Alive',
  down: 'Down',
};

/** "qr" → "Waiting for scan", "logged_out" → "Logged out"; an unknown value in words. */
export function statusLabel(status) {
  const value = String(status || 'unknown');
  if (Object.prototype.hasOwnProperty.call(STATUS_LABELS, value)) return STATUS_LABELS[value];
  const words = value.replace(/[_.-]+/g, ' ').trim();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : STATUS_LABELS.unknown;
}

/** The badge shows words; the raw value stays in data-status (styles) and the title. */
export function setBadge(badge, status) {
  const value = status || 'unknown';
  badge.dataset.status = value;
  badge.title = `status: ${value}`;
  badge.textContent = statusLabel(value);
}

// --- formatting -----------------------------------------------------------------------------

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const numberFormat = new Intl.NumberFormat();

/** A Date from an ISO string, unix seconds or milliseconds; null when absent/invalid. */
export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const date = typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Local date and time text. */
export function formatTime(value) {
  const date = toDate(value);
  return date ? dateTimeFormat.format(date) : '—';
}

/** `<time datetime="ISO">local time</time>`. */
export function timeEl(value) {
  const date = toDate(value);
  if (!date) return h('span', {}, '—');
  return h('time', { datetime: date.toISOString() }, dateTimeFormat.format(date));
}

export function formatNumber(value) {
  return typeof value === 'number' ? numberFormat.format(value) : '0';
}

export function formatBytes(value) {
  const bytes = Number(value) || 0;
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? size : size.toFixed(1)} ${units[unit]}`;
}

/** JSON on one line, cut at `max` characters. */
export function shortJson(value, max = 160) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  if (text === undefined) text = '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// --- tables ---------------------------------------------------------------------------------

/**
 * A table in its own scrolling container; below 40em it is shown stacked (each cell labelled by
 * its column through data-label).
 *   columns: [{label, render(row) → node|string, className?}]
 */
export function dataTable({ caption = null, columns, rows, empty = 'Nothing to show.', captionHidden = false }) {
  if (!rows || rows.length === 0) return h('p', { class: 'empty' }, empty);
  const table = h(
    'table',
    { class: 'data-table' },
    caption ? h('caption', { class: captionHidden ? 'visually-hidden' : '' }, caption) : null,
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.label)))),
    h(
      'tbody',
      {},
      rows.map((row) =>
        h(
          'tr',
          {},
          columns.map((c) => h('td', { 'data-label': c.label, class: c.className || '' }, c.render(row))),
        ),
      ),
    ),
  );
  return h('div', { class: 'table-wrap' }, table);
}

/** A definition list of [term, value] pairs. */
export function definitionList(pairs, className = 'facts') {
  return h(
    'dl',
    { class: className },
    pairs.map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value))),
  );
}

// --- dialogs --------------------------------------------------------------------------------

/**
 * A modal confirmation (<dialog>): resolves true when `confirmText` is chosen, false on
 * "Cancel" or Escape. Focus starts on Cancel and returns to the previously focused element.
 */
export function confirmDialog({ title, message, confirmText = 'OK', cancelText = 'Cancel', danger = false }) {
  return new Promise((resolve) => {
    const previous = document.activeElement;
    const titleId = uid('dialog-title');
    const messageId = uid('dialog-message');
    const cancel = h('button', { type: 'submit', value: 'cancel', autofocus: true }, cancelText);
    const confirm = h('button', { type: 'submit', value: 'confirm', class: danger ? 'danger' : 'primary' }, confirmText);
    const dialog = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': titleId, 'aria-describedby': messageId },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { id: titleId }, title),
        h('p', { id: messageId }, message),
        h('div', { class: 'actions' }, confirm, cancel),
      ),
    );
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'confirm';
      dialog.remove();
      if (previous && typeof previous.focus === 'function' && previous.isConnected) previous.focus();
      resolve(ok);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/**
 * A modal dialog holding `content` (e.g. a form); returns {dialog, close}. The dialog is removed
 * when closed; `onClose` runs then.
 */
export function openDialog({ title, content, onClose = () => {} }) {
  const previous = document.activeElement;
  const titleId = uid('dialog-title');
  const closeButton = button('Close', { class: 'dialog-close' });
  const dialog = h(
    'dialog',
    { class: 'dialog dialog--wide', 'aria-labelledby': titleId },
    h('div', { class: 'dialog-head' }, h('h2', { id: titleId }, title), closeButton),
    content,
  );
  const close = () => dialog.close();
  closeButton.addEventListener('click', close);
  dialog.addEventListener('close', () => {
    dialog.remove();
    onClose();
    if (previous && typeof previous.focus === 'function' && previous.isConnected) previous.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

// --- live region & clipboard ----------------------------------------------------------------

/** Say `text` politely to screen readers (the page's aria-live="polite" region). */
export function announce(text) {
  const region = document.getElementById('live-region');
  if (!region) return;
  // Clear first so the same sentence twice in a row is announced twice.
  region.textContent = '';
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  // Fallback for plain-http origins other than localhost.
  const area = h('textarea', { readOnly: true, class: 'visually-hidden' }, text);
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('Copying is not available in this browser: select the text and copy it.');
}

/** A page heading that scripts can focus after navigation. */
export function pageHeading(text) {
  return h('h1', { tabIndex: -1, class: 'page-title' }, text);
}

/** A `<section class="card">` labelled by its h2 `title` (id `id`), with `tools` beside the title. */
export function card({ id, title, tools = null }, ...children) {
  const heading = h('h2', { id }, title);
  return h(
    'section',
    { class: 'card', 'aria-labelledby': id },
    tools ? h('div', { class: 'section-head' }, heading, tools) : heading,
    children,
  );
}

/** A "Loading…" placeholder. */
export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

export { append, h, replace };
