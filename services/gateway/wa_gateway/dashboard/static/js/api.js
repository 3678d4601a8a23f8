/**
 * The gateway's REST API, one function per endpoint used by the dashboard. Field names are the
 * API's (camelCase). Every function takes a last `options` argument ({signal}) passed to http.js.
 */

import { idempotencyKey, request, send } from './http.js';

const enc = encodeURIComponent;
const instancePath = (id) => `/api/instances/${enc(id)}`;

export const api = {
  // --- public -------------------------------------------------------------------------------
  config: (o) => request('GET', '/dashboard/config.json', { ...o, auth: false }),

  // --- authentication -----------------------------------------------------------------------
  /** {token, user{id,email,firstName,lastName,apiKey}} */
  login: (email, password, o) =>
    request('POST', '/api/auth/login', { ...o, auth: false, json: { email, password } }),
  /** {id, email, firstName, lastName, role} */
  me: (o) => request('GET', '/api/auth/me', o),
  /** {apiKey} */
  rotateOwnApiKey: (o) => request('POST', '/api/auth/api-key/rotate', o),
  /** 204 */
  changePassword: (currentPassword, newPassword, o) =>
    request('POST', '/api/auth/password', { ...o, json: { currentPassword, newPassword } }),

  // --- instances ----------------------------------------------------------------------------
  listInstances: (o) => request('GET', '/api/instances', o),
  createInstance: (body, o) => request('POST', '/api/instances', { ...o, json: body }),
  getInstance: (id, o) => request('GET', instancePath(id), o),
  updateInstance: (id, body, o) => request('PUT', instancePath(id), { ...o, json: body }),
  deleteInstance: (id, o) => request('DELETE', instancePath(id), o),
  instanceStatus: (id, o) => request('GET', `${instancePath(id)}/status`, o),
  reconnect: (id, o) => request('POST', `${instancePath(id)}/reconnect`, o),
  logoutInstance: (id, o) => request('POST', `${instancePath(id)}/logout`, o),
  /** The raw Response: 200 image/png, or 202 JSON {message, status: "generating"}. */
  qrImage: (id, o) =>
    send('GET', `${instancePath(id)}/qr`, { ...o, query: { format: 'png' }, accept: 'image/png, application/json' }),
  /** {pairingCode} */
  pairingCode: (id, phone, o) => request('POST', `${instancePath(id)}/pairing-code`, { ...o, json: { phone } }),
  events: (id, query, o) => request('GET', `${instancePath(id)}/events`, { ...o, query }),

  // --- messaging ----------------------------------------------------------------------------
  /** {id} */
  sendText: (id, phone, message, o) =>
    request('POST', `${instancePath(id)}/send`, {
      ...o,
      json: { phone, message },
      headers: { 'Idempotency-Key': idempotencyKey() },
    }),
  /** multipart fields: phone, file, caption → {id} */
  sendFile: (id, formData, o) =>
    request('POST', `${instancePath(id)}/send-file`, {
      ...o,
      form: formData,
      headers: { 'Idempotency-Key': idempotencyKey() },
    }),
  /** {messages (newest first), pagination} */
  chatMessages: (id, chatId, query, o) =>
    request('GET', `${instancePath(id)}/chats/${enc(chatId)}/messages`, { ...o, query }),

  // --- contacts -----------------------------------------------------------------------------
  contactsDb: (id, query, o) => request('GET', `${instancePath(id)}/contacts/db`, { ...o, query }),
  contactsWhatsapp: (id, o) => request('GET', `${instancePath(id)}/contacts`, o),
  importContacts: (id, o) => request('POST', `${instancePath(id)}/contacts/import`, o),

  // --- webhooks -----------------------------------------------------------------------------
  deliveries: (id, query, o) => request('GET', `${instancePath(id)}/webhooks/deliveries`, { ...o, query }),
  redeliver: (id, deliveryId, o) =>
    request('POST', `${instancePath(id)}/webhooks/deliveries/${enc(deliveryId)}/redeliver`, o),
  testWebhook: (id, o) => request('POST', `${instancePath(id)}/webhooks/test`, o),

  // --- statistics ---------------------------------------------------------------------------
  instanceStats: (id, period, o) => request('GET', `/api/stats/instances/${enc(id)}`, { ...o, query: { period } }),
  userStats: (period, o) => request('GET', '/api/stats/user', { ...o, query: { period } }),
  systemStats: (o) => request('GET', '/api/stats/system', o),

  // --- administration -----------------------------------------------------------------------
  users: (query, o) => request('GET', '/api/users', { ...o, query }),
  createUser: (body, o) => request('POST', '/api/users', { ...o, json: body }),
  /** {apiKey} */
  rotateUserApiKey: (userId, o) => request('POST', `/api/users/${enc(userId)}/api-key`, o),
  /** {userId, limits{maxMessagesSent,maxApiCalls,maxInstances}, state[]} */
  getLimits: (userId, o) => request('GET', `/api/users/${enc(userId)}/limits`, o),
  setLimits: (userId, limits, o) => request('PUT', `/api/users/${enc(userId)}/limits`, { ...o, json: limits }),
  /** {shardCount, workers[{id,host,port,alive,shards,sessions,startedAt,heartbeatAt}], unownedShards} */
  workers: (o) => request('GET', '/api/admin/workers', o),
  /** simulator only: {success, message, phone} */
  simulateScan: (id, o) => request('POST', `/api/admin/sim/instances/${enc(id)}/scan`, { ...o, json: {} }),
};
