/** #/login: email + password → POST /api/auth/login. */

import { api } from '../api.js';
import { alertBox, field, h, noticeBox, notify, pageHeading, showError, validateForm, withBusy } from '../ui.js';

export function loginView(main, ctx) {
  ctx.setTitle('Log in');
  const alert = alertBox();
  const info = noticeBox();
  if (ctx.flash) {
    if (ctx.flash.kind === 'error') alert.append(h('p', {}, ctx.flash.text));
    else notify(info, ctx.flash.text);
  }

  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, spellcheck: false });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Log in');
  const form = h(
    'form',
    { class: 'stack', noValidate: true },
    field('Email', email),
    field('Password', password),
    h('div', { class: 'actions' }, submit),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    alert.replaceChildren();
    info.replaceChildren();
    if (!validateForm(form, alert)) return;
    try {
      const result = await withBusy(submit, () => api.login(email.value.trim(), password.value, { signal: ctx.scope.signal }));
      password.value = '';
      await ctx.onLogin(result);
    } catch (err) {
      showError(alert, err, { form });
      password.select();
    }
  });

  main.append(
    h(
      'section',
      { class: 'card auth-card' },
      pageHeading('Log in'),
      h('p', { class: 'muted' }, 'Sign in to manage your WhatsApp instances.'),
      alert,
      info,
      form,
    ),
  );
  // Start in the email field (the login page has nothing else to do).
  email.focus();
}
