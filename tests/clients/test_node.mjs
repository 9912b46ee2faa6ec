// Verifies the shardcast server with a real Node client (`ws`): subscribe, publish across cores,
// the published ack, HTTP publish, JWT-free errors. Usage: node test_node.mjs HOST:PORT
// (run by tests/clients/run.sh against an anonymous server). Ends with 'N passed, N failed'.
import WebSocket from "ws";

const ADDR = process.argv[2];
const TIMEOUT = 10000;
let passed = 0, failed = 0;

function check(name, cond, detail) {
  if (cond) passed++; else failed++;
  console.log((cond ? "ok   " : "FAIL ") + name + (cond ? "" : ": " + JSON.stringify(detail)));
}

// A client whose messages queue up, so none is lost between awaits.
function open(path = "/ws") {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${ADDR}${path}`);
    const queue = [], waiters = [];
    ws.on("message", (data) => {
      const text = data.toString();
      if (waiters.length) waiters.shift()(text); else queue.push(text);
    });
    ws.next = () => new Promise((res, rej) => {
      if (queue.length) return res(queue.shift());
      const t = setTimeout(() => rej(new Error("timed out")), TIMEOUT);
      waiters.push((m) => { clearTimeout(t); res(m); });
    });
    ws.ask = async (msg) => { ws.send(typeof msg === "string" ? msg : JSON.stringify(msg)); return JSON.parse(await ws.next()); };
    // Every connection starts with a welcome naming its session.
    ws.once("open", () => ws.next().then((t) => {
      ws.welcome = JSON.parse(t);
      if (ws.welcome.type !== "welcome") reject(new Error(`expected a welcome first, got ${t}`));
      else resolve(ws);
    }, reject));
    ws.once("error", reject);
  });
}

async function activePerCore() {
  const text = await (await fetch(`http://${ADDR}/metrics`)).text();
  return text.split("\n").filter((l) => l.startsWith("shardcast_connections_active{")).map((l) => Number(l.split(" ").pop()));
}

const subs = [];
let perCore = [];
while (subs.length < 64) {
  subs.push(await open());
  perCore = await activePerCore();
  if (subs.length >= 4 && perCore.every((v) => v > 0)) break;
}
check("clients spread over every core", perCore.every((v) => v > 0), perCore);
for (const s of subs) {
  const r = await s.ask({ type: "subscribe", topics: ["node"], id: 1 });
  if (r.type !== "subscribed") throw new Error(JSON.stringify(r));
}
const pub = await open();
const data = '[1, {"k" : "v"}, 2e3]';
const ack = await pub.ask(`{"type":"publish","topic":"node","data":${data},"id":7}`);
check("published ack counts every core", ack.type === "published" && ack.id === 7 && ack.delivered === subs.length, ack);
const got = await Promise.all(subs.map((s) => s.next()));
check("data arrives byte for byte", got.every((g) => g === `{"type":"message","topic":"node","data":${data}}`), got[0]);

const resp = await fetch(`http://${ADDR}/api/publish`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify([{ topic: "node", data: "a" }, { topic: "node", data: "b" }]) });
const body = await resp.json();
check("HTTP batch publish answers per message", resp.status === 200 && body.delivered === 2 * subs.length, body);
const a = await Promise.all(subs.map((s) => s.next()));
const b = await Promise.all(subs.map((s) => s.next()));
check("batch arrives in order", a.every((m) => JSON.parse(m).data === "a") && b.every((m) => JSON.parse(m).data === "b"), [a[0], b[0]]);

const e1 = await pub.ask("not json");
check("malformed JSON gets bad_request", e1.type === "error" && e1.code === "bad_request", e1);
const e2 = await pub.ask({ type: "subscribe", topics: ["x".repeat(1000)], id: 2 });
check("overlong topic gets bad_request", e2.type === "error" && e2.code === "bad_request" && e2.id === 2, e2);
const pong = await pub.ask({ type: "ping", id: "p" });
check("connection survives errors", pong.type === "pong" && pong.id === "p", pong);

for (const s of [...subs, pub]) s.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
