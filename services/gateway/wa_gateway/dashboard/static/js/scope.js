/**
 * Lifetime of a view (or of a tab inside a view): everything a view starts (live subscriptions,
 * timers, DOM listeners outside its own subtree, in-flight requests, blob URLs) is registered on
 * its Scope and undone by `dispose()` when the user navigates away.
 */

import { subscribe } from './stream.js';

export class Scope {
  #cleanups = [];
  #controller = new AbortController();
  #disposed = false;

  /** Pass to requests: they are aborted when the scope ends. */
  get signal() {
    return this.#controller.signal;
  }

  get disposed() {
    return this.#disposed;
  }

  /** Run `fn` when the scope ends (at once if it already has). */
  add(fn) {
    if (this.#disposed) fn();
    else this.#cleanups.push(fn);
    return fn;
  }

  /** addEventListener, removed at the end of the scope. */
  listen(target, type, listener, options) {
    target.addEventListener(type, listener, options);
    this.add(() => target.removeEventListener(type, listener, options));
  }

  /** A live-stream subscription (see stream.js), removed at the end of the scope. */
  subscribe(type, handler) {
    this.add(subscribe(type, handler));
  }

  interval(fn, ms) {
    const timer = setInterval(fn, ms);
    this.add(() => clearInterval(timer));
    return () => clearInterval(timer);
  }

  timeout(fn, ms) {
    const timer = setTimeout(fn, ms);
    this.add(() => clearTimeout(timer));
    return () => clearTimeout(timer);
  }

  /** `fn` delayed until calls stop for `ms` (pending call cancelled with the scope). */
  debounce(fn, ms) {
    let timer = null;
    this.add(() => clearTimeout(timer));
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (!this.#disposed) fn(...args);
      }, ms);
    };
  }

  /** A nested scope, disposed with this one (or earlier, on its own). */
  child() {
    const scope = new Scope();
    this.add(() => scope.dispose());
    return scope;
  }

  dispose() {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#controller.abort();
    for (const fn of this.#cleanups.reverse()) {
      try {
        fn();
      } catch (err) {
        console.error('cleanup failed', err);
      }
    }
    this.#cleanups = [];
  }
}
