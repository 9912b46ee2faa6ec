// Verifies that the JavaScript client, against a real shardcast server, publishes and subscribes with acks as promises,
// queues while offline and flushes in order, reconnects after a server restart and after cut connections (RST, silent
// drop caught by the heartbeat, half-open), resubscribes and reports gaps, stops on 1008, and that its backoff is full jitter.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { ShardcastClient, State, backoffDelay } from "../shardcast.js";
import { startServer, startProxy, freePort, until, nextState } from "./support.mjs";

const FAST = ["--publish-rate", "100000", "--publish-burst", "100000"];
const opts = (extra = {}) => ({ WebSocket, backoff: { base: 50, max: 400 }, heartbeat: { interval: 300, timeout: 400 }, ...extra });

test("backoff is full jitter over a growing, capped window", () => {
  assert.equal(backoffDelay(0, {}, () => 0.5), 50);
  assert.equal(backoffDelay(3, {}, () => 0.5), 400);
  assert.equal(backoffDelay(20, {}, () => 0.999), 9990);
  assert.equal(backoffDelay(2, { base: 10, factor: 3, max: 1000 }, () => 1), 90);
  const draws = Array.from({ length: 10000 }, () => backoffDelay(0));
  assert.ok(draws.every((d) => d >= 0 && d < 100));
  const low = draws.filter((d) => d < 10).length, high = draws.filter((d) => d >= 90).length;
  assert.ok(low > 800 && low < 1200 && high > 800 && high < 1200, `${low} ${high}`);
});

test("the reconnect schedule follows the injected random source and stops after maxAttempts", async () => {
  const port = await freePort(); // nothing listens: every attempt fails
  const draws = [];
  const c = new ShardcastClient(`ws://127.0.0.1:${port}/ws`, opts({
    backoff: { base: 20, max: 1000, maxAttempts: 3 },
    random: () => { draws.push(1); return 0.5; },
    autoConnect: false,
  }));
  const states = [];
  c.addEventListener("state", (ev) => states.push(ev.detail));
  c.connect();
  const failed = await nextState(c, State.Failed);
  assert.match(failed.reason, /gave up after 3 attempts/);
  assert.equal(draws.length, 3);
  assert.deepEqual(states.filter((s) => s.state === State.Connecting).map((s) => s.attempt), [0, 1, 2, 3]);
  // Each wait announced is the draw: half of 20, 40, 80 ms.
  assert.deepEqual(states.filter((s) => s.retryIn !== null).map((s) => s.retryIn), [10, 20, 40]);
});

test("close hands back what was never sent and rejects its acknowledgements", async () => {
  const port = await freePort(); // nothing listens: the queue only fills
  const c = new ShardcastClient(`ws://127.0.0.1:${port}/ws`, opts());
  const a = c.publish("q", 1, { ack: false });
  const b = c.publish("q", 2);
  await a;
  assert.equal(c.metrics().queueDepth, 2);
  const unsent = c.close();
  assert.deepEqual(unsent.map((t) => JSON.parse(t).data), [1, 2]);
  await assert.rejects(b, (e) => e.code === "closed");
  assert.equal(c.metrics().queueDepth, 0);
  assert.deepEqual(c.close(), [], "a second close has nothing left");
});

test("publish and subscribe with acknowledgements as promises", async () => {
  const server = await startServer(0, FAST);
  const a = new ShardcastClient(server.url, opts());
  const b = new ShardcastClient(server.url, opts());
  try {
    await Promise.all([a.connected(), b.connected()]);
    const got = [];
    await b.subscribe("news", (data) => got.push(data));
    assert.deepEqual(await a.publish("news", { n: 1 }), { delivered: 1 });
    await until(() => got.length === 1, 5000, "delivery");
    assert.deepEqual(got, [{ n: 1 }]);
    await assert.rejects(a.publish("$sys.x", 1), (e) => e.code === "forbidden");
    assert.ok((await a.ping()) >= 0);
    assert.deepEqual(b.topics(), ["news"]);
    const m = b.metrics();
    assert.ok(m.messagesIn >= 2 && m.uptimeMs >= 0 && m.lastMessageAt > 0);
  } finally { a.close(); b.close(); await server.stop(); }
});

test("messages sent while down wait in a bounded queue and are flushed in order", async () => {
  const server = await startServer(0, FAST);
  const proxy = await startProxy(server.addr);
  proxy.refuse(true);
  const pub = new ShardcastClient(proxy.url, opts({ queue: { maxMessages: 20, maxBytes: 10000 } }));
  const sub = new ShardcastClient(server.url, opts());
  try {
    await until(() => pub.metrics().errors >= 2, 10000, "refused attempts");
    await assert.rejects(pub.publish("q", 0, { wait: false }), (e) => e.code === "not_connected");
    const acks = [];
    for (let i = 0; i < 20; i++) acks.push(pub.publish("q", i));
    await assert.rejects(pub.publish("q", 20), (e) => e.code === "queue_full" && e.queued === 20);
    assert.equal(pub.metrics().queueDepth, 20);
    const got = [];
    await sub.connected();
    await sub.subscribe("q", (d) => got.push(d));
    proxy.refuse(false);
    const delivered = await Promise.all(acks);
    assert.ok(delivered.every((d) => d.delivered === 1));
    await until(() => got.length === 20, 5000, "20 messages");
    assert.deepEqual(got, [...Array(20).keys()]);
    assert.equal(pub.metrics().queueDepth, 0);
  } finally { pub.close(); sub.close(); await proxy.close(); await server.stop(); }
});

test("a server restart: reconnect, resubscribe, a gap reported, order kept", async () => {
  const port = await freePort();
  let server = await startServer(port, FAST);
  const url = server.url;
  const pub = new ShardcastClient(url, opts({ queue: { maxMessages: 100000 } }));
  const sub = new ShardcastClient(url, opts());
  try {
    await Promise.all([pub.connected(), sub.connected()]);
    const got = [];
    const gaps = [];
    sub.addEventListener("gap", (ev) => gaps.push(ev.detail));
    await sub.subscribe("seq", (d) => got.push(d));
    let n = 0;
    const pump = setInterval(() => { pub.publish("seq", n++, { ack: false }).catch(() => {}); }, 2);
    await until(() => got.length >= 30, 5000, "first messages");
    const lost = nextState(sub, State.Reconnecting);
    await server.stop();
    const why = await lost;
    assert.match(why.reason, /1001/);
    server = await startServer(port, FAST);
    await until(() => sub.state === State.Connected && pub.state === State.Connected, 10000, "both reconnected");
    await until(() => got.length > 0 && got[got.length - 1] > n - 50 && n > 0, 10000, "the stream resumes");
    clearInterval(pump);
    const final = await pub.publish("seq", -1);
    assert.equal(final.delivered, 1, "subscribed again on the new server");
    await until(() => got.includes(-1), 5000, "the final message");
    got.pop();
    assert.ok(got.every((v, i) => i === 0 || v > got[i - 1]), "in order, none twice");
    assert.deepEqual(gaps, [{ topic: "seq", recovered: false, last: null, position: null }], "no history: nothing recovered");
    assert.equal(sub.metrics().reconnects, 1);
  } finally { pub.close(); sub.close(); await server.stop(); }
});

for (const how of ["reset", "silent", "halfopen"]) {
  test(`a connection cut (${how}) is noticed, and the client comes back`, async () => {
    const server = await startServer(0, FAST);
    const proxy = await startProxy(server.addr);
    const c = new ShardcastClient(proxy.url, opts());
    const pub = new ShardcastClient(server.url, opts());
    try {
      await Promise.all([c.connected(), pub.connected()]);
      const got = [];
      await c.subscribe("t", (d) => got.push(d));
      const lost = nextState(c, State.Reconnecting);
      const cutAt = Date.now();
      proxy.cut(how);
      const why = await lost;
      const noticed = why.at - cutAt;
      if (how === "reset") {
        assert.ok(noticed < 300, `an RST needs no heartbeat: ${noticed} ms`);
      } else {
        assert.match(why.reason, /heartbeat/);
        assert.ok(noticed < 300 + 400 + 500, `within interval + timeout (+ slack): ${noticed} ms`);
      }
      await nextState(c, State.Connected);
      await until(async () => { await pub.publish("t", how); return got.includes(how); }, 5000, "delivery after reconnect");
    } finally { c.close(); pub.close(); await proxy.close(); await server.stop(); }
  });
}

test("close code 1008 (auth deadline) stops the client in Failed", async () => {
  const server = await startServer(0, ["--jwt-secret", "s3cret", "--auth-timeout-secs", "1"]);
  const c = new ShardcastClient(server.url, opts());
  try {
    const failed = await nextState(c, State.Failed, 10000);
    assert.match(failed.reason, /1008/);
    await assert.rejects(c.publish("x", 1), (e) => e.code === "closed");
  } finally { c.close(); await server.stop(); }
});

test("the server ranks the busiest topics on $sys.topics", async () => {
  const server = await startServer(0, ["--stats-interval-ms", "100"]);
  const clients = [0, 1, 2].map(() => new ShardcastClient(server.url, opts()));
  try {
    await Promise.all(clients.map((c) => c.connected()));
    for (const c of clients) await c.subscribe("hot");
    await clients[0].subscribe("cold");
    let last = null;
    await clients[0].subscribe("$sys.topics", (d) => { last = d; });
    const ranking = await until(() => last && last.topics.find((t) => t.topic === "cold") && last, 5000, "a ranking");
    assert.deepEqual(ranking.topics[0], { topic: "hot", subscribers: 3 });
    assert.ok(ranking.topics.some((t) => t.topic === "cold" && t.subscribers === 1));
    clients[1].close(); clients[2].close();
    await until(() => last.topics.find((t) => t.topic === "hot")?.subscribers === 1, 5000, "counts follow disconnects");
  } finally { for (const c of clients) c.close(); await server.stop(); }
});

test("700 long topics, more than one message holds, all come back after a reconnect", async () => {
  const server = await startServer(0, FAST);
  const proxy = await startProxy(server.addr);
  const c = new ShardcastClient(proxy.url, opts());
  const pub = new ShardcastClient(server.url, opts());
  try {
    await Promise.all([c.connected(), pub.connected()]);
    const got = new Set();
    const topics = Array.from({ length: 700 }, (_, i) => `${String(i).padStart(4, "0")}.${"t".repeat(115)}`);
    for (const t of topics) await c.subscribe(t, (_d, topic) => got.add(topic));
    const errors = [];
    c.addEventListener("error", (ev) => errors.push(ev.detail));
    proxy.cut("reset");
    await nextState(c, State.Connected);
    for (const t of [topics[0], topics[350], topics[699]]) {
      await until(async () => { await pub.publish(t, 1); return got.has(t); }, 5000, `delivery on ${t.slice(0, 4)}`);
    }
    assert.deepEqual(errors, []);
  } finally { c.close(); pub.close(); await proxy.close(); await server.stop(); }
});
