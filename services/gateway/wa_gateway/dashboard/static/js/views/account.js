/**
 * #/account: the user's details, API key (masked, "Show"/"Copy", "Rotate API key"), password
 * change (POST /api/auth/password {currentPassword, newPassword}) and usage statistics
 * (GET /api/stats/user?period=today|week|month|year|all).
 *
 * The API key is only returned by login and by rotation (GET /api/auth/me does not include it),
 * so after a page reload in a new tab it may be unknown until rotated.
 */

import { api } from '../api.js';
import * as session from '../session.js';
import {
  alertBox,
  button,
  card,
  clearBox,
  copyText,
  dataTable,
  definitionList,
  field,
  formatBytes,
  formatNumber,
  h,
  loading,
  noticeBox,
  notify,
  onAction,
  pageHeading,
  replace,
  showError,
  showFieldError,
  showLoadError,
  validateForm,
  withBusy,
} from '../ui.js';
import { PERIOD_LABELS, usagePairs } from './tabs/stats.js';

/** "••••••••abcd": a fixed width (not the key's length), then its last 4 characters. */
function mask(key) {
  if (!key) return '';
  return `${'•'.repeat(8)}${key.slice(-4)}`;
}

export function accountView(main, ctx) {
  const { scope } = ctx;
  ctx.setTitle('My account');
  const user = session.getUser() || {};

  // --- profile -------------------------------------------------------------------------------
  const profile = card(
    { id: 'profile-title', title: 'Profile' },
    definitionList([
      ['Name', `${user.firstName || ''} ${user.lastName || ''}`.trim() || '—'],
      ['Email', user.email || '—'],
      ['Role', user.role || '—'],
    ]),
  );

  // --- API key -------------------------------------------------------------------------------
  const keyAlert = alertBox();
  const keyNotice = noticeBox();
  const keyValue = h('code', { class: 'api-key', id: 'api-key-value' });
  const show = button('Show', { 'aria-pressed': 'false', 'aria-controls': 'api-key-value' });
  const copy = button('Copy');
  const rotate = button('Rotate API key', { class: 'danger' });
  let revealed = false;

  function renderKey() {
    const key = session.getApiKey();
    keyValue.classList.toggle('is-missing', !key);
    if (!key) {
      keyValue.textContent = 'Not available in this browser session: rotate the key to get a new one.';
      show.hidden = true;
      copy.hidden = true;
      return;
    }
    show.hidden = false;
    copy.hidden = false;
    keyValue.textContent = revealed ? key : mask(key);
    keyValue.setAttribute('aria-label', revealed ? `API key ${key}` : 'API key (hidden)');
    show.textContent = revealed ? 'Hide' : 'Show';
    show.setAttribute('aria-pressed', String(revealed));
  }
  show.addEventListener('click', () => {
    revealed = !revealed;
    renderKey();
  });
  copy.addEventListener('click', async () => {
    clearBox(keyAlert);
    try {
      await copyText(session.getApiKey() || '');
      notify(keyNotice, 'API key copied to the clipboard.');
    } catch (err) {
      showError(keyAlert, err);
    }
  });
  onAction(rotate, keyAlert, {
    confirm: {
      title: 'Rotate your API key?',
      message: 'A new key is created and the current one stops working immediately. Programs using it must be updated.',
      confirmText: 'Rotate',
      danger: true,
    },
    run: () => api.rotateOwnApiKey({ signal: scope.signal }),
    done: ({ apiKey }) => {
      session.setApiKey(apiKey);
      revealed = false;
      renderKey();
      notify(keyNotice, 'New API key created. The old key no longer works.');
    },
  });
  renderKey();
  const keySection = card(
    { id: 'key-title', title: 'API key' },
    h('p', { class: 'muted' }, 'Send it as the x-api-key header. Keep it secret.'),
    keyAlert,
    keyNotice,
    h('p', { class: 'key-line' }, keyValue),
    h('div', { class: 'actions' }, show, copy, rotate),
  );

  // --- password ------------------------------------------------------------------------------
  const pwAlert = alertBox();
  const pwNotice = noticeBox();
  const current = h('input', { type: 'password', name: 'currentPassword', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', name: 'newPassword', autocomplete: 'new-password', required: true, minLength: 8 });
  const confirmNext = h('input', { type: 'password', name: 'confirmPassword', autocomplete: 'new-password', required: true, minLength: 8 });
  const pwSubmit = h('button', { type: 'submit', class: 'primary' }, 'Change password');
  const pwForm = h(
    'form',
    { class: 'stack', noValidate: true },
    // For password managers: which account this password belongs to (not shown).
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: user.email || '', hidden: true, readOnly: true }),
    field('Current password', current),
    field('New password', next, { hint: 'At least 8 characters.' }),
    field('Confirm new password', confirmNext),
    h('div', { class: 'actions' }, pwSubmit),
  );
  pwForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(pwAlert);
    clearBox(pwNotice);
    if (!validateForm(pwForm, pwAlert)) return;
    if (next.value.length < 8) {
      showFieldError(next, 'Use at least 8 characters.');
      next.focus();
      return;
    }
    if (next.value !== confirmNext.value) {
      showFieldError(confirmNext, 'The two new passwords differ.');
      confirmNext.focus();
      return;
    }
    try {
      const newPassword = next.value;
      await withBusy(pwSubmit, async () => {
        await api.changePassword(current.value, newPassword, { signal: scope.signal });
        // A password change revokes every token issued before it, this session's too: log in
        // again with the new password so the page keeps working.
        const user = session.getUser() || {};
        const again = await api.login(user.email, newPassword, { signal: scope.signal });
        session.startSession(again.token, { ...user, ...again.user });
      });
      pwForm.reset();
      notify(pwNotice, 'Password changed. Sessions elsewhere have been signed out.');
    } catch (err) {
      showError(pwAlert, err, { form: pwForm });
    }
  });
  const pwSection = card({ id: 'password-title', title: 'Change password' }, pwAlert, pwNotice, pwForm);

  // --- statistics ----------------------------------------------------------------------------
  const statsAlert = alertBox();
  const statsArea = h('div', {}, loading('Loading statistics…'));
  // "today" is the gateway's extension of the reference's periods; it is the default here.
  const period = h('select', { name: 'period' }, ['today', 'week', 'month', 'year', 'all'].map((p) => h('option', { value: p }, PERIOD_LABELS[p])));
  async function loadStats() {
    try {
      const stats = await api.userStats(period.value, { signal: scope.signal });
      const total = stats.total || {};
      replace(
        statsArea,
        definitionList([['Instances', formatNumber(total.instanceCount)], ...usagePairs(total)], 'facts stats-grid'),
        dataTable({
          caption: 'Usage per instance',
          rows: stats.instances || [],
          empty: 'No usage in this period.',
          columns: [
            { label: 'Instance', render: (r) => r.name || r.instanceId },
            { label: 'Sent', render: (r) => formatNumber(r.messagesSent) },
            { label: 'Received', render: (r) => formatNumber(r.messagesReceived) },
            { label: 'Media', render: (r) => `${formatNumber(r.mediaSent)} / ${formatNumber(r.mediaReceived)} (${formatBytes(r.totalMediaSize)})` },
            { label: 'API calls', render: (r) => formatNumber(r.apiCalls) },
            { label: 'Webhooks', render: (r) => formatNumber(r.webhookSent) },
          ],
        }),
      );
    } catch (err) {
      showLoadError(statsAlert, statsArea, err);
    }
  }
  period.addEventListener('change', loadStats);
  const statsSection = card(
    { id: 'usage-title', title: 'My usage', tools: field('Period', period, { className: 'field--inline' }) },
    statsAlert,
    statsArea,
  );

  main.append(pageHeading('My account'), h('div', { class: 'grid' }, profile, keySection, pwSection), statsSection);
  loadStats();
}
