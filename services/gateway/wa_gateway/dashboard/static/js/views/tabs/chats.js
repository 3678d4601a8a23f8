/**
 * Chats tab: the history of one chat (GET .../chats/<chatId>/messages, newest first from the API,
 * shown oldest → newest with "Load older messages" on top). New message_received / message_sent
 * events of that chat are appended live; message_status events update a message's status.
 * The chat field suggests the chats seen in recent events (datalist).
 */

import { api } from '../../api.js';
import { alertBox, clearBox, field, h, onAction, replace, showError, timeEl, validateForm, withBusy } from '../../ui.js';

const PAGE = 50;

/** A comparable chat key: JIDs lower-cased, plain numbers as <digits>@s.whatsapp.net. */
export function chatKey(value) {
  const text = String(value || '').trim().toLowerCase();
  if (!text) return '';
  if (text.includes('@')) {
    const [user, server] = text.split('@');
    return `${user.split(':')[0]}@${server}`; // drop a device suffix (123:4@s.whatsapp.net)
  }
  return `${text.replace(/\D/g, '')}@s.whatsapp.net`;
}

/** The chat JID of a live or stored message event. */
function eventChat(type, data) {
  if (!data) return '';
  if (type === 'message_sent') return data.to || data.remoteJid || '';
  return data.from || data.remoteJid || '';
}

export function chatsTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();

  const suggestions = h('datalist', { id: `chat-suggestions-${id}` });
  const known = new Set();
  function suggest(jid) {
    const key = chatKey(jid);
    if (!key || known.has(key)) return;
    known.add(key);
    suggestions.append(h('option', { value: jid }));
  }

  const chatInput = h('input', {
    type: 'text',
    name: 'chatId',
    required: true,
    autocomplete: 'off',
    spellcheck: false,
    list: suggestions.id,
    placeholder: '79001234567 or 79001234567@s.whatsapp.net',
  });
  const loadButton = h('button', { type: 'submit', class: 'primary' }, 'Load history');
  const form = h(
    'form',
    { class: 'inline-form', noValidate: true, role: 'search', 'aria-label': 'Chat history' },
    field('Chat (phone or JID)', chatInput),
    h('div', { class: 'actions' }, loadButton),
    suggestions,
  );

  const olderButton = h('button', { type: 'button', hidden: true }, 'Load older messages');
  const list = h('ol', { class: 'messages', 'aria-label': 'Messages' });
  const title = h('h3', { id: 'chat-title' });
  const results = h('section', { class: 'chat', hidden: true, 'aria-labelledby': 'chat-title' }, title, olderButton, list);
  const status = h('div', { class: 'chat-status', role: 'status' });

  /** Current chat: {input, key, skip, total} */
  let chat = null;
  const shownIds = new Set();

  function messageItem(m) {
    const outgoing = Boolean(m.fromMe);
    const text = m.content || m.caption || '';
    const media = m.hasMedia ? `[${m.messageType || 'media'}${m.fileName ? `: ${m.fileName}` : ''}] ` : '';
    const statusEl = h('span', { class: 'message-status' }, m.status ? `status: ${m.status}` : '');
    return h(
      'li',
      { class: `message ${outgoing ? 'message--out' : 'message--in'}`, dataset: { messageId: m.messageId || '' } },
      h(
        'p',
        { class: 'message-meta' },
        h('span', { class: 'direction' }, outgoing ? 'Outgoing' : 'Incoming'),
        ' · ',
        timeEl(messageTime(m)),
        ' · ',
        statusEl,
      ),
      h('p', { class: 'message-body' }, media ? h('span', { class: 'media' }, media) : null, text || (media ? '' : h('em', {}, '(no text)'))),
    );
  }

  function messageTime(m) {
    return (m.metadata && m.metadata.timestamp) || m.createdAt;
  }

  async function loadPage({ older }) {
    const skip = older ? chat.skip : 0;
    const page = await api.chatMessages(id, chat.input, { limit: PAGE, skip }, { signal: scope.signal });
    const messages = page.messages || [];
    const pagination = page.pagination || {};
    chat.skip = skip + messages.length;
    // API order: newest first. Display: oldest first.
    const items = [];
    for (const m of [...messages].reverse()) {
      if (m.messageId && shownIds.has(m.messageId)) continue;
      if (m.messageId) shownIds.add(m.messageId);
      items.push(messageItem(m));
    }
    if (older) list.prepend(...items);
    else list.append(...items);
    if (messages[0] && messages[0].remoteJid) chat.key = chatKey(messages[0].remoteJid);
    olderButton.hidden = !pagination.hasMore;
    const total = typeof pagination.total === 'number' ? pagination.total : list.children.length;
    status.textContent = total === 0 ? 'No messages in this chat yet.' : `Showing ${list.children.length} of ${total} messages.`;
  }

  async function openChat(value) {
    chat = { input: value, key: chatKey(value), skip: 0 };
    shownIds.clear();
    list.replaceChildren();
    title.textContent = `Messages with ${value}`;
    results.hidden = false;
    status.textContent = 'Loading messages…';
    await loadPage({ older: false });
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearBox(alert);
    if (!validateForm(form, alert)) return;
    try {
      await withBusy(loadButton, () => openChat(chatInput.value.trim()));
    } catch (err) {
      status.textContent = '';
      showError(alert, err, { form });
    }
  });

  onAction(olderButton, alert, { run: () => loadPage({ older: true }) });

  // --- live --------------------------------------------------------------------------------
  function onMessage(event) {
    if (event.instanceId !== id) return;
    const data = event.data || {};
    const jid = eventChat(event.type, data);
    suggest(jid);
    if (!chat || chatKey(jid) !== chat.key) return;
    if (data.messageId && shownIds.has(data.messageId)) return;
    if (data.messageId) shownIds.add(data.messageId);
    list.append(
      messageItem({
        fromMe: event.type === 'message_sent',
        content: data.body,
        messageType: data.type,
        hasMedia: data.hasMedia,
        messageId: data.messageId,
        status: event.type === 'message_sent' ? 'sent' : 'received',
        createdAt: data.timestamp || event.timestamp,
      }),
    );
    chat.skip += 1;
  }
  scope.subscribe('message_received', onMessage);
  scope.subscribe('message_sent', onMessage);
  scope.subscribe('message_status', (event) => {
    if (event.instanceId !== id || !event.data) return;
    const { messageId, status: newStatus } = event.data;
    for (const item of list.querySelectorAll('li[data-message-id]')) {
      if (item.dataset.messageId === messageId) {
        item.querySelector('.message-status').textContent = `status: ${newStatus}`;
      }
    }
  });
  // The stream has no replay: re-read the open chat when it (re)opens.
  scope.subscribe('ready', () => {
    if (!chat) return;
    openChat(chat.input).catch((err) => showError(alert, err));
  });

  // Suggestions from recent message events.
  api
    .events(id, { types: 'message_received,message_sent', limit: 100 }, { signal: scope.signal })
    .then((page) => {
      for (const e of page.events || []) suggest(eventChat(e.type, e.data));
    })
    .catch(() => {}); // suggestions are optional

  replace(panel, h('h2', {}, 'Chats'), alert, form, status, results);

  // #/instances/<id>/chats?chat=<phone or JID>: open that chat directly.
  const initial = ctx.params.query && ctx.params.query.get('chat');
  if (initial) {
    chatInput.value = initial;
    openChat(initial).catch((err) => showError(alert, err));
  }
}
