/** Any unknown hash route. */

import { h, pageHeading } from '../ui.js';

export function notFoundView(main, ctx) {
  ctx.setTitle('Page not found');
  main.append(
    pageHeading('Page not found'),
    h('p', {}, 'There is no page at this address. '),
    h('p', {}, h('a', { href: '#/instances' }, 'Go to the instances')),
  );
}
