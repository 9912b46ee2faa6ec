// A pub/sub WebSocket server on Node.js and the `ws` package, for
// side-by-side benchmarks with shardcast: a Map of topic -> Set of sockets,
// each delivery serialised once per publish.
//
// It speaks what the loadgen scenarios send: shardcast's subscribe,
// unsubscribe and publish (PROTOCOL.md) and the websocket-shootout's echo
// and broadcast. Anything else is ignored.
//
//   node server.mjs --port 9001 [--deflate]
//
// --deflate turns on permessage-deflate as ws does it: zlib per connection
// with context takeover, messages from 128 bytes (shardcast's threshold).

import { createRequire } from "node:module";
import { WebSocketServer, WebSocket } from "ws";

const wsVersion = createRequire(import.meta.url)("ws/package.json").version;

function portFromArgs() {
  const i = process.argv.indexOf("--port");
  const port = i >= 0 ? Number(process.argv[i + 1]) : 9001;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error(`--port ${process.argv[i + 1]}: not a port`);
    process.exit(2);
  }
  return port;
}

/** @type {Map<string, Set<WebSocket>>} */
const topics = new Map();
/** The topics each socket holds, for the cleanup when it closes. */
const held = new WeakMap();

// Text frames from a Buffer: the bytes are encoded once, not once per send.
const TEXT = { binary: false };

function send(ws, bytes) {
  if (ws.readyState === WebSocket.OPEN) ws.send(bytes, TEXT);
}

function subscribe(ws, list) {
  const mine = held.get(ws);
  for (const t of list) {
    mine.add(t);
    let set = topics.get(t);
    if (!set) topics.set(t, (set = new Set()));
    set.add(ws);
  }
}

function unsubscribe(ws, list) {
  const mine = held.get(ws);
  for (const t of list) {
    if (!mine.delete(t)) continue;
    const set = topics.get(t);
    if (!set) continue;
    set.delete(ws);
    if (set.size === 0) topics.delete(t);
  }
}

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: portFromArgs(),
  perMessageDeflate: process.argv.includes("--deflate") ? { threshold: 128 } : false,
  // ws keeps wss.clients, which the shootout broadcast goes to.
  clientTracking: true,
});

wss.on("connection", (ws) => {
  held.set(ws, new Set());
  ws.on("error", () => {});
  ws.on("close", () => unsubscribe(ws, [...held.get(ws)]));
  ws.on("message", (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    switch (msg.type) {
      case "subscribe":
      case "unsubscribe": {
        const list = Array.isArray(msg.topics)
          ? msg.topics.filter((t) => typeof t === "string")
          : [];
        if (msg.type === "subscribe") subscribe(ws, list);
        else unsubscribe(ws, list);
        const reply = {
          type: msg.type === "subscribe" ? "subscribed" : "unsubscribed",
          topics: list,
        };
        if (msg.id !== undefined) reply.id = msg.id;
        send(ws, Buffer.from(JSON.stringify(reply)));
        break;
      }
      case "publish": {
        if (typeof msg.topic !== "string" || msg.data === undefined) return;
        const set = topics.get(msg.topic);
        if (!set) return;
        const out = Buffer.from(
          JSON.stringify({ type: "message", topic: msg.topic, data: msg.data }),
        );
        for (const sub of set) send(sub, out);
        break;
      }
      case "echo":
        send(ws, data);
        break;
      case "broadcast": {
        const payload = msg.payload === undefined ? null : msg.payload;
        const out = Buffer.from(JSON.stringify({ type: "broadcast", payload }));
        for (const c of wss.clients) send(c, out);
        send(ws, Buffer.from(JSON.stringify({ type: "broadcastResult", payload })));
        break;
      }
    }
  });
});

wss.on("listening", () => {
  const a = wss.address();
  console.error(`peer-node-ws (node ${process.version}, ws ${wsVersion}) on ws://${a.address}:${a.port}/`);
});
