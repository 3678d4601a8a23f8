/**
 * Dashboard entry point: loads the public config, restores the session (JWT in sessionStorage),
 * starts the live stream, and mounts one view per hash route into <main>.
 *
 * Routes: #/login, #/instances, #/instances/<id>[/<tab>], #/account, #/admin.
 * A view is a function `(main, ctx) → {update(params)}?` that builds its page into `main` and
 * registers everything it starts on `ctx.scope`, which is disposed when the route changes.
 */

import { api } from './js/api.js';
import { setUnauthorizedHandler } from './js/http.js';
import {
  describeStatus,
  forget,
  nameOf,
  clearInstances,
  rememberName,
  rememberStatus,
  statusFromEvent,
} from './js/instances-state.js';
import { navigate, startRouter } from './js/router.js';
import { Scope } from './js/scope.js';
import * as session from './js/session.js';
import * as stream from './js/stream.js';
import { announce, h } from './js/ui.js';
import { accountView } from './js/views/account.js';
import { adminView } from './js/views/admin.js';
import { instanceView } from './js/views/instance.js';
import { instancesView } from './js/views/instances.js';
import { loginView } from './js/views/login.js';
import { notFoundView } from './js/views/not-found.js';

const APP_NAME = 'WhatsApp API dashboard';
const main = document.getElementById('main');
const topbar = document.getElementById('topbar');

/** The mounted view: {key, scope, handle}. */
let current = null;
/** Where to go after logging in (the page that asked for a login). */
let pendingPath = null;
/** A one-time message for the login page: {text, kind: 'error'|'info'}. */
let flash = null;
/** Subscriptions that live as long as the session (announcer). */
let sessionScope = null;
let firstRender = true;

// --- session ------------------------------------------------------------------------------

function showSessionChrome() {
  const user = session.getUser() || {};
  topbar.hidden = false;
  document.getElementById('user-email').textContent = user.email || '';
  document.getElementById('nav-admin').hidden = !session.isAdmin();
}

/** Everything that runs while logged in: the live stream and the status announcer. */
function startSessionServices() {
  showSessionChrome();
  if (sessionScope) sessionScope.dispose();
  sessionScope = new Scope();
  sessionScope.subscribe('*', (event) => {
    const id = event.instanceId;
    if (!id) return;
    if (event.type === 'instance.created' || event.type === 'instance.updated') {
      rememberName(id, event.data && event.data.name);
    }
    if (event.type === 'instance.deleted') {
      forget(id);
      return;
    }
    const status = statusFromEvent(event);
    if (status && rememberStatus(id, status)) announce(`Instance ${nameOf(id)} is now ${describeStatus(status)}`);
  });
  stream.start({ getToken: session.getToken, onUnauthorized: () => expireSession() });
}

function endSession(message) {
  stream.stop();
  if (sessionScope) sessionScope.dispose();
  sessionScope = null;
  session.endSession();
  clearInstances();
  topbar.hidden = true;
  flash = message;
}

/** A request answered 401: back to the login page with "Session expired". */
function expireSession() {
  if (!session.isLoggedIn()) return; // several requests failing together: once is enough
  const here = window.location.hash.replace(/^#/, '');
  if (here && !here.startsWith('/login')) pendingPath = here;
  endSession({ text: 'Session expired. Please log in again.', kind: 'error' });
  navigate('/login', { replace: true });
}

/** Called by the login view with the answer of POST /api/auth/login. */
async function onLogin({ token, user }) {
  session.startSession(token, user);
  try {
    session.setUser(await api.me()); // adds the role
  } catch (err) {
    if (!session.isLoggedIn()) return; // 401: already back on the login page
    console.warn('could not read /api/auth/me', err);
  }
  startSessionServices();
  const target = pendingPath || '/instances';
  pendingPath = null;
  navigate(target);
}

// --- routing ------------------------------------------------------------------------------

function resolve(route) {
  const [first, second, third] = route.segments;
  switch (first) {
    case undefined:
      return { redirect: session.isLoggedIn() ? '/instances' : '/login' };
    case 'login':
      return { key: 'login', view: loginView, public: true };
    case 'instances':
      if (!second) return { key: 'instances', view: instancesView };
      return {
        key: `instance:${second}`,
        view: instanceView,
        params: { id: second, tab: third || null, query: route.query },
      };
    case 'account':
      return { key: 'account', view: accountView };
    case 'admin':
      return { key: 'admin', view: adminView };
    default:
      return { key: `notfound:${route.path}`, view: notFoundView };
  }
}

function highlightNav(route) {
  const section = route.segments[0];
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

function setTitle(text) {
  document.title = text ? `${text} · ${APP_NAME}` : APP_NAME;
}

function render(route) {
  const match = resolve(route);
  if (match.redirect) {
    navigate(match.redirect, { replace: true });
    return;
  }
  if (!match.public && !session.isLoggedIn()) {
    pendingPath = `${route.path}${route.query.toString() ? `?${route.query}` : ''}`;
    navigate('/login', { replace: true });
    return;
  }
  if (match.key === 'login' && session.isLoggedIn()) {
    navigate('/instances', { replace: true });
    return;
  }
  highlightNav(route);

  // Same page, other details (e.g. another tab of the same instance): let the view update.
  if (current && current.key === match.key && current.handle && current.handle.update) {
    current.handle.update(match.params || {});
    return;
  }

  if (current) current.scope.dispose();
  const scope = new Scope();
  main.replaceChildren();
  const message = flash;
  flash = null;
  const ctx = {
    params: match.params || {},
    scope,
    navigate,
    setTitle,
    announce,
    onLogin,
    flash: message,
    user: session.getUser() || {},
    config: session.getConfig(),
  };
  let handle = null;
  try {
    handle = match.view(main, ctx) || null;
  } catch (err) {
    console.error('view failed', err);
    main.replaceChildren(h('h1', {}, 'Something went wrong'), h('p', { role: 'alert' }, String(err.message || err)));
  }
  current = { key: match.key, scope, handle };

  // Move focus to the new page's heading so keyboard and screen-reader users start there.
  if (!firstRender) {
    const heading = main.querySelector('h1');
    if (heading) heading.focus({ preventScroll: false });
  }
  firstRender = false;
}

// --- boot -------------------------------------------------------------------------------------

function wireChrome() {
  document.getElementById('logout-button').addEventListener('click', () => {
    endSession({ text: 'You have logged out.', kind: 'info' });
    navigate('/login');
  });
  // The skip link must not change the hash (that is the router's).
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  const indicator = document.getElementById('stream-state');
  const labels = {
    connecting: 'Connecting live updates…',
    live: 'Live updates on',
    reconnecting: 'Live updates reconnecting…',
    stopped: 'Live updates off',
  };
  stream.onStatus((state) => {
    indicator.dataset.state = state;
    indicator.textContent = labels[state] || state;
  });
}

async function boot() {
  wireChrome();
  setUnauthorizedHandler(() => expireSession());
  try {
    session.setConfig(await api.config());
  } catch (err) {
    console.warn('dashboard config unavailable; simulator controls hidden', err);
  }
  const { version } = session.getConfig();
  document.getElementById('version').textContent = version ? `v${version}` : '';

  if (session.isLoggedIn()) {
    try {
      session.setUser(await api.me());
    } catch (err) {
      console.warn('could not read /api/auth/me', err);
    }
    if (session.isLoggedIn()) startSessionServices();
  }
  startRouter(render);
}

boot();
