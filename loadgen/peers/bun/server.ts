// A pub/sub WebSocket server on Bun.serve and Bun's built-in topics
// (ws.subscribe / server.publish), for side-by-side benchmarks with shardcast.
//
// It speaks what the loadgen scenarios send: shardcast's subscribe,
// unsubscribe and publish (PROTOCOL.md) and the websocket-shootout's echo
// and broadcast. Anything else is ignored.
//
//   node_modules/bun/bin/bun.exe server.ts --port 9001 [--deflate]
//
// --deflate turns on permessage-deflate with Bun's shared compressor
// (one compressor per thread, no context takeover) and shared decompressor.

import type { ServerWebSocket } from "bun";

// Every connection is subscribed to this topic for the shootout broadcast;
// the leading NUL keeps it apart from any topic a client can name in a
// valid message of the benchmarks.
const ALL = "\u0000all";

function portFromArgs(): number {
  const i = Bun.argv.indexOf("--port");
  const port = i >= 0 ? Number(Bun.argv[i + 1]) : 9001;
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    console.error(`--port ${Bun.argv[i + 1]}: not a port`);
    process.exit(2);
  }
  return port;
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: portFromArgs(),
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: Bun.argv.includes("--deflate")
      ? { compress: "shared", decompress: "shared" }
      : false,
    open(ws: ServerWebSocket<undefined>) {
      ws.subscribe(ALL);
    },
    message(ws: ServerWebSocket<undefined>, raw: string | Buffer) {
      if (typeof raw !== "string") return;
      let msg: any;
      try {
        msg = JSON.parse(raw);
      } catch {
        return;
      }
      if (msg === null || typeof msg !== "object") return;
      switch (msg.type) {
        case "subscribe":
        case "unsubscribe": {
          const topics: string[] = Array.isArray(msg.topics)
            ? msg.topics.filter((t: unknown) => typeof t === "string")
            : [];
          for (const t of topics) {
            if (msg.type === "subscribe") ws.subscribe(t);
            else ws.unsubscribe(t);
          }
          const reply: Record<string, unknown> = {
            type: msg.type === "subscribe" ? "subscribed" : "unsubscribed",
            topics,
          };
          if (msg.id !== undefined) reply.id = msg.id;
          ws.send(JSON.stringify(reply));
          break;
        }
        case "publish": {
          if (typeof msg.topic !== "string" || msg.data === undefined) return;
          // server.publish reaches every subscriber, the sender included
          // (ws.publish would leave the sender out).
          server.publish(
            msg.topic,
            JSON.stringify({ type: "message", topic: msg.topic, data: msg.data }),
          );
          break;
        }
        case "echo":
          ws.send(raw);
          break;
        case "broadcast": {
          const payload = msg.payload === undefined ? null : msg.payload;
          server.publish(ALL, JSON.stringify({ type: "broadcast", payload }));
          ws.send(JSON.stringify({ type: "broadcastResult", payload }));
          break;
        }
      }
    },
  },
});

console.error(`peer-bun ${Bun.version} on ws://${server.hostname}:${server.port}/`);
