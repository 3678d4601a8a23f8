/**
 * The logged-in session: the JWT (sessionStorage only: it lives as long as the browser tab and is
 * never put in a URL or in localStorage), the current user and the public dashboard config.
 */

const TOKEN_KEY = 'wa-dashboard.token';
const API_KEY_KEY = 'wa-dashboard.apiKey';

/** The current user ({id, email, firstName, lastName, role}) once known. */
let currentUser = null;
/** The public `/dashboard/config.json` ({simulator, version}). */
let dashboardConfig = { simulator: false, version: '' };

function storage() {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the session then lasts until the page reloads
  }
}

const memory = new Map();

function read(key) {
  const store = storage();
  return store ? store.getItem(key) : memory.get(key) ?? null;
}

function write(key, value) {
  const store = storage();
  if (value === null || value === undefined) {
    if (store) store.removeItem(key);
    memory.delete(key);
  } else if (store) {
    store.setItem(key, value);
  } else {
    memory.set(key, value);
  }
}

export function getToken() {
  return read(TOKEN_KEY);
}

export function isLoggedIn() {
  return Boolean(getToken());
}

/** Start a session from the login answer `{token, user}`. */
export function startSession(token, user) {
  write(TOKEN_KEY, token);
  // The API key is only ever returned by login and rotation; keep it for the Account page for as
  // long as the token lives (same storage, same lifetime, cleared at logout).
  write(API_KEY_KEY, user && user.apiKey ? user.apiKey : null);
  currentUser = user || null;
}

/** Forget everything (logout, expired session). */
export function endSession() {
  write(TOKEN_KEY, null);
  write(API_KEY_KEY, null);
  currentUser = null;
}

export function getUser() {
  return currentUser;
}

export function setUser(user) {
  // /api/auth/me has no apiKey: keep what the login answer gave.
  currentUser = { ...(currentUser || {}), ...user };
}

export function isAdmin() {
  return Boolean(currentUser && currentUser.role === 'admin');
}

export function getApiKey() {
  return read(API_KEY_KEY);
}

export function setApiKey(key) {
  write(API_KEY_KEY, key);
}

export function getConfig() {
  return dashboardConfig;
}

export function setConfig(config) {
  dashboardConfig = { simulator: Boolean(config && config.simulator), version: (config && config.version) || '' };
}
