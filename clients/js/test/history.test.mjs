// Verifies, against a server started with --history, that the JavaScript client tracks each history topic's position
// and recovers from it after a reconnect: a subscriber whose connection is cut (through the TCP proxy) while another
// client publishes gets every message exactly once, in offset order, with gap events saying recovered: true; after a
// server restart (a new epoch), or more missed messages than --max-recovery, the gap says recovered: false with the
// position the stream goes on from; a replay cut short by another cut is recovered from where it stopped.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { ShardcastClient, State } from "../shardcast.js";
import { startServer, startProxy, freePort, until, nextState } from "./support.mjs";

const HISTORY = ["--history", "hist.*=10000,300", "--publish-rate", "100000", "--publish-burst", "100000"];
const opts = (extra = {}) => ({ WebSocket, backoff: { base: 50, max: 200 }, heartbeat: { interval: 300, timeout: 400 }, queue: { maxMessages: 100000, maxBytes: 16 << 20 }, ...extra });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a subscriber cut while another client publishes gets every message exactly once, in offset order", async () => {
  const server = await startServer(0, [...HISTORY, "--max-recovery", "10000"]);
  const proxy = await startProxy(server.addr);
  const sub = new ShardcastClient(proxy.url, opts());
  const pub = new ShardcastClient(server.url, opts());
  let streaming = true;
  try {
    await Promise.all([sub.connected(), pub.connected()]);
    const got = [];
    const gaps = [];
    // The gap comes before the replayed messages: note how many had arrived.
    sub.addEventListener("gap", (ev) => gaps.push({ ...ev.detail, at: got.length }));
    await sub.subscribe("hist.cut", (data, _topic, position) => got.push({ data, position }));
    const epoch = sub.position("hist.cut")?.epoch;
    assert.ok(epoch, "the answer gave a position");
    assert.deepEqual(sub.position("hist.cut"), { offset: 0, epoch });

    // The publisher streams numbered messages through every cut, over a connection never cut.
    let n = 0;
    const publishing = (async () => {
      while (streaming) {
        for (let i = 0; i < 5; i++) pub.publish("hist.cut", ++n, { ack: false });
        await sleep(5);
      }
    })();
    for (let cut = 1; cut <= 3; cut++) {
      // 100 messages after the last gap's replay, then cut, and refuse reconnects for a while so
      // that messages are certainly missed.
      const since = cut === 1 ? 0 : gaps[cut - 2].position.offset;
      await until(() => got.length >= since + 100, 10000, `100 messages before cut ${cut}`);
      proxy.refuse(true);
      const lost = nextState(sub, State.Reconnecting);
      proxy.cut("reset");
      await lost;
      await sleep(300);
      proxy.refuse(false);
      await until(() => gaps.length === cut, 10000, `gap ${cut}`);
    }
    await until(() => got.length >= gaps[2].position.offset + 100, 10000, "the stream after the last gap");
    streaming = false;
    await publishing;
    const last = n;
    await until(() => got.length >= last, 10000, `all ${last} messages`);
    await sleep(200);

    assert.deepEqual(got.map((m) => m.data), Array.from({ length: last }, (_, i) => i + 1), "every message once, in order");
    assert.ok(got.every((m, i) => m.position.offset === i + 1 && m.position.epoch === epoch), "offsets 1, 2, 3, ... in one epoch");
    assert.equal(gaps.length, 3);
    for (const g of gaps) {
      assert.equal(g.topic, "hist.cut");
      assert.equal(g.recovered, true, JSON.stringify(g));
      assert.deepEqual(g.last, got[g.at - 1].position, "the last position seen before the gap");
      assert.ok(g.position.epoch === epoch && g.position.offset > g.last.offset, "messages were missed");
    }
    assert.deepEqual(sub.position("hist.cut"), { offset: last, epoch });
    const m = sub.metrics();
    assert.equal(m.reconnects, 3);
    assert.equal(m.duplicates, 0);
    assert.equal(m.skipped, 0);
    console.log(`${last} messages, gaps after ${gaps.map((g) => `${g.at}..${g.position.offset}`).join(", ")}`);
  } finally { streaming = false; sub.close(); pub.close(); await proxy.close(); await server.stop(); }
});

test("a server restart starts a new epoch: the gap is not recovered and the stream goes on from the new position", async () => {
  const port = await freePort();
  let server = await startServer(port, HISTORY);
  const sub = new ShardcastClient(server.url, opts());
  const pub = new ShardcastClient(server.url, opts());
  try {
    await Promise.all([sub.connected(), pub.connected()]);
    const got = [];
    const gaps = [];
    sub.addEventListener("gap", (ev) => gaps.push({ ...ev.detail, at: got.length }));
    await sub.subscribe("hist.restart", (data, _topic, position) => got.push({ data, position }));
    const old = sub.position("hist.restart").epoch;
    for (let i = 1; i <= 5; i++) await pub.publish("hist.restart", i);
    await until(() => got.length === 5, 5000, "5 messages");
    assert.deepEqual(got.at(-1), { data: 5, position: { offset: 5, epoch: old } });

    await server.stop();
    server = await startServer(port, HISTORY);
    await until(() => gaps.length === 1, 10000, "the gap");
    const [gap] = gaps;
    assert.equal(gap.recovered, false, "another epoch: nothing to recover");
    assert.deepEqual(gap.last, { offset: 5, epoch: old });
    assert.notEqual(gap.position.epoch, old, "a restart starts a new epoch");
    assert.deepEqual(sub.position("hist.restart"), gap.position);
    await until(() => pub.state === State.Connected, 10000, "the publisher back");
    assert.deepEqual(await pub.publish("hist.restart", 6), { delivered: 1 });
    await until(() => got.length === 6, 5000, "the message after the restart");
    assert.deepEqual(got[5], { data: 6, position: { offset: gap.position.offset + 1, epoch: gap.position.epoch } });
    assert.equal(gap.at, 5, "the gap came before it");
    assert.equal(sub.metrics().duplicates, 0);
  } finally { sub.close(); pub.close(); await server.stop(); }
});

test("more missed messages than one recovery returns: not recovered, the stream goes on from the position given", async () => {
  const server = await startServer(0, [...HISTORY, "--max-recovery", "10"]);
  const proxy = await startProxy(server.addr);
  const sub = new ShardcastClient(proxy.url, opts());
  const pub = new ShardcastClient(server.url, opts());
  try {
    await Promise.all([sub.connected(), pub.connected()]);
    const got = [];
    const gaps = [];
    sub.addEventListener("gap", (ev) => gaps.push(ev.detail));
    await sub.subscribe("hist.many", (data, _topic, position) => got.push({ data, position }));
    const epoch = sub.position("hist.many").epoch;
    proxy.refuse(true);
    const lost = nextState(sub, State.Reconnecting);
    proxy.cut("reset");
    await lost;
    for (let i = 1; i < 50; i++) pub.publish("hist.many", i, { ack: false });
    await pub.publish("hist.many", 50);
    proxy.refuse(false);
    await until(() => gaps.length === 1, 10000, "the gap");
    assert.deepEqual(gaps, [{ topic: "hist.many", recovered: false, last: { offset: 0, epoch }, position: { offset: 50, epoch } }]);
    await pub.publish("hist.many", 51);
    await until(() => got.length === 1, 5000, "the next message");
    assert.deepEqual(got, [{ data: 51, position: { offset: 51, epoch } }], "nothing of the history, then live");
  } finally { sub.close(); pub.close(); await proxy.close(); await server.stop(); }
});

test("a replay cut short is recovered from where it stopped", async () => {
  const server = await startServer(0, [...HISTORY, "--max-recovery", "10000"]);
  const proxy = await startProxy(server.addr);
  const sub = new ShardcastClient(proxy.url, opts());
  const pub = new ShardcastClient(server.url, opts());
  try {
    await Promise.all([sub.connected(), pub.connected()]);
    const got = [];
    const gaps = [];
    sub.addEventListener("gap", (ev) => gaps.push({ ...ev.detail, at: got.length }));
    await sub.subscribe("hist.replay", (data, _topic, position) => got.push({ data, position }));
    const epoch = sub.position("hist.replay").epoch;
    const cut = async () => {
      proxy.refuse(true);
      const lost = nextState(sub, State.Reconnecting);
      proxy.cut("reset");
      await lost;
    };
    await cut();
    const N = 3000;
    for (let i = 1; i < N; i++) pub.publish("hist.replay", i, { ack: false });
    await pub.publish("hist.replay", N);
    // Cut again as soon as the first gap arrives, while the replay is (most likely) still arriving.
    const first = new Promise((resolve) => sub.addEventListener("gap", () => resolve(), { once: true }));
    proxy.refuse(false);
    await first;
    await cut();
    proxy.refuse(false);
    await until(() => got.length >= N, 10000, `all ${N} messages`);
    assert.equal(gaps.length, 2);
    assert.deepEqual(gaps[0], { topic: "hist.replay", recovered: true, last: { offset: 0, epoch }, position: { offset: N, epoch }, at: 0 });
    const { at } = gaps[1];
    assert.deepEqual(gaps[1], { topic: "hist.replay", recovered: true, last: { offset: at, epoch }, position: { offset: N, epoch }, at });
    assert.deepEqual(got.map((m) => [m.data, m.position.offset]), Array.from({ length: N }, (_, i) => [i + 1, i + 1]), "every message once, in offset order");
    assert.equal(sub.metrics().duplicates, 0);
    assert.equal(sub.metrics().skipped, 0);
    console.log(`the first replay delivered ${at} of ${N} before the cut`);
  } finally { sub.close(); pub.close(); await proxy.close(); await server.stop(); }
});
