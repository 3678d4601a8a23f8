/**
 * Incremental parser of the server-sent-events wire format
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
 *
 * Feed it decoded text chunks as they arrive; it returns the complete frames
 * `{event, data, id}` found so far. Comment lines (`: ping`) are skipped; a blank line ends a
 * frame; several `data:` lines are joined with "\n". Chunks may split lines anywhere, including
 * between the "\r" and "\n" of a CRLF.
 */
export class SseParser {
  #buffer = '';
  #event = '';
  #data = [];
  #id = null;

  /** @param {string} chunk @returns {Array<{event: string, data: string, id: string|null}>} */
  push(chunk) {
    const text = this.#buffer + chunk;
    // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
    const end = text.endsWith('\r') ? text.length - 1 : text.length;
    const lines = text.slice(0, end).split(/\r\n|\r|\n/);
    this.#buffer = lines.pop() + text.slice(end);
    const frames = [];
    for (const line of lines) this.#line(line, frames);
    return frames;
  }

  #line(line, frames) {
    if (line === '') {
      if (this.#data.length > 0) {
        frames.push({ event: this.#event || 'message', data: this.#data.join('\n'), id: this.#id });
      }
      this.#event = '';
      this.#data = [];
      return;
    }
    if (line.startsWith(':')) return; // comment / heartbeat
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.#event = value;
    else if (field === 'data') this.#data.push(value);
    else if (field === 'id') this.#id = value;
    // `retry:` and unknown fields are ignored: the client has its own backoff.
  }
}
