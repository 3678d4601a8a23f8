/**
 * #/instances/<id>[/<tab>]: one instance. Heading = its name, a live status badge, and tabs
 * (WAI-ARIA tabs pattern: role=tablist/tab/tabpanel, aria-selected, arrow keys/Home/End).
 * The selected tab is part of the URL; switching tabs only remounts the panel.
 *
 * Tabs receive `ctx.instance`, the shared model of this instance:
 *   {id, data (last GET detail), status, setStatus(s), onStatus(fn), onData(fn), reload(), refreshStatus()}
 */

import { api } from '../api.js';
import { linkedAccount, rememberInstances, rememberStatus, statusFromEvent, statusOf } from '../instances-state.js';
import { href } from '../router.js';
import { streamState } from '../stream.js';
import { alertBox, h, loading, pageHeading, replace, setBadge, showError, statusBadge } from '../ui.js';
import { chatsTab } from './tabs/chats.js';
import { contactsTab } from './tabs/contacts.js';
import { eventsTab } from './tabs/events.js';
import { linkTab } from './tabs/link.js';
import { sendTab } from './tabs/send.js';
import { settingsTab } from './tabs/settings.js';
import { statsTab } from './tabs/stats.js';
import { webhooksTab } from './tabs/webhooks.js';

const TABS = [
  { key: 'link', label: 'Link', mount: linkTab },
  { key: 'send', label: 'Send', mount: sendTab },
  { key: 'chats', label: 'Chats', mount: chatsTab },
  { key: 'contacts', label: 'Contacts', mount: contactsTab },
  { key: 'events', label: 'Events', mount: eventsTab },
  { key: 'webhooks', label: 'Webhooks', mount: webhooksTab },
  { key: 'stats', label: 'Stats', mount: statsTab },
  { key: 'settings', label: 'Settings', mount: settingsTab },
];

/** The shared, observable state of the instance shown (see module docstring). */
function createModel(id, scope) {
  const statusListeners = new Set();
  const dataListeners = new Set();
  const model = {
    id,
    data: null,
    status: 'unknown',
    setStatus(status) {
      if (!status || status === model.status) return;
      model.status = status;
      rememberStatus(id, status);
      for (const fn of [...statusListeners]) fn(status);
    },
    setData(data) {
      model.data = { ...(model.data || {}), ...data };
      for (const fn of [...dataListeners]) fn(model.data);
      if (data.connectionStatus || data.status) model.setStatus(statusOf(data));
    },
    /** Listen for status changes for the lifetime of `listenerScope`. */
    onStatus(fn, listenerScope) {
      statusListeners.add(fn);
      listenerScope.add(() => statusListeners.delete(fn));
    },
    onData(fn, listenerScope) {
      dataListeners.add(fn);
      listenerScope.add(() => dataListeners.delete(fn));
    },
    async reload() {
      const data = await api.getInstance(id, { signal: scope.signal });
      rememberInstances([data]);
      model.setData(data);
      return data;
    },
    async refreshStatus() {
      const body = await api.instanceStatus(id, { signal: scope.signal });
      // connectionDetails is the instance's connectionStatus (with the linked number, if any).
      if (body.connectionDetails) model.setData({ connectionStatus: body.connectionDetails });
      model.setStatus(body.status || (body.connectionDetails && body.connectionDetails.status));
      return body;
    },
  };
  return model;
}

export function instanceView(main, ctx) {
  const { scope } = ctx;
  const id = ctx.params.id;
  const model = createModel(id, scope);

  const heading = pageHeading('Instance');
  const badge = statusBadge('loading');
  const linkedLine = h('p', { class: 'linked-account', id: 'linked-account', hidden: true });
  const statusLine = h('p', { class: 'instance-status', id: 'instance-status' }, h('span', { class: 'label' }, 'Status: '), badge);
  const alert = alertBox();
  const tablist = h('div', { role: 'tablist', 'aria-label': 'Instance sections', class: 'tabs' });
  const panel = h('section', { role: 'tabpanel', id: 'instance-panel', tabIndex: 0, class: 'tab-panel' });
  const body = h('div', { class: 'instance-body' }, loading('Loading instance…'));

  const tabButtons = new Map();
  let currentTab = null;
  let tabScope = null;
  let currentQuery = '';

  ctx.setTitle('Instance');
  main.append(
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/instances' }, '← All instances')),
    h('div', { class: 'page-head' }, heading, statusLine),
    h('p', { class: 'muted instance-id' }, 'ID ', h('code', { class: 'id', title: id }, id)),
    linkedLine,
    alert,
    body,
  );

  /** "Linked to +79001234567 (John)" while connected, when the API says who. */
  function renderLinked() {
    const account = model.status === 'connected' ? linkedAccount(model.data) : '';
    linkedLine.hidden = !account;
    linkedLine.replaceChildren(...(account ? ['Linked to ', h('strong', {}, account)] : []));
  }

  model.onStatus((status) => {
    setBadge(badge, status);
    renderLinked();
  }, scope);
  model.onData((data) => {
    heading.textContent = data.name || 'Instance';
    ctx.setTitle(data.name || 'Instance');
    renderLinked();
  }, scope);

  // --- tabs --------------------------------------------------------------------------------
  function buildTabs() {
    for (const tab of TABS) {
      const tabButton = h(
        'button',
        {
          type: 'button',
          role: 'tab',
          id: `tab-${tab.key}`,
          'aria-controls': 'instance-panel',
          'aria-selected': 'false',
          tabIndex: -1,
          on: { click: () => goToTab(tab.key) },
        },
        tab.label,
      );
      tabButtons.set(tab.key, tabButton);
      tablist.append(tabButton);
    }
    tablist.addEventListener('keydown', onTabKey);
    replace(body, tablist, panel);
  }

  function goToTab(key) {
    ctx.navigate(`/instances/${encodeURIComponent(id)}/${key}`);
  }

  function onTabKey(event) {
    const keys = TABS.map((t) => t.key);
    const index = keys.indexOf(currentTab);
    let next = null;
    if (event.key === 'ArrowRight' || event.key === 'ArrowDown') next = keys[(index + 1) % keys.length];
    else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') next = keys[(index - 1 + keys.length) % keys.length];
    else if (event.key === 'Home') next = keys[0];
    else if (event.key === 'End') next = keys[keys.length - 1];
    if (!next) return;
    event.preventDefault();
    goToTab(next);
    tabButtons.get(next).focus();
  }

  function selectTab(key, query) {
    const tab = TABS.find((t) => t.key === key) || TABS[0];
    const queryText = query ? query.toString() : '';
    if (tab.key === currentTab && queryText === currentQuery) return;
    currentTab = tab.key;
    currentQuery = queryText;
    for (const [k, tabButton] of tabButtons) {
      const selected = k === tab.key;
      tabButton.setAttribute('aria-selected', String(selected));
      tabButton.tabIndex = selected ? 0 : -1;
    }
    panel.setAttribute('aria-labelledby', `tab-${tab.key}`);
    if (tabScope) tabScope.dispose();
    tabScope = scope.child();
    panel.replaceChildren();
    const tabCtx = { ...ctx, scope: tabScope, instance: model, params: { ...ctx.params, query: query || new URLSearchParams() } };
    try {
      tab.mount(panel, tabCtx);
    } catch (err) {
      console.error(`tab ${tab.key} failed`, err);
      panel.append(h('p', { role: 'alert', class: 'alert' }, String(err.message || err)));
    }
  }

  // --- live --------------------------------------------------------------------------------
  const refreshSoon = scope.debounce(() => model.refreshStatus().catch((err) => showError(alert, err)), 1500);
  scope.subscribe('*', (event) => {
    if (event.instanceId !== id) return;
    const status = statusFromEvent(event);
    if (status) model.setStatus(status);
    if (event.type === 'disconnected') refreshSoon(); // "disconnected" may be "logged_out"
    // The linked number and push name (connectionStatus) are known once connected.
    if (event.type === 'connected') model.reload().catch((err) => showError(alert, err));
    if (event.type === 'instance.updated') model.reload().catch((err) => showError(alert, err));
    if (event.type === 'instance.deleted') {
      ctx.announce(`Instance ${(model.data && model.data.name) || id} deleted.`);
      ctx.navigate('/instances');
    }
  });
  scope.subscribe('ready', () => model.reload().catch((err) => showError(alert, err)));
  // Without the stream, keep the badge roughly current.
  scope.interval(() => {
    if (streamState() !== 'live' && model.data) model.refreshStatus().catch(() => {});
  }, 10000);

  // --- first load --------------------------------------------------------------------------
  let pending = { tab: ctx.params.tab, query: ctx.params.query };
  model
    .reload()
    .then(() => {
      buildTabs();
      selectTab(pending.tab, pending.query);
      pending = null;
    })
    .catch((err) => {
      showError(alert, err);
      setBadge(badge, 'unknown');
      replace(
        body,
        h('p', {}, err && err.status === 404 ? 'This instance does not exist or is not yours. ' : '', h('a', { href: href('instances') }, 'Back to the instances')),
      );
    });

  return {
    /** Same instance, another tab (or tab query): switch without reloading the page. */
    update(params) {
      if (pending) pending = { tab: params.tab, query: params.query };
      else selectTab(params.tab, params.query);
    },
  };
}
