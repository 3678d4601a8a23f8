/**
 * Live events: one `GET /api/events/stream` connection per logged-in tab, read with fetch() (an
 * EventSource cannot send the Authorization header) and fanned out to subscribers.
 *
 *   const off = subscribe('connected', (event) => ...);   // one type
 *   subscribe('*', (event) => ...);                        // every instance event
 *   subscribe('ready', () => refetch());                   // stream (re)opened: no replay
 *   onStatus((state) => ...);                              // connecting | live | reconnecting | stopped
 *
 * Events are `{id, type, instanceId, timestamp, data}`. The connection is retried with
 * exponential backoff (1 s doubling to 30 s, with jitter) when it fails or ends, and a connection
 * that stays silent longer than IDLE_TIMEOUT_MS (the server sends `: ping` every 15 s) is
 * dropped and reopened. `stop()` aborts it (logout). Events are deduplicated by `id`.
 */

import { SseParser } from './sse.js';

const STREAM_URL = '/api/events/stream';
const INITIAL_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
const IDLE_TIMEOUT_MS = 65000;
/** How many recent event ids are remembered to drop duplicate deliveries. */
const SEEN_IDS = 1000;

/** type → Set of handlers ('*' = every instance event, 'ready' = stream opened). */
const handlers = new Map();
const statusListeners = new Set();
let controller = null;
let state = 'stopped';
/** Ids of recent events (insertion-ordered): an event delivered twice is handled once. */
const seen = new Set();

function firstTime(id) {
  if (!id) return true;
  if (seen.has(id)) return false;
  seen.add(id);
  if (seen.size > SEEN_IDS) seen.delete(seen.values().next().value);
  return true;
}

export function subscribe(type, handler) {
  if (!handlers.has(type)) handlers.set(type, new Set());
  handlers.get(type).add(handler);
  return () => {
    const set = handlers.get(type);
    if (set) set.delete(handler);
  };
}

export function onStatus(listener) {
  statusListeners.add(listener);
  return () => statusListeners.delete(listener);
}

/** The connection state: 'connecting', 'live', 'reconnecting' or 'stopped'. */
export function streamState() {
  return state;
}

function setState(next) {
  if (next === state) return;
  state = next;
  for (const listener of [...statusListeners]) {
    try {
      listener(state);
    } catch (err) {
      console.error('stream status listener failed', err);
    }
  }
}

function emit(type, payload, { wildcard }) {
  const targets = [...(handlers.get(type) || [])];
  if (wildcard) targets.push(...(handlers.get('*') || []));
  for (const handler of targets) {
    try {
      handler(payload);
    } catch (err) {
      console.error(`handler of live event ${type} failed`, err);
    }
  }
}

/** Dispatch one SSE frame; true for the `ready` frame (the stream is healthy). */
function handleFrame(frame) {
  let payload = null;
  try {
    payload = frame.data ? JSON.parse(frame.data) : null;
  } catch {
    console.warn('live stream: frame with invalid JSON ignored', frame);
    return false;
  }
  if (frame.event === 'ready') {
    setState('live');
    emit('ready', payload, { wildcard: false });
    return true;
  }
  if (frame.event === 'overflow') return false; // the server ends the stream next; we reconnect
  const type = (payload && payload.type) || frame.event;
  if (!type || !payload) return false;
  if (!firstTime(payload.id || frame.id)) return false;
  emit(type, payload, { wildcard: true });
  return false;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

async function run(signal, { getToken, onUnauthorized }) {
  let delay = INITIAL_DELAY_MS;
  while (!signal.aborted) {
    const token = getToken();
    if (!token) break;
    // One AbortController per attempt: aborted by stop() and by the idle watchdog.
    const attempt = new AbortController();
    const abortAttempt = () => attempt.abort();
    signal.addEventListener('abort', abortAttempt, { once: true });
    let watchdog = null;
    const kick = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => attempt.abort(), IDLE_TIMEOUT_MS);
    };
    try {
      kick();
      const response = await fetch(STREAM_URL, {
        headers: { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' },
        signal: attempt.signal,
        cache: 'no-store',
        credentials: 'same-origin',
      });
      if (response.status === 401) {
        onUnauthorized();
        break;
      }
      if (!response.ok || !response.body) throw new Error(`live stream answered ${response.status}`);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        kick();
        for (const frame of parser.push(decoder.decode(value, { stream: true }))) {
          if (handleFrame(frame)) delay = INITIAL_DELAY_MS;
        }
      }
    } catch (err) {
      if (!signal.aborted && err && err.name !== 'AbortError') console.info('live stream interrupted:', err.message);
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener('abort', abortAttempt);
    }
    if (signal.aborted) break;
    setState('reconnecting');
    await sleep(delay * (0.8 + Math.random() * 0.4), signal);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }
  if (controller && controller.signal === signal) setState('stopped');
}

/** Open the stream (closing any previous one). */
export function start(options) {
  stop();
  controller = new AbortController();
  setState('connecting');
  run(controller.signal, options);
}

/** Close the stream (logout). */
export function stop() {
  if (controller) controller.abort();
  controller = null;
  setState('stopped');
}
