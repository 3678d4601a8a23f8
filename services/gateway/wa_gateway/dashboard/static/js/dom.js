/**
 * Tiny DOM builder. Every view builds its markup with `h()`, never with innerHTML, so text that
 * comes from the API (names, message bodies, error texts) is always inserted as text.
 */

let idCounter = 0;

// Keys always set as attributes: their DOM properties are read-only (input.list, input.form).
const ATTRIBUTE_ONLY = new Set(['list', 'form', 'role']);

/** A document-unique id such as `f-12`, for label/aria-* associations. */
export function uid(prefix = 'id') {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/**
 * Create an element.
 *
 *   h('button', { type: 'button', class: 'primary', on: { click: save } }, 'Save')
 *
 * Props: `class` (string), `on` (event → listener), `dataset` (object), `aria-*`, `role`, `for`
 * and any other attribute (set as attributes), or a DOM property the element has (value, checked,
 * hidden, disabled, tabIndex...). `null`/`undefined`/`false` props are skipped.
 * Children: nodes, strings/numbers (text), arrays (flattened); `null`/`false` are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') {
      el.className = value;
    } else if (key === 'on') {
      for (const [type, listener] of Object.entries(value)) el.addEventListener(type, listener);
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'for') {
      el.htmlFor = value;
    } else if (ATTRIBUTE_ONLY.has(key) || key.includes('-') || !(key in el)) {
      el.setAttribute(key, value === true ? '' : String(value));
    } else {
      el[key] = value;
    }
  }
  append(el, children);
  return el;
}

/** Append children (same rules as `h`) to `parent`; returns `parent`. */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all children of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}
