// shardcast.js: a resilient client for the shardcast pub/sub server, for browsers and Node >= 18.
// An ES module with no dependencies and no build step; types in shardcast.d.ts; README.md beside it.

/** The client's states, in the order a connection goes through them. */
export const State = Object.freeze({
  Disconnected: "disconnected",
  Connecting: "connecting",
  Connected: "connected",
  Reconnecting: "reconnecting",
  Failed: "failed",
});

/** Close codes after which reconnecting cannot help (1008: auth refused or expired). */
export const STOP_CODES = Object.freeze([1002, 1003, 1007, 1008, 1009, 1010]);

/** A failed operation: `code` is the server's error code, or one of the client's own. */
export class ShardcastError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "ShardcastError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** The wait before attempt `n` (from 0): uniform in [0, min(max, base * factor^n)) ("full jitter"). */
export function backoffDelay(n, { base = 100, max = 10000, factor = 2 } = {}, random = Math.random) {
  const ceiling = Math.min(max, base * Math.pow(factor, Math.min(n, 1024)));
  return ceiling * random();
}

const encoder = new TextEncoder();
/** Characters of topic names (and their positions) one resubscribe message carries at most (one longer name goes alone). */
const RESUBSCRIBE_BYTES = 16 * 1024;
// Node 18 has Event and EventTarget but no global CustomEvent (it came in 19).
const CustomEvent = globalThis.CustomEvent ?? class extends Event {
  constructor(type, init = {}) { super(type); this.detail = init.detail ?? null; }
};
const OPEN = 1;

/**
 * One logical connection to a shardcast server that survives reconnects: it keeps the
 * subscriptions, an outgoing queue and the pending acknowledgements across connections.
 * Events (an EventTarget): "state" {state, reason}, "message" {topic, data, position}, "gap" {topic,
 * recovered, last, position}, "error" {code, message} for server errors not tied to a request.
 *
 * On the server's history topics (`--history`), every message has a position {offset, epoch}. The
 * client keeps each topic's last one and, after a reconnect, subscribes again from it (`recover`):
 * the server replays exactly the messages published meanwhile, after the "gap" event with
 * `recovered: true`, in offset order, then the live stream. `recovered: false` (the server
 * restarted, so the epoch changed; the missed messages are no longer all kept; or the topic has no
 * history) means messages may be missing; `position` is where the stream goes on from.
 */
export class ShardcastClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    const o = options;
    this.url = url;
    this.WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new ShardcastError("no_websocket", "no WebSocket: pass options.WebSocket (e.g. from the ws package)");
    this.token = o.token ?? null;
    this.tokenVia = o.tokenVia ?? "query";
    this.protocols = o.protocols;
    this.backoff = { base: 100, max: 10000, factor: 2, maxAttempts: Infinity, resetAfter: 5000, ...o.backoff };
    this.heartbeat = o.heartbeat === false ? null : { interval: 15000, timeout: 10000, ...o.heartbeat };
    this.queueLimits = { maxMessages: 1024, maxBytes: 1 << 20, ...o.queue };
    this.stopCodes = o.stopCodes ?? STOP_CODES;
    this.connectTimeout = o.connectTimeout ?? 5000;
    this.random = o.random ?? Math.random;

    this._state = State.Disconnected;
    this._ws = null;
    this._attempt = 0;
    this._connections = 0;
    this._nextId = 0;
    this._queue = [];
    this._queueBytes = 0;
    this._pending = new Map(); // id -> {resolve, reject, written, kind}
    // topic -> {handlers: Set, live: subscribed on an earlier connection, gap: resubscribed after a gap
    // (reported with the answer), position: {offset, epoch} | null (history topics)}
    this._subs = new Map();
    this._timers = new Set();
    this._stopped = false;
    this._metrics = { messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, reconnects: 0, errors: 0, duplicates: 0, skipped: 0, rttLast: null, rttSum: 0, rttCount: 0, lastMessageAt: null, connectedAt: null };
    if (o.autoConnect !== false) this.connect();
  }

  /** The current state. */
  get state() { return this._state; }

  /** Starts connecting (done by the constructor unless `autoConnect: false`). */
  connect() {
    if (this._ws || this._state === State.Connected) return;
    this._stopped = false;
    this._open();
  }

  /** Resolves when connected; rejects after `timeoutMs` or when the client fails. */
  connected(timeoutMs = 10000) {
    if (this._state === State.Connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.removeEventListener("state", on); reject(new ShardcastError("timeout", "not connected in time")); }, timeoutMs);
      const on = (ev) => {
        if (ev.detail.state === State.Connected) { clearTimeout(t); this.removeEventListener("state", on); resolve(); }
        else if (ev.detail.state === State.Failed || ev.detail.state === State.Disconnected) {
          clearTimeout(t); this.removeEventListener("state", on); reject(new ShardcastError("closed", `client ${ev.detail.state}: ${ev.detail.reason ?? ""}`));
        }
      };
      this.addEventListener("state", on);
    });
  }

  /**
   * Subscribes `handler(data, topic, position)` to `topic`; kept across reconnects (recovering, on a
   * history topic, what was published meanwhile). `position` is the message's {offset, epoch} on a
   * history topic, else null. While connected, resolves after the server's answer (rejects if it
   * refuses); while not, resolves at once and the topic is subscribed on the next connection.
   */
  async subscribe(topic, handler) {
    if (this._stopped && this._state !== State.Disconnected) throw new ShardcastError("closed", "client stopped");
    let sub = this._subs.get(topic);
    const isNew = !sub;
    if (isNew) { sub = { handlers: new Set(), live: this._state === State.Connected, gap: false, position: null }; this._subs.set(topic, sub); }
    const h = handler ?? (() => {});
    sub.handlers.add(h);
    const subscription = { topic, unsubscribe: () => this._unsubscribe(topic, h) };
    if (isNew && this._state === State.Connected) {
      try {
        await this._request((id) => ({ type: "subscribe", topics: [topic], id }), { wait: true });
      } catch (e) {
        if (e.code !== "connection_lost") { sub.handlers.delete(h); if (!sub.handlers.size) this._subs.delete(topic); throw e; }
      }
    }
    return subscription;
  }

  async _unsubscribe(topic, handler) {
    const sub = this._subs.get(topic);
    if (!sub) return;
    sub.handlers.delete(handler);
    if (sub.handlers.size) return;
    this._subs.delete(topic);
    if (this._state === State.Connected) {
      await this._request((id) => ({ type: "unsubscribe", topics: [topic], id }), { wait: false });
    }
  }

  /**
   * Publishes `data` (any JSON value) to `topic`. With `ack` (default true) resolves to
   * `{delivered}` once the server counted the subscribers; without, resolves once queued.
   * `wait` (default true): while disconnected, queue the message for the next connection;
   * false: reject with code "not_connected" instead. A full queue rejects with "queue_full".
   */
  publish(topic, data, { ack = true, wait = true } = {}) {
    return this._request((id) => ({ type: "publish", topic, data, ...(ack ? { id } : {}) }), { wait })
      .then((m) => (ack ? { delivered: m.delivered } : undefined));
  }

  /** Sends an application-level ping and resolves to the round-trip time in ms. */
  async ping() {
    const start = performance.now();
    await this._request((id) => ({ type: "ping", id }), { wait: false });
    return performance.now() - start;
  }

  /** Counters, now. */
  metrics() {
    const m = this._metrics;
    return {
      messagesIn: m.messagesIn, bytesIn: m.bytesIn, messagesOut: m.messagesOut, bytesOut: m.bytesOut,
      uptimeMs: m.connectedAt === null ? null : Date.now() - m.connectedAt,
      lastMessageAt: m.lastMessageAt,
      rttLastMs: m.rttLast, rttAvgMs: m.rttCount ? m.rttSum / m.rttCount : null,
      reconnects: m.reconnects, errors: m.errors, duplicates: m.duplicates, skipped: m.skipped,
      queueDepth: this._queue.length, queueBytes: this._queueBytes,
    };
  }

  /** The subscribed topics. */
  topics() { return [...this._subs.keys()].sort(); }

  /**
   * Where a subscribed history topic stands: {offset, epoch} of its last message, or the position
   * the server gave when it was subscribed; a reconnect recovers from it. null for a topic without
   * history, not subscribed, or not answered yet.
   */
  position(topic) {
    const p = this._subs.get(topic)?.position;
    return p ? { ...p } : null;
  }

  /**
   * Closes with 1000, stops reconnecting; pending requests reject with "closed". Returns the
   * messages still queued (never written), in order, as the JSON text they would have been sent
   * as, so that none is dropped unseen.
   */
  close() {
    this._stopped = true;
    this._clearTimers();
    const ws = this._ws;
    this._detach();
    if (ws) { try { ws.close(1000); } catch { /* already closing */ } }
    const unsent = this._queue.map((m) => m.text);
    this._queue = [];
    this._queueBytes = 0;
    this._failPending(() => true, "closed", "client closed");
    this._setState(State.Disconnected, "closed by the client");
    return unsent;
  }

  // ---- internals ----

  _setState(state, reason = null, retryIn = null) {
    this._state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, reason, attempt: this._attempt, connections: this._connections, retryIn } }));
  }

  _timer(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
    this._timers.add(t);
    return t;
  }

  _clearTimers() {
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
  }

  _open() {
    const waiting = this._connections ? State.Reconnecting : State.Connecting;
    // After a loss the state was announced with its reason when the wait began.
    if (this._state !== waiting) this._setState(waiting, this._lastReason ?? null);
    let url = this.url;
    if (this.token && this.tokenVia === "query") url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.token);
    let ws;
    try {
      const WebSocket = this.WebSocket;
      ws = this.protocols ? new WebSocket(url, this.protocols) : new WebSocket(url);
    } catch (e) {
      this._failed(`cannot open: ${e.message}`, false);
      return;
    }
    this._ws = ws;
    const openTimer = this._timer(() => { if (this._ws === ws && ws.readyState !== OPEN) this._lost(ws, "connect timeout"); }, this.connectTimeout);
    ws.onopen = () => { clearTimeout(openTimer); this._timers.delete(openTimer); this._onOpen(ws); };
    ws.onmessage = (ev) => this._onMessage(ws, ev.data);
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      const reason = ev.code === 1006 ? "connection lost (1006)" : `server closed with ${ev.code} ${ev.reason || ""}`.trim();
      if (this.stopCodes.includes(ev.code)) this._failed(reason, true);
      else this._lost(ws, reason);
    };
  }

  _onOpen(ws) {
    this._connections += 1;
    if (this._connections > 1) this._metrics.reconnects += 1;
    this._openedAt = Date.now();
    this._metrics.connectedAt = this._openedAt;
    if (this.token && this.tokenVia === "auth") this._write(ws, { type: "auth", token: this.token });
    const topics = [...this._subs.keys()].sort();
    for (const t of topics) {
      const sub = this._subs.get(t);
      // Reported when the answer arrives (once, even if several connections fail before it).
      if (sub.live) sub.gap = true;
      sub.live = true;
    }
    // In messages of at most about RESUBSCRIBE_BYTES of names and positions: the server refuses a
    // message over its max_message_size (64 KiB by default) as a whole. Topics with a position are
    // asked to be recovered from it.
    const size = (t) => { const p = this._subs.get(t).position; return t.length + 3 + (p ? t.length + p.epoch.length + 40 : 0); };
    for (let start = 0; start < topics.length;) {
      let end = start, bytes = 0;
      while (end < topics.length && (end === start || bytes + size(topics[end]) <= RESUBSCRIBE_BYTES)) {
        bytes += size(topics[end]);
        end += 1;
      }
      const chunk = topics.slice(start, end);
      const msg = { type: "subscribe", topics: chunk };
      for (const t of chunk) {
        const p = this._subs.get(t).position;
        if (p) (msg.recover ??= {})[t] = { offset: p.offset, epoch: p.epoch };
      }
      const id = ++this._nextId;
      msg.id = id;
      // Kept until the connection ends: errors for topics it refused follow its answer, same id.
      this._pending.set(id, { kind: "resubscribe", written: true, resolve: () => {}, reject: () => {} });
      this._write(ws, msg);
      start = end;
    }
    this._lastReason = null;
    this._setState(State.Connected);
    this._flush();
    this._schedulePing(ws);
  }

  _schedulePing(ws) {
    if (!this.heartbeat) return;
    this._timer(() => {
      if (this._ws !== ws) return;
      const id = ++this._nextId;
      const sent = performance.now();
      const dead = this._timer(() => { if (this._ws === ws) this._lost(ws, `heartbeat: no pong within ${this.heartbeat.timeout} ms`); }, this.heartbeat.timeout);
      this._pending.set(id, {
        kind: "heartbeat", written: true,
        resolve: () => {
          clearTimeout(dead); this._timers.delete(dead);
          const rtt = performance.now() - sent;
          this._metrics.rttLast = rtt; this._metrics.rttSum += rtt; this._metrics.rttCount += 1;
          this._schedulePing(ws);
        },
        reject: () => { clearTimeout(dead); this._timers.delete(dead); },
      });
      this._write(ws, { type: "ping", id });
    }, this.heartbeat.interval);
  }

  _onMessage(ws, raw) {
    if (this._ws !== ws) return;
    const text = typeof raw === "string" ? raw : String(raw);
    this._metrics.messagesIn += 1;
    this._metrics.bytesIn += text.length;
    this._metrics.lastMessageAt = Date.now();
    let m;
    try { m = JSON.parse(text); } catch { this._metrics.errors += 1; return; }
    if (m.type === "message") {
      const sub = this._subs.get(m.topic);
      const position = typeof m.offset === "number" && typeof m.epoch === "string" ? { offset: m.offset, epoch: m.epoch } : null;
      if (sub && position) {
        const last = sub.position;
        // Delivered already (the server sends none; dropped and counted should one arrive).
        if (last && last.epoch === position.epoch) {
          if (position.offset <= last.offset) { this._metrics.duplicates += 1; return; }
          // Offsets missing on the open connection (the server's `drop` slow-consumer policy skips
          // messages for a subscriber too far behind); counted, not recovered.
          this._metrics.skipped += position.offset - last.offset - 1;
        }
        sub.position = position;
      }
      if (sub) for (const h of [...sub.handlers]) { try { h(m.data, m.topic, position && { ...position }); } catch (e) { queueMicrotask(() => { throw e; }); } }
      this.dispatchEvent(new CustomEvent("message", { detail: { topic: m.topic, data: m.data, position: position && { ...position } } }));
      return;
    }
    const p = typeof m.id === "number" ? this._pending.get(m.id) : undefined;
    if (m.type === "error") {
      this._metrics.errors += 1;
      if (p && p.kind !== "resubscribe") {
        this._pending.delete(m.id);
        p.reject(new ShardcastError(m.code, m.message, { topics: m.topics }));
      } else {
        this.dispatchEvent(new CustomEvent("error", { detail: m }));
      }
      return;
    }
    if (m.type === "subscribed" && Array.isArray(m.topics)) this._subscribed(m.topics, m.streams ?? {});
    if (p && p.kind !== "resubscribe") { this._pending.delete(m.id); p.resolve(m); }
  }

  /**
   * A `subscribed` answer: takes the positions it gives and reports the gap of each topic
   * resubscribed after one. A position is taken only where the stream goes on from it: not after
   * `recovered: true` (the replayed messages follow and advance it), nor over one in the same epoch
   * when the topic was subscribed again on the same connection.
   */
  _subscribed(topics, streams) {
    for (const t of topics) {
      const sub = this._subs.get(t);
      if (!sub) continue;
      const s = Object.hasOwn(streams, t) ? streams[t] : null;
      const last = sub.position;
      const given = s && typeof s.offset === "number" && typeof s.epoch === "string" ? { offset: s.offset, epoch: s.epoch } : null;
      if (given && (s.recovered === false || (s.recovered === undefined && (!last || last.epoch !== given.epoch)))) sub.position = given;
      if (sub.gap) {
        sub.gap = false;
        const detail = { topic: t, recovered: s?.recovered === true, last: last && { ...last }, position: given && { ...given } };
        this.dispatchEvent(new CustomEvent("gap", { detail }));
      }
    }
  }

  /** Queues `make(id)` (written at once when connected); resolves with the reply when it has an id. */
  _request(make, { wait = true } = {}) {
    if (this._stopped) return Promise.reject(new ShardcastError("closed", "client stopped"));
    if (!wait && this._state !== State.Connected) return Promise.reject(new ShardcastError("not_connected", "not connected"));
    const id = ++this._nextId;
    const msg = make(id);
    const text = JSON.stringify(msg);
    const bytes = encoder.encode(text).length;
    if (this._queue.length >= this.queueLimits.maxMessages || this._queueBytes + bytes > this.queueLimits.maxBytes) {
      return Promise.reject(new ShardcastError("queue_full", "outgoing queue full", { queued: this._queue.length, queuedBytes: this._queueBytes }));
    }
    const hasId = "id" in msg;
    const promise = hasId
      ? new Promise((resolve, reject) => this._pending.set(id, { kind: "user", written: false, resolve, reject }))
      : Promise.resolve(undefined);
    this._queue.push({ text, bytes, id: hasId ? id : null });
    this._queueBytes += bytes;
    this._flush();
    return promise;
  }

  _flush() {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN || this._state !== State.Connected) return;
    while (this._queue.length) {
      const item = this._queue.shift();
      this._queueBytes -= item.bytes;
      if (item.id !== null) { const p = this._pending.get(item.id); if (p) p.written = true; }
      ws.send(item.text);
      this._metrics.messagesOut += 1;
      this._metrics.bytesOut += item.bytes;
    }
  }

  _write(ws, msg) {
    const text = JSON.stringify(msg);
    ws.send(text);
    this._metrics.messagesOut += 1;
    this._metrics.bytesOut += text.length;
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (ws) { ws.onopen = ws.onmessage = ws.onclose = null; ws.onerror = () => {}; }
    return ws;
  }

  _failPending(pred, code, message) {
    for (const [id, p] of this._pending) {
      if (pred(p)) { this._pending.delete(id); p.reject(new ShardcastError(code, message)); }
    }
  }

  /** A connection (or attempt) ended: forget it at once (a dead socket may take long to close) and retry. */
  _lost(ws, reason) {
    if (this._ws !== ws) return;
    this._detach();
    this._clearTimers();
    // A dead connection is dropped, not closed politely: a half-open peer never answers.
    try { if (typeof ws.terminate === "function") ws.terminate(); else ws.close(); } catch { /* gone */ }
    this._ended(reason);
    if (this._stopped) return;
    if (this._attempt >= this.backoff.maxAttempts) { this._failed(`gave up after ${this._attempt} attempts; last: ${reason}`, false); return; }
    const delay = backoffDelay(this._attempt, this.backoff, this.random);
    this._attempt += 1;
    this._lastReason = reason;
    this._setState(this._connections ? State.Reconnecting : State.Connecting, reason, delay);
    this._timer(() => { if (!this._stopped) this._open(); }, delay);
  }

  _ended(reason) {
    this._metrics.errors += 1;
    if (this._openedAt !== undefined) {
      if (Date.now() - this._openedAt >= this.backoff.resetAfter) this._attempt = 0;
      this._openedAt = undefined;
    }
    this._metrics.connectedAt = null;
    this._failPending((p) => p.written && p.kind === "user", "connection_lost", `connection lost before the answer: ${reason}`);
    this._failPending((p) => p.kind !== "user", "connection_lost", reason);
  }

  _failed(reason, wasOpen) {
    const ws = this._detach();
    this._clearTimers();
    if (ws) { try { ws.close(); } catch { /* gone */ } }
    if (wasOpen) this._ended(reason);
    this._stopped = true;
    this._failPending(() => true, "closed", `client failed: ${reason}`);
    this._setState(State.Failed, reason);
  }
}
