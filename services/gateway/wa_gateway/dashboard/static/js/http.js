/**
 * HTTP transport to the gateway: adds `Authorization: Bearer <token>`, turns every failure into an
 * `ApiError` carrying the body's `error` text and per-field `details`, and reports 401 answers to
 * the app (which ends the session: "Session expired").
 */

import { getToken } from './session.js';

export class ApiError extends Error {
  /**
   * @param {string} message  human-readable text (the body's `error`)
   * @param {{status?: number, details?: Array<{field: string, message: string}>, body?: any}} info
   */
  constructor(message, { status = 0, details = [], body = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.details = details;
    this.body = body;
  }
}

let unauthorizedHandler = () => {};

/** Called with the ApiError when an authenticated request answers 401. */
export function setUnauthorizedHandler(handler) {
  unauthorizedHandler = handler;
}

/** `path` with the query parameters that have a value. */
export function buildUrl(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === '') continue;
    params.set(key, String(value));
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

/** The parsed body of `response`: JSON, text, or null when empty. */
export async function readBody(response) {
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  if (type.includes('json')) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  const text = await response.text();
  return text || null;
}

function errorText(body, response) {
  if (body && typeof body === 'object') {
    if (typeof body.error === 'string' && body.error) return body.error;
    if (typeof body.message === 'string' && body.message) return body.message;
  }
  if (typeof body === 'string' && body.length < 300) return body;
  return `Request failed: ${response.status} ${response.statusText || ''}`.trim();
}

/**
 * Send a request; resolves with the Response when it is 2xx, otherwise rejects with ApiError.
 * Options: `query` (object), `json` (body), `form` (FormData), `headers`, `signal`,
 * `auth` (default true: send the token), `accept` (default application/json).
 * Aborts (navigation away) reject with the DOMException `AbortError`, which views ignore.
 */
export async function send(method, path, options = {}) {
  const { query, json, form, headers = {}, signal, auth = true, accept = 'application/json' } = options;
  const requestHeaders = new Headers(headers);
  requestHeaders.set('Accept', accept);
  const token = auth ? getToken() : null;
  if (token) requestHeaders.set('Authorization', `Bearer ${token}`);
  let body;
  if (json !== undefined) {
    requestHeaders.set('Content-Type', 'application/json');
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets multipart/form-data with its boundary
  }

  let response;
  try {
    response = await fetch(buildUrl(path, query), {
      method,
      headers: requestHeaders,
      body,
      signal,
      cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError('Network error: the server could not be reached. Check the connection and try again.');
  }
  if (response.ok) return response;

  const payload = await readBody(response);
  const error = new ApiError(errorText(payload, response), {
    status: response.status,
    details: payload && Array.isArray(payload.details) ? payload.details : [],
    body: payload,
  });
  if (response.status === 401 && token) unauthorizedHandler(error);
  throw error;
}

/** Like `send`, resolving with the parsed body. */
export async function request(method, path, options) {
  const response = await send(method, path, options);
  return readBody(response);
}

/** A fresh Idempotency-Key for one send (a retried click of the same send is not deduplicated). */
export function idempotencyKey() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  return `dash-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
