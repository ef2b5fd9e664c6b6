// drf-grip's browser client: subscribe to a realtime DRF URL and write with its ETag.
//
// An ES module with no dependencies and no build step:
//
//   <script type="module">
//     import { live, patch } from "/static/drf_grip/live.js";
//     const todos = live("/api/todos/", (data, info) => render(data), {transport: "sse"});
//     // later: todos.stop();
//   </script>
//
// Transports (the same URL serves all three; see the README):
//   "longpoll"  GET with If-None-Match + Prefer: wait, in a loop (works everywhere);
//   "sse"       EventSource, reconnected on this client's backoff (not the browser's own
//               fixed delay); a reconnection's first event is dropped when unchanged;
//   "ws"        the WebSocket gateway (RealtimeGateway): one socket per gateway URL carries
//               every subscription of the page.
//
// Each subscription reconnects by itself with capped exponential backoff and jitter, and
// resumes from the last ETag it saw, so a change made while it was away arrives once it is
// back. onChange never sees the same ETag twice in a row.
//
// Over HTTP/1.1 a browser opens about six connections per host, and every long-poll or
// EventSource subscription keeps one busy: a page with many live URLs should use "ws", whose
// one socket carries them all (or serve the site over HTTP/2).

/** Connection states passed to `onState`. */
export const CONNECTING = "connecting";
export const LIVE = "live";
export const RECONNECTING = "reconnecting";
export const STOPPED = "stopped";

const DEFAULTS = {
  transport: "longpoll",
  wait: 25, // seconds a long-poll is held (Prefer: wait); the server clamps it
  minDelay: 500, // first reconnect delay (ms)
  maxDelay: 15000, // cap of the exponential backoff (ms)
  credentials: "same-origin",
  // A connection that went silent (a network change, a NAT that forgot it) is never closed
  // for the browser: no FIN or RST arrives, so a stream or a socket said "live" for ever
  // while the data went stale (a browser probe: 3 of 3 runs, SSE and WebSocket). After this
  // long without a word (the server's keep-alive comes every 20 s, STREAM_KEEP_ALIVE) an
  // SSE stream read with fetch() is opened again, and the gateway is asked for an answer;
  // EventSource shows no keep-alive, so its stream is opened again after three times
  // this (ms).
  quietMs: 60000,
};

// How long the gateway may take to answer a check of a quiet socket before it counts as lost.
const PROBE_MS = 10000;

// Every live stream and socket of the page, checked at once when the browser says it is
// online again (a network change: whatever was open may be silent now).
const onlineChecks = new Set();
if (typeof globalThis.addEventListener === "function") {
  globalThis.addEventListener("online", () => {
    for (const check of [...onlineChecks]) check();
  });
}

/** A non-2xx answer to a write or a subscription. */
export class HttpError extends Error {
  constructor(status, data, etag = null, message = undefined) {
    super(message || `HTTP ${status}`);
    this.name = "HttpError";
    this.status = status;
    this.data = data;
    this.etag = etag;
  }
}

/** 412: the resource changed since the ETag given as `ifMatch`; nothing was written. */
export class PreconditionFailed extends HttpError {
  constructor(data, etag = null) {
    super(412, data, etag, "412 Precondition Failed: the resource changed since that ETag");
    this.name = "PreconditionFailed";
  }
}

/**
 * Subscribe to `url`: `onChange(data, info)` gets the current representation, then every
 * change. `info` is `{etag, status, url, transport}`; a deleted resource gives `data = null`
 * with `status` 404 and ends the subscription.
 *
 * Options: `transport` ("longpoll" | "sse" | "ws"), `signal` (an AbortSignal that stops it),
 * `headers` (sent with every request), `gatewayUrl` (for "ws", e.g. "/api/ws/"), `etag` (one
 * already held: wait for the next change), `onState(state, info)`, `onError(error)`,
 * `wait`, `minDelay`, `maxDelay`, `credentials`, `quietMs` (a stream or socket silent this
 * long is checked: reopened, or asked for an answer).
 *
 * EventSource cannot send headers, so "sse" with `headers` reads the stream with fetch()
 * instead (same events; it resumes with Last-Event-ID).
 *
 * Returns a handle: `stop()`, `etag`, `state`, `url`, `patch(data, options)`.
 */
export function live(url, onChange, options = {}) {
  if (typeof onChange !== "function") throw new TypeError("live(url, onChange): onChange is a function");
  const opts = { ...DEFAULTS, ...options };
  const run = TRANSPORTS[opts.transport];
  // Every mistake in the arguments throws here, before any state is reported: a URL the
  // browser cannot parse would otherwise be retried for ever (long-poll), throw after
  // "connecting" (EventSource) or throw inside the shared socket's open handler, where it
  // also kept the socket's other subscriptions from being made (gateway).
  if (!run) throw new TypeError(`unknown transport ${JSON.stringify(opts.transport)}: longpoll, sse or ws`);
  resolveUrl(url, "url");
  if (opts.transport === "ws") {
    if (!opts.gatewayUrl) throw new TypeError('the "ws" transport needs gatewayUrl, e.g. "/api/ws/"');
    resolveUrl(opts.gatewayUrl, "gatewayUrl");
  }
  const sub = new Subscription(String(url), onChange, opts);
  if (opts.signal) {
    if (opts.signal.aborted) {
      sub.stop();
      return sub.handle;
    }
    opts.signal.addEventListener("abort", () => sub.stop(), { once: true });
  }
  run(sub);
  return sub.handle;
}

/**
 * PATCH `url` with JSON `data`. `ifMatch` (an ETag, or a handle returned by `live`, whose
 * current ETag is used) makes the write conditional: when the resource changed meanwhile the
 * server answers 412 and this rejects with `PreconditionFailed`. Resolves `{status, data, etag}`.
 */
export function patch(url, data, options = {}) {
  return send("PATCH", url, data, options);
}

/** POST JSON `data` to `url`; resolves `{status, data, etag}`, rejects with `HttpError`. */
export function post(url, data, options = {}) {
  return send("POST", url, data, options);
}

/** PUT, PATCH, POST or DELETE with JSON; `ifMatch` as for `patch`. */
export async function send(method, url, data, options = {}) {
  const { ifMatch, headers = {}, credentials = DEFAULTS.credentials, signal } = options;
  const sent = { Accept: "application/json", ...headers };
  if (data !== undefined) sent["Content-Type"] = "application/json";
  const sub = ifMatch && typeof ifMatch === "object" ? SUBSCRIPTIONS.get(ifMatch) : undefined;
  const tag = sub ? sub.writeEtag() : ifMatch && typeof ifMatch === "object" ? ifMatch.etag : ifMatch;
  if (ifMatch !== undefined && ifMatch !== null) {
    // A handle without an ETag yet cannot prove what it saw: refuse rather than write blindly.
    if (!tag) throw new TypeError("ifMatch: no ETag yet (the subscription has not answered)");
    sent["If-Match"] = tag;
  }
  const deliveries = sub ? sub.deliveries : 0;
  const response = await fetch(url, {
    method,
    headers: sent,
    body: data === undefined ? undefined : JSON.stringify(data),
    credentials,
    cache: "no-store",
    signal,
  });
  const body = await readBody(response);
  const etag = response.headers.get("ETag");
  if (response.status === 412) throw new PreconditionFailed(body, etag);
  if (!response.ok) throw new HttpError(response.status, body, etag);
  if (sub && etag && sameUrl(sub.url, url)) sub.wrote(etag, deliveries);
  return { status: response.status, data: body, etag };
}

// Handle -> its Subscription, for writes given a handle as `ifMatch`.
const SUBSCRIPTIONS = new WeakMap();

function sameUrl(a, b) {
  try {
    return resolveUrl(a).href === resolveUrl(b).href;
  } catch {
    return false;
  }
}

// -- one subscription --------------------------------------------------------------------

class Subscription {
  constructor(url, onChange, opts) {
    this.url = url;
    this.onChange = onChange;
    this.opts = opts;
    this.etag = opts.etag || null;
    this.state = null;
    this.stopped = false;
    this.attempt = 0; // failures since the last success, for the backoff
    this.cleanup = []; // what stop() undoes: timers, aborts, sockets
    // The ETag the handle's own last successful write returned, until the subscription
    // delivers again: the write changed the ETag, and the change reaches onChange only
    // some milliseconds later, so a second write right after the first would be refused
    // with 412 for the user's own change if it used the delivered ETag.
    this.written = null;
    this.deliveries = 0; // representations handed to onChange
    const self = this;
    this.handle = {
      get url() { return self.url; },
      get etag() { return self.etag; },
      get state() { return self.state; },
      get transport() { return self.opts.transport; },
      stop: () => self.stop(),
      // The write's headers are added to the subscription's (its Authorization), not put in
      // their place: a token-authenticated subscription's write with a header of its own
      // (X-CSRFToken) would otherwise go out unauthenticated.
      patch: (data, extra = {}) =>
        patch(self.url, data, {
          credentials: self.opts.credentials,
          ifMatch: self.handle,
          ...extra,
          headers: { ...self.opts.headers, ...extra.headers },
        }),
    };
    SUBSCRIPTIONS.set(this.handle, this);
    this.setState(CONNECTING);
  }

  setState(state, info = {}) {
    if (this.state === state && state !== RECONNECTING) return;
    if (this.state === STOPPED) return;
    this.state = state;
    if (this.opts.onState) {
      try {
        this.opts.onState(state, { url: this.url, transport: this.opts.transport, ...info });
      } catch (error) {
        reportAsync(error);
      }
    }
  }

  /** The ETag a write with this handle as `ifMatch` sends. */
  writeEtag() {
    return this.written || this.etag;
  }

  /** A write with this handle as `ifMatch` succeeded with `etag`. Kept only when nothing
   * was delivered meanwhile: a delivery during the write is that write's change or a later
   * one, and then the delivered ETag is the current one. */
  wrote(etag, deliveriesBefore) {
    if (this.deliveries === deliveriesBefore) this.written = etag;
  }

  /** A representation arrived: hand it over unless it is the one already delivered. */
  deliver(data, etag, status = 200) {
    if (this.stopped) return;
    this.attempt = 0;
    if (status === 200) this.setState(LIVE);
    if (status === 200 && etag && etag === this.etag) return;
    this.etag = status === 200 ? etag : null;
    this.written = null;
    this.deliveries++;
    try {
      this.onChange(data, { etag: this.etag, status, url: this.url, transport: this.opts.transport });
    } catch (error) {
      reportAsync(error);
    }
    if (status === 404 || status === 410) this.stop();
  }

  /** The connection is live (a hold is in place) even though nothing changed. */
  alive() {
    this.attempt = 0;
    this.setState(LIVE);
  }

  fail(error) {
    if (this.stopped) return;
    if (error && this.opts.onError) {
      try {
        this.opts.onError(error);
      } catch (err) {
        reportAsync(err);
      }
    }
  }

  /** The server refused or ended the subscription (credentials refused or revoked): asking
   * again gets the same answer. onError hears of it, onChange gets null with the status. */
  end(error, status) {
    this.fail(error);
    this.deliver(null, null, status);
    this.stop();
  }

  /** Wait the next backoff delay; resolves false when stopped meanwhile. */
  backoff(error) {
    this.fail(error);
    const delay = backoffDelay(this.attempt++, this.opts);
    this.setState(RECONNECTING, { attempt: this.attempt, delay, error });
    return new Promise((resolve) => {
      if (this.stopped) return resolve(false);
      const timer = setTimeout(() => {
        this.cleanup = this.cleanup.filter((undo) => undo !== cancel);
        resolve(!this.stopped);
      }, delay);
      const cancel = () => {
        clearTimeout(timer);
        resolve(false);
      };
      this.cleanup.push(cancel);
    });
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const undo of this.cleanup.splice(0)) {
      try {
        undo();
      } catch (error) {
        reportAsync(error);
      }
    }
    this.setState(STOPPED);
  }
}

/** Capped exponential backoff with "equal jitter": half fixed, half random, so clients that
 * lost the same server do not all come back in the same millisecond. */
export function backoffDelay(attempt, { minDelay = DEFAULTS.minDelay, maxDelay = DEFAULTS.maxDelay } = {}) {
  const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
}

function reportAsync(error) {
  // A bug in the caller's callback must not kill the subscription, nor go unseen.
  setTimeout(() => {
    throw error;
  });
}

async function readBody(response) {
  if (response.status === 204 || response.status === 304) return null;
  const text = await response.text();
  if (!text) return null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function isGone(status) {
  return status === 404 || status === 410;
}

function isRefused(status) {
  return status === 401 || status === 403;
}

// -- long-poll ---------------------------------------------------------------------------

// A 304 that comes back faster than this was not held: no GRIP proxy in front (a plain
// conditional GET), so the loop waits out a backoff instead of spinning.
const UNHELD_304_MS = 1000;

// A held request still unanswered this long after its wait (1.5 times the wait, plus this)
// was lost on the way: the proxy answers a hold's timeout itself, after the wait the server
// applied. Pushpin 1.36 can drop a request it re-requests while handing it over, and the
// browser would wait for it for as long as the page stays open. Asked afresh instead.
const LOST_HOLD_GRACE_MS = 5000;

function appliedWait(response) {
  const match = /wait=(\d+)/.exec(response.headers.get("Preference-Applied") || "");
  return match ? Number(match[1]) : null;
}

async function longpoll(sub) {
  const { headers = {}, credentials, wait } = sub.opts;
  // A held request answers nothing until a change or its timeout, so "live" could not be
  // shown until then: each (re)connection starts with a plain GET, which answers at once
  // (and is not delivered again when its ETag is the one already seen).
  let connected = false;
  let applied = null; // the wait the server last applied (it clamps the one asked for)
  while (!sub.stopped) {
    const controller = new AbortController();
    const abort = () => controller.abort();
    sub.cleanup.push(abort);
    const sent = { Accept: "application/json", ...headers };
    const holds = Boolean(sub.etag && connected);
    if (holds) {
      sent["If-None-Match"] = sub.etag;
      sent.Prefer = `wait=${wait}`;
    }
    // A plain GET unanswered as long is lost too: right after a start Pushpin 1.36 can leave
    // the first requests it proxies unanswered (NOTES.rst), and the subscription waited on
    // one for good. It is asked again after a backoff; a lost hold at once, with a plain GET.
    const limit = Math.max(wait, applied || 0) * 1500 + LOST_HOLD_GRACE_MS;
    let lost = false;
    const lostTimer = setTimeout(() => {
      lost = true;
      controller.abort();
    }, limit);
    const started = Date.now();
    let response, body;
    try {
      // no-store: the browser's HTTP cache must neither answer nor revalidate for us
      // (a 304 it turned into a cached 200 would look like a change).
      response = await fetch(sub.url, { headers: sent, credentials, cache: "no-store", signal: controller.signal });
      body = await readBody(response);
    } catch (error) {
      if (sub.stopped) return;
      connected = false;
      if (lost && holds) continue; // a plain GET now: it answers at once with the current state
      const reported = lost ? new Error(`GET ${sub.url} got no answer in ${limit} ms: asked again`) : error;
      if (!(await sub.backoff(reported))) return;
      continue;
    } finally {
      clearTimeout(lostTimer);
      sub.cleanup = sub.cleanup.filter((undo) => undo !== abort);
    }
    applied = appliedWait(response) ?? applied;
    connected = response.ok || response.status === 304;
    if (response.status === 304) {
      sub.alive();
      if (Date.now() - started < UNHELD_304_MS && !(await pause(sub, UNHELD_304_MS))) return;
      continue;
    }
    if (response.ok) {
      const etag = response.headers.get("ETag");
      sub.deliver(body, etag);
      // Without an ETag there is nothing to hold on: not a realtime URL. Poll slowly
      // rather than spin.
      if (!etag) {
        sub.fail(new Error(`${sub.url} sent no ETag: not a realtime URL, polling instead`));
        if (!(await pause(sub, sub.opts.maxDelay))) return;
      }
      continue;
    }
    if (isGone(response.status)) {
      sub.deliver(null, null, response.status);
      return;
    }
    if (isRefused(response.status)) {
      // The credentials are no longer good (a session that ended, a deleted token): end as
      // SSE's final `event: error` and the gateway's `end` do, rather than loop on the
      // origin for as long as the page stays open.
      sub.end(new HttpError(response.status, body), response.status);
      return;
    }
    // 5xx (a proxy whose origin is restarting: 502), 429: try again later.
    if (!(await sub.backoff(new HttpError(response.status, body)))) return;
  }
}

function pause(sub, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(!sub.stopped), ms);
    sub.cleanup.push(() => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

// -- server-sent events --------------------------------------------------------------------

function sse(sub) {
  if (sub.opts.headers && Object.keys(sub.opts.headers).length) return sseFetch(sub);
  let source = null;
  let quiet = null;
  // Silent for quietMs, or the browser back online: open the stream again (its first event,
  // the current representation, is dropped by deliver() when unchanged).
  const reopen = () => {
    clearTimeout(quiet);
    if (sub.stopped || !source || source.readyState !== EventSource.OPEN) return;
    source.close();
    open();
  };
  const heard = () => {
    clearTimeout(quiet);
    // EventSource hides the server's keep-alive comments: a healthy stream can be silent
    // too, and reopening one costs a render, so it waits three times as long.
    quiet = setTimeout(reopen, 3 * sub.opts.quietMs);
  };
  onlineChecks.add(reopen);
  const open = () => {
    if (sub.stopped) return;
    source = new EventSource(sub.url, { withCredentials: sub.opts.credentials === "include" });
    const attempt = sub.attempt; // alive() and deliver() reset it when the stream opens
    let opened = null;
    source.onopen = () => {
      opened = Date.now();
      heard();
      sub.alive();
    };
    source.onmessage = (event) => {
      heard();
      // The event id is the representation's ETag: a reconnection's first event, the current
      // representation, is dropped by deliver() when it is the one already seen.
      sub.deliver(parseJson(event.data), event.lastEventId || null);
    };
    // The server ends the stream of a deleted object with `event: delete`.
    source.addEventListener("delete", () => sub.deliver(null, null, 404));
    source.onerror = (event) => {
      clearTimeout(quiet);
      if (event instanceof MessageEvent) {
        // `event: error` from the server: the subscription's credentials were revoked, or the
        // object is no longer visible to this client; its data names the status a GET now
        // gets (401 or 403), as over fetch() and the gateway (it always said 403).
        const data = parseJson(event.data);
        const status = (data && data.status) || 403;
        sub.end(new HttpError(status, data), status);
        return;
      }
      if (source.readyState === EventSource.CONNECTING) {
        // The stream was lost (or never opened): the browser would reconnect by itself after
        // a fixed delay of its own (3 s in Chromium), so every page that lost the same server
        // came back together whatever minDelay/maxDelay said. Reconnect on this client's
        // backoff instead: jittered, capped, reported with its delay. A stream that ended
        // within UNHELD_STREAM_MS of opening was not held and does not reset the backoff.
        source.close();
        if (opened === null || Date.now() - opened < UNHELD_STREAM_MS) sub.attempt = attempt;
        sub.backoff(new Error(`event stream ${sub.url} lost`)).then((again) => again && open());
        return;
      }
      // CLOSED: the browser gave up on an HTTP error, whose status EventSource hides. A
      // deleted object must end the subscription, not retry forever: ask once with a GET.
      // A new EventSource cannot send Last-Event-ID; the server sends the current
      // representation first, and deliver() drops it when its ETag is the one already seen.
      source.close();
      statusOf(sub).then((status) => {
        if (isGone(status)) return sub.deliver(null, null, status);
        if (isRefused(status)) return sub.end(new HttpError(status, null), status);
        const error = new HttpError(status || 0, null, null, `event stream closed (GET answers ${status || "nothing"})`);
        return sub.backoff(error).then((again) => again && open());
      });
    };
  };
  sub.cleanup.push(() => {
    clearTimeout(quiet);
    onlineChecks.delete(reopen);
    if (source) source.close();
  });
  open();
}

/** The status a plain GET of the subscription's URL answers now (0: no answer). */
async function statusOf(sub) {
  try {
    const response = await fetch(sub.url, {
      headers: { Accept: "application/json" },
      credentials: sub.opts.credentials,
      cache: "no-store",
    });
    response.body && response.body.cancel();
    return response.status;
  } catch {
    return 0;
  }
}

// A stream that ends sooner than this after it opened was not held (no GRIP proxy in front:
// the origin answers the first event and closes): it counts as a failure, so the backoff
// grows instead of reconnecting after the first delay for ever.
const UNHELD_STREAM_MS = 1000;

/** SSE over fetch(), for requests that need headers (EventSource cannot send any). */
async function sseFetch(sub) {
  const { headers = {}, credentials } = sub.opts;
  while (!sub.stopped) {
    const attempt = sub.attempt; // alive() and deliver() reset it when the stream opens
    const controller = new AbortController();
    const abort = () => controller.abort();
    sub.cleanup.push(abort);
    const sent = { ...headers, Accept: "text/event-stream" };
    if (sub.etag) sent["Last-Event-ID"] = sub.etag;
    let failure = null;
    try {
      const response = await fetch(sub.url, { headers: sent, credentials, cache: "no-store", signal: controller.signal });
      const type = response.headers.get("Content-Type") || "";
      if (isGone(response.status)) {
        sub.deliver(null, null, response.status);
        return;
      }
      if (isRefused(response.status)) {
        sub.end(new HttpError(response.status, await readBody(response)), response.status);
        return;
      }
      if (!response.ok || !type.startsWith("text/event-stream")) {
        failure = new HttpError(response.status, await readBody(response));
      } else {
        sub.alive();
        const opened = Date.now();
        // Silent for quietMs (the server's keep-alive comments count), or the browser back
        // online: abort, and the loop opens it again with Last-Event-ID.
        let quiet = null;
        const heard = () => {
          clearTimeout(quiet);
          quiet = setTimeout(abort, sub.opts.quietMs);
        };
        heard();
        onlineChecks.add(abort);
        const ended = await readEvents(response.body, heard, (event) => {
          if (event.type === "delete") sub.deliver(null, null, 404);
          else if (event.type === "error") {
            // Revoked or refused: its data names the status a GET now gets (401 or 403).
            const data = parseJson(event.data);
            const status = (data && data.status) || 403;
            sub.end(new HttpError(status, data), status);
          }
          else sub.deliver(parseJson(event.data), event.id || null);
        }).finally(() => {
          clearTimeout(quiet);
          onlineChecks.delete(abort);
        });
        // backoff() below reports "reconnecting" (with its delay).
        if (ended && Date.now() - opened < UNHELD_STREAM_MS) sub.attempt = attempt;
      }
    } catch (error) {
      failure = error;
    } finally {
      sub.cleanup = sub.cleanup.filter((undo) => undo !== abort);
    }
    if (sub.stopped) return;
    if (!(await sub.backoff(failure))) return;
  }
}

/** Parse an event stream (WHATWG HTML, "server-sent events") into `{type, id, data}` events;
 * `onBytes()` hears of every chunk, keep-alive comments included. Resolves true when the
 * stream ended. */
async function readEvents(body, onBytes, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", id: "", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return true;
    onBytes();
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (event.data.length) onEvent({ type: event.type, id: event.id, data: event.data.join("\n") });
        event = { type: "message", id: event.id, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") event.data.push(value);
      else if (field === "event") event.type = value;
      else if (field === "id") event.id = value;
    }
  }
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// -- the WebSocket gateway -----------------------------------------------------------------

const gateways = new Map(); // resolved ws:// URL -> Gateway: one socket per gateway per page

function ws(sub) {
  const address = websocketUrl(sub.opts.gatewayUrl);
  let gateway = gateways.get(address);
  if (!gateway) {
    gateway = new Gateway(address, sub.opts);
    gateways.set(address, gateway);
  }
  gateway.add(sub);
  sub.cleanup.push(() => gateway.remove(sub));
}

/** `url` resolved against the page; a TypeError naming `what` when it is not a URL. */
function resolveUrl(url, what = "url") {
  try {
    return new URL(String(url), globalThis.location ? globalThis.location.href : undefined);
  } catch {
    throw new TypeError(`${what}: not a URL: ${JSON.stringify(String(url))}`);
  }
}

function websocketUrl(url) {
  const resolved = resolveUrl(url, "gatewayUrl");
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved.href;
}

/** The path and query the gateway routes (it takes URLs of its own site only). */
function gatewayPath(url) {
  const resolved = new URL(url, globalThis.location ? globalThis.location.href : "http://localhost/");
  return resolved.pathname + resolved.search;
}

class Gateway {
  constructor(address, opts) {
    this.address = address;
    this.minDelay = opts.minDelay;
    this.maxDelay = opts.maxDelay;
    this.quietMs = opts.quietMs;
    this.quiet = null; // the timer of the quiet check, then of its probe's answer
    this.check = () => this.probe();
    this.subs = new Set();
    this.byId = new Map(); // message id -> subscription (first answer and private changes)
    this.nextId = 1;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
  }

  add(sub) {
    this.subs.add(sub);
    if (!this.socket && !this.timer) this.connect();
    else if (this.socket && this.socket.readyState === WebSocket.OPEN) this.subscribe(sub);
  }

  remove(sub) {
    if (!this.subs.delete(sub)) return;
    if (sub.wsId !== undefined) {
      this.byId.delete(sub.wsId);
      this.sendJson({ id: this.nextId++, unsubscribe: sub.wsId });
    }
    if (this.subs.size === 0) this.closeIfIdle();
  }

  /** Nobody left: close the socket and let the next live() open a fresh one. */
  closeIfIdle() {
    clearTimeout(this.timer);
    this.timer = null;
    this.unwatch();
    const socket = this.socket;
    // A socket still connecting is closed by its onopen instead: closing it now makes
    // Chromium log "WebSocket is closed before the connection is established", and a page
    // that subscribes again at once (React's StrictMode mounts, unmounts and mounts again)
    // would open a second socket instead of using this one.
    if (socket && socket.readyState === WebSocket.CONNECTING) return;
    if (socket) {
      this.socket = null;
      socket.close(1000);
    }
    if (gateways.get(this.address) === this) gateways.delete(this.address);
  }

  connect() {
    this.timer = null;
    const socket = new WebSocket(this.address);
    this.socket = socket;
    socket.onopen = () => {
      if (!this.subs.size) return this.closeIfIdle();
      this.heard();
      onlineChecks.add(this.check);
      for (const sub of this.subs) this.subscribe(sub);
    };
    socket.onmessage = (event) => {
      this.heard();
      this.receive(parseJson(event.data));
    };
    socket.onclose = (event) => {
      const reason = event.reason ? `: ${event.reason}` : "";
      this.lost(socket, `WebSocket ${this.address} closed (code ${event.code}${reason})`);
    };
  }

  /** The socket is gone (closed, or silent): reconnect after a backoff, subscribing again. */
  lost(socket, message) {
    if (this.socket !== socket) return;
    this.socket = null;
    this.unwatch();
    this.byId.clear();
    if (!this.subs.size) return this.closeIfIdle();
    const delay = backoffDelay(this.attempt++, this);
    // A failure that does not end the subscriptions: onError hears of it, as of a failed
    // request over the other transports (a wrong gatewayUrl showed only "reconnecting").
    // The browser tells no more than the close code (1006: closed without a close frame,
    // a refused handshake included).
    const error = new Error(message);
    for (const sub of this.subs) {
      sub.wsId = undefined;
      sub.fail(error);
      sub.setState(RECONNECTING, { attempt: this.attempt, delay, error });
    }
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Something arrived: the socket works; check it again after quietMs of silence. */
  heard() {
    clearTimeout(this.quiet);
    this.quiet = setTimeout(this.check, this.quietMs);
  }

  unwatch() {
    clearTimeout(this.quiet);
    this.quiet = null;
    onlineChecks.delete(this.check);
  }

  /** Ask the gateway for an answer (an unsubscribe of an id never used: answered at once,
   * nothing rendered); a socket that stays silent PROBE_MS longer counts as lost, and
   * closing it would wait for a close frame that never comes. */
  probe() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const id = this.nextId++;
    this.sendJson({ id, unsubscribe: id });
    clearTimeout(this.quiet);
    this.quiet = setTimeout(() => {
      this.lost(socket, `WebSocket ${this.address} silent for ${this.quietMs + PROBE_MS} ms`);
      socket.onclose = socket.onmessage = null;
      socket.close();
    }, PROBE_MS);
  }

  subscribe(sub) {
    // A fresh id on every (re)subscription, so a late message for an old one is ignored.
    const id = this.nextId++;
    sub.wsId = id;
    this.byId.set(id, sub);
    const message = { id, subscribe: gatewayPath(sub.url) };
    if (sub.opts.headers && Object.keys(sub.opts.headers).length) message.headers = sub.opts.headers;
    this.sendJson(message);
  }

  sendJson(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  receive(message) {
    if (!message || typeof message !== "object") return;
    if (message.event === "change") {
      // Private subscriptions' changes carry their id; shared ones are pushed once to every
      // subscriber of a URL and carry only that URL (the one the subscription was answered with).
      const targets = message.id !== undefined && message.id !== null
        ? [this.byId.get(message.id)]
        : [...this.subs].filter((sub) => sub.liveUrl === message.url);
      for (const sub of targets) if (sub) this.change(sub, message);
      return;
    }
    if (message.event === "end") {
      // The server ended the subscription (its credentials were revoked, or its Host is no
      // longer allowed): null with its status, then stopped, as SSE's final `event: error`
      // (nothing left to unsubscribe). A shared URL's end names the URL, not an id.
      const ended = message.id !== undefined && message.id !== null
        ? [this.byId.get(message.id)]
        : [...this.subs].filter((sub) => sub.liveUrl === message.url && sub.wsId !== undefined);
      for (const sub of ended) {
        if (!sub) continue;
        this.byId.delete(sub.wsId);
        sub.wsId = undefined;
        sub.end(new HttpError(message.status, message.error || message.data), message.status || 403);
      }
      return;
    }
    const sub = this.byId.get(message.id);
    if (!sub || message.unsubscribed !== undefined) return;
    if (message.status === 200) {
      this.attempt = 0;
      sub.attempt = 0;
      sub.liveUrl = message.url;
      sub.deliver(message.data, message.etag || null);
      return;
    }
    // Not subscribed on the server: nothing to unsubscribe when it stops.
    this.byId.delete(message.id);
    sub.wsId = undefined;
    if (isGone(message.status)) {
      sub.deliver(null, null, message.status);
    } else if (message.status >= 500) {
      // A server error can pass (a restart, a failing cache): subscribe again after a
      // backoff, as the other transports retry their requests.
      sub.fail(new HttpError(message.status, message.error || message.data));
      const delay = backoffDelay(sub.attempt++, sub.opts);
      sub.setState(RECONNECTING, { attempt: sub.attempt, delay });
      const cancel = () => clearTimeout(timer);
      const timer = setTimeout(() => {
        // Done with: a subscription refused with 5xx for hours kept a closure per retry.
        sub.cleanup = sub.cleanup.filter((undo) => undo !== cancel);
        if (this.subs.has(sub) && sub.wsId === undefined) this.subscribe(sub);
      }, delay);
      sub.cleanup.push(cancel);
    } else {
      // Refused (400 not a realtime URL, 401/403, 429 too many): report and stop; retrying
      // the same message on the same connection would be refused the same way.
      sub.fail(new HttpError(message.status, message.error || message.data));
      sub.stop();
    }
  }

  change(sub, message) {
    if (message.status === 200) sub.deliver(message.data, message.etag || null);
    else if (isGone(message.status)) sub.deliver(null, null, message.status);
    // A change that failed to render (a 500): the subscription stays and the next change
    // is rendered afresh, so onError hears of it and onChange keeps the last data, as the
    // other transports do while they retry (it gave onChange null, a deletion).
    else sub.fail(new HttpError(message.status, message.error || message.data));
  }
}

const TRANSPORTS = { longpoll, sse, ws };
