/**
 * Settings tab: edit the instance (PUT /api/instances/<id>; same fields as creation, webhook
 * options under `webhookSettings`) and delete it (DELETE, after a confirmation dialog).
 */

import { api } from '../../api.js';
import { forget, rememberName } from '../../instances-state.js';
import { alertBox, button, clearBox, confirmDialog, h, loading, noticeBox, notify, replace, showError, validateForm, withBusy } from '../../ui.js';
import { INSTANCE_FIELD_ALIASES, instanceForm, valuesFromInstance } from '../instance-form.js';

export function settingsTab(panel, ctx) {
  const { scope, instance } = ctx;
  const id = instance.id;
  const alert = alertBox();
  const notice = noticeBox();
  const formArea = h('div', {}, loading('Loading settings…'));

  function buildForm(data) {
    const edit = instanceForm({ mode: 'edit', values: valuesFromInstance(data), submitLabel: 'Save changes' });
    edit.form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearBox(alert);
      clearBox(notice);
      if (!validateForm(edit.form, alert)) return;
      const body = edit.read();
      if (!body) return;
      try {
        const updated = await withBusy(edit.submit, () => api.updateInstance(id, body, { signal: scope.signal }));
        rememberName(id, updated.name);
        notify(notice, 'Settings saved.');
        await instance.reload();
      } catch (err) {
        showError(alert, err, { form: edit.form, aliases: INSTANCE_FIELD_ALIASES });
      }
    });
    replace(formArea, edit.form);
  }

  // Read the detail afresh (webhookSettings may have changed elsewhere).
  instance
    .reload()
    .then(buildForm)
    .catch((err) => {
      showError(alert, err);
      formArea.replaceChildren();
    });

  const remove = button('Delete instance', { class: 'danger' });
  remove.addEventListener('click', async () => {
    const name = (instance.data && instance.data.name) || id;
    const ok = await confirmDialog({
      title: `Delete instance ${name}?`,
      message: 'The instance, its WhatsApp session, messages, contacts and webhook history are deleted. This cannot be undone.',
      confirmText: 'Delete',
      danger: true,
    });
    if (!ok) return;
    clearBox(alert);
    try {
      await withBusy(remove, () => api.deleteInstance(id, { signal: scope.signal }));
      forget(id);
      ctx.announce(`Instance ${name} deleted.`);
      ctx.navigate('/instances');
    } catch (err) {
      showError(alert, err);
    }
  });

  panel.append(
    h('h2', {}, 'Settings'),
    alert,
    notice,
    formArea,
    h(
      'section',
      { class: 'danger-zone', 'aria-labelledby': 'danger-title' },
      h('h3', { id: 'danger-title' }, 'Delete this instance'),
      h('p', {}, 'Logs the instance out of WhatsApp and deletes all of its data.'),
      remove,
    ),
  );
}
