/**
 * Contacts tab: contacts saved in the database (GET .../contacts/db, searched server-side with
 * `search`), the live list from WhatsApp (GET .../contacts, filtered here with the same search
 * text), and "Import into database" (POST .../contacts/import).
 */

import { api } from '../../api.js';
import { alertBox, button, dataTable, field, h, loading, noticeBox, notify, onAction, replace, showError, timeEl } from '../../ui.js';

export function contactsTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const notice = noticeBox();

  const search = h('input', { type: 'search', name: 'search', autocomplete: 'off', spellcheck: false });
  const searchForm = h(
    'form',
    { role: 'search', class: 'inline-form', 'aria-label': 'Contacts' },
    field('Search contacts', search, { hint: 'Name or number.' }),
  );
  searchForm.addEventListener('submit', (event) => {
    event.preventDefault();
    loadDb();
    renderWhatsapp();
  });

  const loadWhatsapp = button('Load from WhatsApp');
  const importButton = button('Import into database');
  const dbArea = h('div', {}, loading('Loading contacts…'));
  const dbCount = h('p', { class: 'muted' });
  const waSection = h('section', { hidden: true, 'aria-labelledby': 'wa-contacts-title' }, h('h3', { id: 'wa-contacts-title' }, 'Contacts on WhatsApp'));
  const waArea = h('div', {});
  waSection.append(waArea);
  let whatsappContacts = null;

  const contactColumns = [
    { label: 'Name', render: (c) => c.name || c.pushName || '—' },
    { label: 'Number', render: (c) => c.number || '—' },
    { label: 'JID', render: (c) => h('code', { class: 'id', title: c.remoteJid || c.id }, c.remoteJid || c.id) },
    { label: 'Group', render: (c) => (c.isGroup ? 'yes' : 'no') },
  ];

  let dbSeq = 0; // answers to older searches are dropped

  async function loadDb() {
    const seq = ++dbSeq;
    try {
      const page = await api.contactsDb(id, { search: search.value.trim(), limit: 100 }, { signal: scope.signal });
      if (seq !== dbSeq) return;
      const contacts = page.contacts || [];
      const total = page.pagination ? page.pagination.total : contacts.length;
      dbCount.textContent = `${total} contact${total === 1 ? '' : 's'}${total > contacts.length ? ` (showing the first ${contacts.length})` : ''}.`;
      replace(
        dbArea,
        dataTable({
          caption: 'Saved contacts',
          captionHidden: true,
          rows: contacts,
          empty: search.value.trim() ? 'No saved contact matches the search.' : 'No contacts saved yet. Use “Import into database”.',
          columns: [...contactColumns, { label: 'Last activity', render: (c) => timeEl(c.lastActivity) }],
        }),
      );
    } catch (err) {
      if (seq !== dbSeq) return;
      showError(alert, err);
      dbArea.replaceChildren();
    }
  }

  function renderWhatsapp() {
    if (!whatsappContacts) return;
    const query = search.value.trim().toLowerCase();
    const rows = query
      ? whatsappContacts.filter((c) => `${c.name || ''} ${c.number || ''} ${c.id || ''}`.toLowerCase().includes(query))
      : whatsappContacts;
    waSection.hidden = false;
    replace(
      waArea,
      h('p', { class: 'muted' }, `${rows.length} of ${whatsappContacts.length} contacts.`),
      dataTable({ caption: 'Contacts on WhatsApp', captionHidden: true, rows, empty: 'No contact matches.', columns: contactColumns }),
    );
  }

  onAction(loadWhatsapp, alert, {
    run: () => api.contactsWhatsapp(id, { signal: scope.signal }),
    done: (result) => {
      whatsappContacts = result.contacts || [];
      renderWhatsapp();
    },
  });

  onAction(importButton, alert, {
    run: () => api.importContacts(id, { signal: scope.signal }),
    done: async (result) => {
      notify(notice, result.message || `Imported ${result.importedCount} contacts.`);
      await loadDb();
    },
  });

  const searchNow = scope.debounce(() => {
    loadDb();
    renderWhatsapp();
  }, 300);
  search.addEventListener('input', searchNow);
  scope.subscribe('ready', loadDb);

  panel.append(
    h('h2', {}, 'Contacts'),
    alert,
    notice,
    searchForm,
    h('div', { class: 'actions' }, loadWhatsapp, importButton),
    h('section', { 'aria-labelledby': 'db-contacts-title' }, h('h3', { id: 'db-contacts-title' }, 'Saved contacts'), dbCount, dbArea),
    waSection,
  );
  loadDb();
}
