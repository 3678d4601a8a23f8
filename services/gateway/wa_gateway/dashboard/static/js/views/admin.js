/**
 * #/admin (administrators): users (GET/POST /api/users, per user "Rotate key" and "Limits"
 * editing GET/PUT /api/users/<id>/limits), system statistics (GET /api/stats/system) and the
 * cluster's workers and shards (GET /api/admin/workers, re-read every 15 s while shown).
 */

import { api } from '../api.js';
import * as session from '../session.js';
import {
  alertBox,
  button,
  card,
  clearBox,
  dataTable,
  definitionList,
  field,
  formatNumber,
  h,
  loading,
  noticeBox,
  notify,
  onAction,
  openDialog,
  pageHeading,
  replace,
  showError,
  showLoadError,
  statusBadge,
  timeEl,
  validateForm,
  withBusy,
} from '../ui.js';
import { usagePairs } from './tabs/stats.js';

const USERS_PAGE = 100;
const WORKERS_REFRESH_MS = 15000;

export function adminView(main, ctx) {
  const { scope } = ctx;
  ctx.setTitle('Administration');
  if (!session.isAdmin()) {
    main.append(pageHeading('Administration'), h('p', { role: 'alert', class: 'alert' }, 'This page is for administrators only.'));
    return;
  }
  main.append(pageHeading('Administration'), usersSection(scope), systemSection(scope), workersSection(scope));
}

// --- users ----------------------------------------------------------------------------------

function usersSection(scope) {
  const alert = alertBox();
  const notice = noticeBox();
  const area = h('div', {}, loading('Loading users…'));
  const more = button('Load more users', { hidden: true });
  let users = [];

  async function load({ append = false } = {}) {
    try {
      const page = await api.users({ limit: USERS_PAGE, skip: append ? users.length : 0 }, { signal: scope.signal });
      users = append ? [...users, ...(page.users || [])] : page.users || [];
      more.hidden = !(page.pagination && page.pagination.hasMore);
      render();
    } catch (err) {
      showLoadError(alert, area, err);
    }
  }

  function render() {
    replace(
      area,
      dataTable({
        caption: 'Users',
        captionHidden: true,
        rows: users,
        empty: 'No users.',
        columns: [
          { label: 'Email', render: (u) => h('span', { id: `user-${u.id}` }, u.email) },
          { label: 'Name', render: (u) => `${u.firstName || ''} ${u.lastName || ''}`.trim() || '—' },
          { label: 'Role', render: (u) => u.role },
          { label: 'Active', render: (u) => (u.active === false ? 'no' : 'yes') },
          { label: 'Created', render: (u) => timeEl(u.createdAt) },
          {
            label: 'Actions',
            render: (u) => h('div', { class: 'actions actions--tight' }, rotateButton(u), limitsButton(u, scope)),
          },
        ],
      }),
    );
  }

  function rotateButton(user) {
    const btn = button('Rotate key', { 'aria-describedby': `user-${user.id}` });
    return onAction(btn, alert, {
      confirm: {
        title: `Rotate the API key of ${user.email}?`,
        message: 'The current key stops working immediately.',
        confirmText: 'Rotate',
        danger: true,
      },
      run: () => api.rotateUserApiKey(user.id, { signal: scope.signal }),
      done: ({ apiKey }) => notify(notice, h('p', {}, `New API key for ${user.email}: `, h('code', { class: 'api-key' }, apiKey))),
    });
  }

  // Create user
  const createAlert = alertBox();
  const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off', spellcheck: false });
  const password = h('input', { type: 'password', name: 'password', required: true, minLength: 8, autocomplete: 'new-password' });
  const firstName = h('input', { type: 'text', name: 'firstName', required: true, maxLength: 100, autocomplete: 'off' });
  const lastName = h('input', { type: 'text', name: 'lastName', required: true, maxLength: 100, autocomplete: 'off' });
  const role = h('select', { name: 'role' }, h('option', { value: 'user' }, 'user'), h('option', { value: 'admin' }, 'admin'));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create user');
  const form = h(
    'form',
    { class: 'stack', noValidate: true, id: 'create-user-form', hidden: true, 'aria-labelledby': 'create-user-title' },
    h('h3', { id: 'create-user-title' }, 'New user'),
    createAlert,
    h('div', { class: 'field-row' }, field('Email', email), field('Password', password, { hint: 'At least 8 characters.' })),
    h('div', { class: 'field-row' }, field('First name', firstName), field('Last name', lastName)),
    field('Role', role),
    h('div', { class: 'actions' }, submit),
  );
  const toggle = button('New user', { 'aria-expanded': 'false', 'aria-controls': 'create-user-form' });
  toggle.addEventListener('click', () => {
    form.hidden = !form.hidden;
    toggle.setAttribute('aria-expanded', String(!form.hidden));
    if (!form.hidden) email.focus();
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(createAlert);
    if (!validateForm(form, createAlert)) return;
    const body = {
      email: email.value.trim(),
      password: password.value,
      firstName: firstName.value.trim(),
      lastName: lastName.value.trim(),
      role: role.value,
    };
    try {
      const created = await withBusy(submit, () => api.createUser(body, { signal: scope.signal }));
      form.reset();
      form.hidden = true;
      toggle.setAttribute('aria-expanded', 'false');
      toggle.focus();
      notify(
        notice,
        h('p', {}, `User ${created.email} created.`, created.apiKey ? [' API key: ', h('code', { class: 'api-key' }, created.apiKey)] : ''),
      );
      await load();
    } catch (err) {
      showError(createAlert, err, { form });
    }
  });
  more.addEventListener('click', () => withBusy(more, () => load({ append: true })));

  load();
  return card({ id: 'users-title', title: 'Users', tools: toggle }, form, alert, notice, area, more);
}

/** "Limits" for one user: a dialog with the three limits (empty = unlimited) and current blocks. */
function limitsButton(user, scope) {
  const btn = button('Limits', { 'aria-describedby': `user-${user.id}` });
  btn.addEventListener('click', async () => {
    let current;
    try {
      current = await withBusy(btn, () => api.getLimits(user.id, { signal: scope.signal }));
    } catch (err) {
      const alert = alertBox();
      showError(alert, err);
      openDialog({ title: `Limits of ${user.email}`, content: alert });
      return;
    }
    const limits = current.limits || {};
    const alert = alertBox();
    const notice = noticeBox();
    const input = (name) =>
      h('input', { type: 'number', name, min: 0, step: 1, inputMode: 'numeric', value: limits[name] ?? '', placeholder: 'unlimited' });
    const maxMessagesSent = input('maxMessagesSent');
    const maxApiCalls = input('maxApiCalls');
    const maxInstances = input('maxInstances');
    const save = h('button', { type: 'submit', class: 'primary' }, 'Save limits');
    const form = h(
      'form',
      { class: 'stack', noValidate: true },
      alert,
      notice,
      field('Messages per day', maxMessagesSent, { hint: 'Empty = unlimited. UTC days.' }),
      field('API calls per day', maxApiCalls, { hint: 'Empty = unlimited.' }),
      field('Instances', maxInstances, { hint: 'Empty = unlimited.' }),
      h('div', { class: 'actions' }, save),
    );
    const blocks = (current.state || []).length
      ? h(
          'section',
          {},
          h('h3', {}, 'Limits reached now'),
          h(
            'ul',
            {},
            current.state.map((b) => h('li', {}, `${b.limit}: ${b.usage} of ${b.max}`, b.resetsAt ? [' (until ', timeEl(b.resetsAt), ')'] : '')),
          ),
        )
      : null;
    const value = (el) => (el.value.trim() === '' ? null : Number(el.value));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearBox(alert);
      clearBox(notice);
      if (!validateForm(form, alert)) return;
      const body = { maxMessagesSent: value(maxMessagesSent), maxApiCalls: value(maxApiCalls), maxInstances: value(maxInstances) };
      try {
        await withBusy(save, () => api.setLimits(user.id, body, { signal: scope.signal }));
        notify(notice, 'Limits saved.');
      } catch (err) {
        showError(alert, err, { form });
      }
    });
    openDialog({ title: `Limits of ${user.email}`, content: h('div', {}, form, blocks) });
    maxMessagesSent.focus();
  });
  return btn;
}

// --- system statistics -----------------------------------------------------------------------

function systemSection(scope) {
  const alert = alertBox();
  const area = h('div', {}, loading('Loading system statistics…'));
  const refresh = button('Refresh');
  async function load() {
    try {
      const stats = await api.systemStats({ signal: scope.signal });
      const usage = stats.usage || {};
      replace(
        area,
        definitionList(
          [
            ['Instances', `${formatNumber(stats.instances && stats.instances.total)} (${formatNumber(stats.instances && stats.instances.active)} active)`],
            ['Users', `${formatNumber(stats.users && stats.users.total)} (${formatNumber(stats.users && stats.users.active)} active)`],
            ...usagePairs(usage),
          ],
          'facts stats-grid',
        ),
      );
    } catch (err) {
      showLoadError(alert, area, err);
    }
  }
  refresh.addEventListener('click', () => withBusy(refresh, load));
  load();
  return card({ id: 'system-title', title: 'System statistics', tools: refresh }, alert, area);
}

// --- workers and shards ----------------------------------------------------------------------

function workersSection(scope) {
  const alert = alertBox();
  const area = h('div', {}, loading('Loading workers…'));
  const refresh = button('Refresh workers');
  async function load() {
    try {
      const cluster = await api.workers({ signal: scope.signal });
      clearBox(alert);
      const workers = cluster.workers || [];
      const unowned = cluster.unownedShards || [];
      replace(
        area,
        definitionList([
          ['Shards', formatNumber(cluster.shardCount)],
          ['Workers alive', `${workers.filter((w) => w.alive).length} of ${workers.length}`],
          ['Unowned shards', unowned.length ? unowned.join(', ') : 'none'],
        ]),
        dataTable({
          caption: 'Workers',
          captionHidden: true,
          rows: workers,
          empty: 'No worker has registered.',
          columns: [
            { label: 'Worker', render: (w) => h('code', { class: 'id', title: w.id }, w.id) },
            { label: 'Address', render: (w) => (w.host ? `${w.host}:${w.port}` : '—') },
            { label: 'Alive', render: (w) => statusBadge(w.alive ? 'alive' : 'down') },
            { label: 'Shards', render: (w) => ((w.shards || []).length ? `${w.shards.length}: ${w.shards.join(', ')}` : 'none') },
            { label: 'Sessions', render: (w) => (Array.isArray(w.sessions) ? formatNumber(w.sessions.length) : formatNumber(w.sessions)) },
            { label: 'Last heartbeat', render: (w) => timeEl(w.heartbeatAt) },
          ],
        }),
      );
    } catch (err) {
      showLoadError(alert, area, err);
    }
  }
  refresh.addEventListener('click', () => withBusy(refresh, load));
  scope.interval(load, WORKERS_REFRESH_MS);
  load();
  return card({ id: 'workers-title', title: 'Workers and shards', tools: refresh }, alert, area);
}
