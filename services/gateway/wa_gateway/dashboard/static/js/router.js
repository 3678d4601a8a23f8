/**
 * Hash routing: `#/instances/abc/send?chat=123` → {path: '/instances/abc/send',
 * segments: ['instances', 'abc', 'send'], query: URLSearchParams}.
 */

let routeHandler = () => {};

export function parseHash(hash = window.location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [pathPart, queryPart = ''] = raw.split('?');
  const segments = pathPart
    .split('/')
    .filter(Boolean)
    .map((segment) => {
      try {
        return decodeURIComponent(segment);
      } catch {
        return segment;
      }
    });
  return { path: `/${segments.join('/')}`, segments, query: new URLSearchParams(queryPart) };
}

/** `#/` + encoded segments, e.g. href('instances', id, 'send'). */
export function href(...segments) {
  return `#/${segments.map((s) => encodeURIComponent(s)).join('/')}`;
}

/** Go to `path` ('/instances'); `replace` keeps the current entry out of the history. */
export function navigate(path, { replace = false } = {}) {
  const hash = `#${path.startsWith('/') ? path : `/${path}`}`;
  if (replace) {
    window.history.replaceState(null, '', hash);
    routeHandler(parseHash(hash));
  } else if (window.location.hash === hash) {
    routeHandler(parseHash(hash));
  } else {
    window.location.hash = hash; // fires hashchange
  }
}

export function startRouter(handler) {
  routeHandler = handler;
  window.addEventListener('hashchange', () => routeHandler(parseHash()));
  routeHandler(parseHash());
}
