/**
 * Send tab: one recipient field ("Phone number") shared by two forms: a text message
 * (POST .../send {phone, message}) and a file (POST .../send-file, multipart phone/file/caption).
 * Each success shows the WhatsApp message id and a link to the chat history.
 */

import { api } from '../../api.js';
import { href } from '../../router.js';
import { alertBox, clearBox, clearFieldErrors, field, h, noticeBox, notify, showError, showFieldError, validateForm, withBusy } from '../../ui.js';

export function sendTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const notice = noticeBox();

  const phone = h('input', {
    type: 'tel',
    name: 'phone',
    required: true,
    autocomplete: 'off',
    inputMode: 'tel',
    placeholder: '79001234567',
  });
  const prefill = ctx.params.query && ctx.params.query.get('phone');
  if (prefill) phone.value = prefill;
  const recipient = h(
    'div',
    { class: 'recipient' },
    field('Phone number', phone, { hint: 'Recipient: international number without + (e.g. 79001234567) or a JID.' }),
  );

  /** The recipient, or null after marking the field (it sits outside both forms). */
  function recipientValue() {
    clearFieldErrors(panel);
    if (!phone.value.trim()) {
      showFieldError(phone, 'Enter the recipient’s phone number.');
      phone.focus();
      return null;
    }
    return phone.value.trim();
  }

  function showSent(kind, to, result) {
    notify(
      notice,
      h('p', {}, `${kind} sent. Message ID: `, h('code', { class: 'id' }, result.id)),
      h('p', {}, h('a', { href: `${href('instances', id, 'chats')}?chat=${encodeURIComponent(to)}` }, 'Open the chat history')),
    );
  }

  /** API errors; `details` land next to their field anywhere in the tab (incl. the shared phone). */
  function showSendError(err) {
    showError(alert, err, { form: panel });
  }

  // --- text --------------------------------------------------------------------------------
  const message = h('textarea', { name: 'message', rows: 4, required: true });
  const sendButton = h('button', { type: 'submit', class: 'primary' }, 'Send message');
  const textForm = h(
    'form',
    { class: 'stack', noValidate: true, 'aria-labelledby': 'send-text-title' },
    h('h3', { id: 'send-text-title' }, 'Text message'),
    field('Message', message),
    h('div', { class: 'actions' }, sendButton),
  );
  textForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(alert);
    clearBox(notice);
    const to = recipientValue();
    if (!validateForm(textForm, alert) || !to) return;
    try {
      const result = await withBusy(sendButton, () => api.sendText(id, to, message.value, { signal: scope.signal }));
      showSent('Message', to, result);
      message.value = '';
    } catch (err) {
      showSendError(err);
    }
  });

  // --- file --------------------------------------------------------------------------------
  const file = h('input', { type: 'file', name: 'file', required: true });
  const caption = h('input', { type: 'text', name: 'caption', autocomplete: 'off' });
  const fileButton = h('button', { type: 'submit' }, 'Send file');
  const fileForm = h(
    'form',
    { class: 'stack', noValidate: true, 'aria-labelledby': 'send-file-title' },
    h('h3', { id: 'send-file-title' }, 'File'),
    field('File', file),
    field('Caption', caption, { hint: 'Optional.' }),
    h('div', { class: 'actions' }, fileButton),
  );
  fileForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(alert);
    clearBox(notice);
    const to = recipientValue();
    if (!validateForm(fileForm, alert) || !to) return;
    const data = new FormData();
    data.append('phone', to);
    data.append('file', file.files[0]);
    if (caption.value.trim()) data.append('caption', caption.value.trim());
    try {
      const result = await withBusy(fileButton, () => api.sendFile(id, data, { signal: scope.signal }));
      showSent('File', to, result);
      fileForm.reset();
    } catch (err) {
      showSendError(err);
    }
  });

  const notConnected = h('p', { class: 'warning' }, 'This instance is not connected: sending will fail until it is linked (see the Link tab).');
  const updateWarning = (status) => {
    notConnected.hidden = status === 'connected';
  };
  instance.onStatus(updateWarning, scope);
  updateWarning(instance.status);

  panel.append(h('h2', {}, 'Send'), notConnected, alert, notice, recipient, h('div', { class: 'two-col' }, textForm, fileForm));
}
