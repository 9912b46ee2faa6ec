// Types for shardcast.js, the shardcast pub/sub client for browsers and Node >= 18.

/** The client's states. */
export declare const State: {
  readonly Disconnected: "disconnected";
  readonly Connecting: "connecting";
  readonly Connected: "connected";
  readonly Reconnecting: "reconnecting";
  readonly Failed: "failed";
};
export type StateName = (typeof State)[keyof typeof State];

/** Close codes after which the client stops instead of reconnecting. */
export declare const STOP_CODES: readonly number[];

/** The wait in ms before attempt `n` (from 0): uniform in [0, min(max, base * factor^n)). */
export declare function backoffDelay(
  n: number,
  policy?: { base?: number; max?: number; factor?: number },
  random?: () => number,
): number;

/** A failed operation: `code` is the server's error code (`forbidden`, `rate_limited`, ...)
 * or the client's own: `queue_full`, `not_connected`, `connection_lost`, `closed`, `timeout`. */
export declare class ShardcastError extends Error {
  code: string;
  topics?: string[];
  queued?: number;
  queuedBytes?: number;
}

/** Anything JSON.stringify turns into JSON. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface Options {
  /** The WebSocket constructor; default `globalThis.WebSocket` (browsers, Node >= 22). */
  WebSocket?: unknown;
  /** A JWT; sent as `?token=` (default) or in an `auth` message. */
  token?: string | null;
  tokenVia?: "query" | "auth";
  protocols?: string | string[];
  /** Reconnect schedule, ms. Defaults: base 100, max 10000, factor 2, maxAttempts Infinity, resetAfter 5000. */
  backoff?: { base?: number; max?: number; factor?: number; maxAttempts?: number; resetAfter?: number };
  /** Application-level ping every `interval` ms; dead after `timeout` ms without the pong.
   * Defaults: 15000 and 10000; `false` disables. */
  heartbeat?: { interval?: number; timeout?: number } | false;
  /** Outgoing queue bounds. Defaults: 1024 messages, 1 MiB. */
  queue?: { maxMessages?: number; maxBytes?: number };
  /** Close codes that stop reconnecting. Default: STOP_CODES. */
  stopCodes?: number[];
  /** ms an attempt may take to open. Default 5000. */
  connectTimeout?: number;
  /** Uniform [0, 1) source for the jitter. Default Math.random. */
  random?: () => number;
  /** Connect in the constructor. Default true. */
  autoConnect?: boolean;
}

/** Where a history topic's stream stands: an offset within an epoch of the server's history. */
export interface Position {
  offset: number;
  epoch: string;
}

export interface GapDetail {
  topic: string;
  /** true: the messages published since `last` follow, in offset order, then the live stream.
   * false: messages may be missing (no history, another epoch, or no longer all kept). */
  recovered: boolean;
  /** The client's position before the gap (history topics). */
  last: Position | null;
  /** The position the server gave: after `recovered: true` the replay ends there;
   * after false the stream goes on from it. null for a topic without history. */
  position: Position | null;
}

export interface Subscription {
  readonly topic: string;
  /** Removes this handler; the server is told when it was the topic's last. */
  unsubscribe(): Promise<void>;
}

export interface Metrics {
  messagesIn: number;
  bytesIn: number;
  messagesOut: number;
  bytesOut: number;
  uptimeMs: number | null;
  lastMessageAt: number | null;
  rttLastMs: number | null;
  rttAvgMs: number | null;
  reconnects: number;
  errors: number;
  /** Messages of history topics dropped as already delivered (offset not beyond the topic's position). */
  duplicates: number;
  /** Messages of history topics known missing on an open connection: offsets skipped between two
   * messages of one epoch (the server's `drop` slow-consumer policy); not recovered. */
  skipped: number;
  queueDepth: number;
  queueBytes: number;
}

export interface StateDetail {
  state: StateName;
  reason: string | null;
  attempt: number;
  connections: number;
  /** After a failure: the ms the client waits before its next attempt (the backoff's draw); else null. */
  retryIn: number | null;
}

export declare class ShardcastClient extends EventTarget {
  constructor(url: string, options?: Options);
  readonly url: string;
  readonly state: StateName;
  connect(): void;
  connected(timeoutMs?: number): Promise<void>;
  subscribe(topic: string, handler?: (data: Json, topic: string, position: Position | null) => void): Promise<Subscription>;
  publish(topic: string, data: Json, options?: { ack?: true; wait?: boolean }): Promise<{ delivered: number }>;
  publish(topic: string, data: Json, options: { ack: false; wait?: boolean }): Promise<undefined>;
  ping(): Promise<number>;
  metrics(): Metrics;
  topics(): string[];
  /** A subscribed history topic's last position (a reconnect recovers from it); null otherwise. */
  position(topic: string): Position | null;
  /** Stops; returns the messages never written, in order, as JSON text. */
  close(): string[];
  addEventListener(type: "state", listener: (ev: CustomEvent<StateDetail>) => void): void;
  addEventListener(type: "message", listener: (ev: CustomEvent<{ topic: string; data: Json; position: Position | null }>) => void): void;
  addEventListener(type: "gap", listener: (ev: CustomEvent<GapDetail>) => void): void;
  addEventListener(type: "error", listener: (ev: CustomEvent<{ code: string; message: string; topics?: string[] }>) => void): void;
}
