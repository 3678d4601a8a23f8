/**
 * Link tab: link the instance to a phone.
 *
 * - Not connected: the QR code as an image (GET .../qr?format=png fetched with the token, shown
 *   through a blob: URL; older URLs are revoked). WhatsApp rotates codes (60 s for the first, then
 *   about 20 s). The countdown ("QR expires in N s") runs to the code's expiry as the answer gives
 *   it (`X-QR-Expires-At`, the JSON's `expiresAt`), else as the `qr_received` live event gave it;
 *   server times are corrected by the clock difference the `Date` header shows. The code is
 *   re-read on every `qr_received` event for this instance, when the countdown runs out, when the
 *   stream reconnects and when the page becomes visible again; a re-read that returns the same
 *   code (same `ETag`) keeps the image and its countdown: it never restarts. A 202 answer is
 *   retried after a few seconds (`generating`) or shown as "Not linked" (`logged_out`).
 * - Alternative: a pairing code for a phone number (POST .../pairing-code).
 * - Connected (`connected` event, or a 409 from /qr): the QR is replaced by "Connected", with the
 *   linked number and push name when the instance says them (`connectionStatus.phone`/`pushName`).
 * - Reconnect, Log out of WhatsApp (confirmed), and for administrators on the simulator engine
 *   "Simulate scan" (POST /api/admin/sim/instances/<id>/scan).
 */

import { api } from '../../api.js';
import { readBody } from '../../http.js';
import { alertBox, button, clearBox, field, h, noticeBox, notify, onAction, showError, statusLabel, validateForm, withBusy } from '../../ui.js';
import { linkedAccount } from '../../instances-state.js';

/** Retry delay while the API answers 202 "generating". */
const GENERATING_RETRY_MS = 3000;
/** Retry delay when the instance is not waiting for a scan (logged out / disconnected). */
const IDLE_RETRY_MS = 10000;
/** Re-read delay when the code shown has expired but the server still has no newer one. */
const SAME_CODE_RETRY_MS = 1500;
/** Re-read interval when the server does not say when the code expires. */
const UNKNOWN_EXPIRY_POLL_MS = 5000;
/** Clock differences below this are ignored (the Date header has whole seconds). */
const CLOCK_TOLERANCE_MS = 2000;

export function linkTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const isAdmin = ctx.user && ctx.user.role === 'admin';
  const canSimulate = Boolean(ctx.config && ctx.config.simulator && isAdmin);

  const alert = alertBox();
  const notice = noticeBox();

  // The element that states the link status in words (contains "Connected" once linked).
  const state = h('p', { class: 'link-state', id: 'link-state' });

  // --- QR ----------------------------------------------------------------------------------
  const qrImage = h('img', { class: 'qr-image', alt: 'WhatsApp QR code', width: 264, height: 264, hidden: true });
  const countdown = h('p', { class: 'countdown', id: 'qr-countdown' });
  const qrSection = h(
    'section',
    { class: 'qr-section', 'aria-labelledby': 'qr-title' },
    h('h3', { id: 'qr-title' }, 'Scan the QR code'),
    h(
      'p',
      { class: 'muted' },
      'On the phone: WhatsApp → Settings → Linked devices → Link a device, then point the camera at this code.',
    ),
    h('div', { class: 'qr-frame' }, qrImage),
    countdown,
  );

  // --- pairing code --------------------------------------------------------------------------
  const pairAlert = alertBox();
  const phone = h('input', { type: 'tel', name: 'phone', required: true, autocomplete: 'off', inputMode: 'tel', placeholder: '79001234567' });
  const pairSubmit = h('button', { type: 'submit' }, 'Get pairing code');
  const pairingOutput = h('output', { class: 'pairing-code' });
  const pairingResult = h('div', { class: 'pairing-result', hidden: true },
    h('p', {}, 'Enter this code on the phone (WhatsApp → Linked devices → Link with phone number):'),
    pairingOutput,
  );
  const pairForm = h(
    'form',
    { class: 'stack', noValidate: true },
    field('Phone number', phone, { hint: 'The number of the WhatsApp account to link, international format without +.' }),
    h('div', { class: 'actions' }, pairSubmit),
  );
  const pairSection = h(
    'section',
    { class: 'pair-section', 'aria-labelledby': 'pair-title' },
    h('h3', { id: 'pair-title' }, 'Or link with a pairing code'),
    pairAlert,
    pairForm,
    pairingResult,
  );
  pairForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(pairAlert);
    if (!validateForm(pairForm, pairAlert)) return;
    try {
      const { pairingCode } = await withBusy(pairSubmit, () => api.pairingCode(id, phone.value.trim(), { signal: scope.signal }));
      pairingOutput.textContent = formatPairingCode(pairingCode);
      pairingResult.hidden = false;
    } catch (err) {
      showError(pairAlert, err, { form: pairForm });
    }
  });

  // --- simulator ---------------------------------------------------------------------------
  const simulate = button('Simulate scan', { class: 'sim' });
  const simResult = h('p', { class: 'sim-result' });
  const simSection = canSimulate
    ? h(
        'section',
        { class: 'sim-section', 'aria-labelledby': 'sim-title' },
        h('h3', { id: 'sim-title' }, 'Simulator'),
        h('p', { class: 'muted' }, 'Test engine only: a simulated phone scans the current QR code.'),
        h('div', { class: 'actions' }, simulate),
        simResult,
      )
    : null;
  onAction(simulate, alert, {
    run: () => api.simulateScan(id, { signal: scope.signal }),
    done: (result) => {
      simResult.textContent = `Scanned by simulated phone ${result.phone}. ${result.message || ''}`.trim();
      // The `connected` event normally follows; check anyway in case the stream is down.
      scope.timeout(() => instance.refreshStatus().catch(() => {}), 2500);
    },
  });

  // --- actions -----------------------------------------------------------------------------
  const reconnect = button('Reconnect');
  const logout = button('Log out of WhatsApp', { class: 'danger' });
  onAction(reconnect, alert, {
    run: () => api.reconnect(id, { signal: scope.signal }),
    done: (result) => {
      notify(notice, (result && result.message) || 'Reconnecting…');
      instance.setStatus('connecting');
      scope.timeout(() => instance.refreshStatus().then(() => render(instance.status)).catch(() => {}), 1500);
    },
  });
  onAction(logout, alert, {
    confirm: {
      title: 'Log out of WhatsApp?',
      message: 'The phone link is removed. To use this instance again you will need to scan a new QR code.',
      confirmText: 'Log out',
      danger: true,
    },
    run: () => api.logoutInstance(id, { signal: scope.signal }),
    done: async (result) => {
      notify(notice, (result && result.message) || 'Logged out.');
      await instance.refreshStatus();
    },
  });

  panel.append(
    h('h2', {}, 'Link'),
    state,
    alert,
    notice,
    qrSection,
    pairSection,
    simSection,
    h('section', { class: 'link-actions', 'aria-labelledby': 'connection-title' },
      h('h3', { id: 'connection-title' }, 'Connection'),
      h('div', { class: 'actions' }, reconnect, logout),
    ),
  );

  // --- QR loading and countdown --------------------------------------------------------------
  let objectUrl = null;
  /** The code shown: its ETag (the same for the same code; null when the server sent none). */
  let shownTag = null;
  /** Local epoch ms at which the shown code expires (0: unknown). */
  let deadline = 0;
  /** Local epoch ms at which the newest code announced on the stream expires (0: unknown). */
  let announcedDeadline = 0;
  /** Server clock minus local clock (ms), from the Date header; 0 while they agree. */
  let serverSkew = 0;
  let loadSeq = 0;
  let retryTimer = null;
  let ticker = null;

  scope.add(() => {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
  });

  function stopTimers() {
    clearTimeout(retryTimer);
    clearTimeout(ticker);
    retryTimer = null;
    ticker = null;
  }
  scope.add(stopTimers);

  function retryIn(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(loadQr, ms);
  }

  /** Learn how far the server's clock is from this browser's (expiry times are the server's). */
  function noteServerClock(response) {
    const date = Date.parse(response.headers.get('date') || '');
    if (!Number.isFinite(date)) return;
    const skew = date + 500 - Date.now(); // the header has whole seconds
    serverSkew = Math.abs(skew) > CLOCK_TOLERANCE_MS ? skew : 0;
  }

  /** Local epoch ms of the server time `iso` (0 when absent or invalid). */
  function localTime(iso) {
    const at = Date.parse(iso || '');
    return Number.isFinite(at) ? at - serverSkew : 0;
  }

  function showImage(blob) {
    const url = URL.createObjectURL(blob);
    const previous = objectUrl;
    objectUrl = url;
    const release = () => {
      if (previous) URL.revokeObjectURL(previous);
    };
    qrImage.addEventListener('load', release, { once: true });
    qrImage.addEventListener('error', release, { once: true });
    qrImage.src = url;
    qrImage.hidden = false;
  }

  /** Stop showing a code (none now, or linked). */
  function forgetCode() {
    qrImage.hidden = true;
    qrImage.removeAttribute('src');
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = null;
    shownTag = null;
    deadline = 0;
    clearTimeout(ticker);
    ticker = null;
    countdown.textContent = '';
  }

  /** Count down to `deadline`; each tick lands on a whole second of the time left. */
  function runCountdown() {
    clearTimeout(ticker);
    ticker = null;
    if (!deadline) {
      countdown.textContent = 'A new code replaces this one automatically when WhatsApp issues it.';
      return;
    }
    const tick = () => {
      const leftMs = deadline - Date.now();
      if (leftMs <= 0) {
        ticker = null;
        countdown.textContent = 'Refreshing the QR code…';
        loadQr();
        return;
      }
      countdown.textContent = `QR expires in ${Math.ceil(leftMs / 1000)} s`;
      ticker = setTimeout(tick, (leftMs % 1000 || 1000) + 5);
    };
    tick();
  }

  async function loadQr() {
    if (scope.disposed || instance.status === 'connected') return;
    const seq = ++loadSeq;
    clearTimeout(retryTimer);
    let response;
    try {
      response = await api.qrImage(id, { signal: scope.signal });
    } catch (err) {
      if (seq !== loadSeq || scope.disposed) return;
      if (err && err.status === 409) {
        // "already connected"
        instance.setStatus('connected');
        return;
      }
      showError(alert, err);
      retryIn(IDLE_RETRY_MS);
      return;
    }
    if (seq !== loadSeq || scope.disposed) return;
    noteServerClock(response);
    if (response.status === 202) {
      // {message, status: "generating" | "logged_out"}
      const body = await readBody(response);
      if (seq !== loadSeq || scope.disposed) return;
      forgetCode();
      const loggedOut = Boolean(body && body.status === 'logged_out');
      const idle = loggedOut || ['logged_out', 'disconnected'].includes(instance.status);
      state.textContent = idle
        ? `Not linked (${statusLabel(loggedOut ? 'logged_out' : instance.status).toLowerCase()}). Press “Reconnect” to get a new QR code.`
        : (body && body.message) || 'Generating the QR code…';
      retryIn(idle ? IDLE_RETRY_MS : GENERATING_RETRY_MS);
      if (loggedOut) instance.setStatus('logged_out');
      return;
    }
    const type = response.headers.get('content-type') || '';
    if (!type.startsWith('image/')) {
      forgetCode();
      state.textContent = 'The server did not return a QR image.';
      retryIn(IDLE_RETRY_MS);
      return;
    }
    const tag = response.headers.get('etag');
    if (tag && tag === shownTag) {
      // The same code again (a re-poll): keep the image and its countdown as they are.
      if (response.body) response.body.cancel().catch(() => {});
      if (!deadline) retryIn(UNKNOWN_EXPIRY_POLL_MS);
      else if (deadline <= Date.now()) {
        // Expired, and WhatsApp has not issued the next one yet: it comes as qr_received.
        countdown.textContent = 'Waiting for the next QR code…';
        retryIn(SAME_CODE_RETRY_MS);
      }
      return;
    }
    const blob = await response.blob();
    if (seq !== loadSeq || scope.disposed) return;
    clearBox(alert);
    showImage(blob);
    shownTag = tag;
    state.textContent = 'Waiting for the QR code to be scanned.';
    // When this code expires: the answer says (X-QR-Expires-At, the JSON's expiresAt); else the
    // live stream's qr_received.expiresAt; else unknown (no countdown, the code is re-read).
    const announced = announcedDeadline > Date.now() ? announcedDeadline : 0;
    deadline = localTime(response.headers.get('x-qr-expires-at')) || announced;
    runCountdown();
    if (!deadline) retryIn(UNKNOWN_EXPIRY_POLL_MS);
  }

  /** Show the panel for `status`. */
  function render(status) {
    const connected = status === 'connected';
    qrSection.hidden = connected;
    pairSection.hidden = connected;
    if (simSection) simSection.hidden = connected;
    logout.hidden = false;
    if (connected) {
      stopTimers();
      loadSeq += 1; // ignore a QR answer still in flight
      forgetCode();
      renderConnected();
      state.classList.add('is-connected');
    } else {
      state.classList.remove('is-connected');
      if (!qrImage.src) state.textContent = 'Loading the QR code…';
      loadQr();
    }
  }

  /** "Connected — linked as 79001234567 (John)" once the instance's data says who. */
  function renderConnected() {
    const linked = linkedAccount(instance.data);
    state.replaceChildren(
      h('strong', {}, 'Connected'),
      linked ? ` — this instance is linked to WhatsApp as ${linked}.` : ' — this instance is linked to WhatsApp.',
    );
  }

  instance.onStatus((status) => render(status), scope);
  instance.onData(() => {
    if (instance.status === 'connected') renderConnected();
  }, scope);
  // A new code was issued: show it at once.
  scope.subscribe('qr_received', (event) => {
    if (event.instanceId !== id) return;
    announcedDeadline = localTime(event.expiresAt);
    if (instance.status !== 'qr') instance.setStatus('qr'); // onStatus → render → loadQr
    else loadQr();
  });
  scope.subscribe('ready', () => {
    if (instance.status !== 'connected') loadQr();
  });
  // Timers run late in a hidden tab: read the code again when the page is shown.
  scope.listen(document, 'visibilitychange', () => {
    if (document.visibilityState === 'visible' && instance.status !== 'connected') loadQr();
  });

  render(instance.status);
}

/** "ABCD1234" → "ABCD-1234" (as WhatsApp shows it). */
function formatPairingCode(code) {
  const text = String(code || '');
  return text.length === 8 && !text.includes('-') ? `${text.slice(0, 4)}-${text.slice(4)}` : text;
}
