/**
 * What the dashboard knows about the caller's instances across pages: their names (to say
 * "Instance Sales is now connected") and last known status. Also the mapping from live events to
 * a status word, shared by the list, the instance page and the announcer.
 */

const names = new Map();
const statuses = new Map();

/** The status of an instance object from the API (`connectionStatus.status`, else `status`). */
export function statusOf(instance) {
  if (!instance) return 'unknown';
  return (instance.connectionStatus && instance.connectionStatus.status) || instance.status || 'unknown';
}

/**
 * The status an instance has after live `event`, or null when the event says nothing about it.
 * `disconnected` with willReconnect is shown as "connecting" (the worker retries).
 */
export function statusFromEvent(event) {
  switch (event && event.type) {
    case 'connected':
      return 'connected';
    case 'qr_received':
      return 'qr';
    case 'disconnected':
      return event.data && event.data.willReconnect ? 'connecting' : 'disconnected';
    default:
      return null;
  }
}

/** Remember name and status of instances from an API answer. */
export function rememberInstances(list) {
  for (const instance of list || []) {
    if (!instance || !instance.id) continue;
    if (instance.name) names.set(instance.id, instance.name);
    statuses.set(instance.id, statusOf(instance));
  }
}

export function rememberName(id, name) {
  if (id && name) names.set(id, name);
}

export function nameOf(id) {
  return names.get(id) || id;
}

export function forget(id) {
  names.delete(id);
  statuses.delete(id);
}

/** Record `status`; returns true when it differs from the last known one. */
export function rememberStatus(id, status) {
  const changed = statuses.get(id) !== status;
  statuses.set(id, status);
  return changed;
}

/**
 * The WhatsApp account an instance is linked as, from `connectionStatus.phone` / `pushName`
 * (extensions of the API): "+79001234567 (John)", "+79001234567", or '' when unknown.
 */
export function linkedAccount(instance) {
  const connection = (instance && instance.connectionStatus) || {};
  const phone = typeof connection.phone === 'string' && connection.phone ? `+${connection.phone.replace(/^\+/, '')}` : '';
  const name = typeof connection.pushName === 'string' ? connection.pushName.trim() : '';
  if (phone && name) return `${phone} (${name})`;
  return phone || name;
}

/** "connected", "waiting for a QR code scan", "logged out"... */
export function describeStatus(status) {
  if (status === 'qr') return 'waiting for a QR code scan';
  return String(status || 'unknown').replace(/_/g, ' ');
}

export function clearInstances() {
  names.clear();
  statuses.clear();
}
