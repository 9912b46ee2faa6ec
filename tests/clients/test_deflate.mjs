// Verifies permessage-deflate with real JavaScript clients against a server started with
// `--compression shared`: Node `ws` clients with and without `perMessageDeflate` and a page in
// headless Chromium (which always offers it) subscribe to one topic; messages published over HTTP
// and from a compressing Node client reach all of them whole and in order, and /metrics shows one
// compression per publish. Usage: node test_deflate.mjs HOST:PORT [--no-chromium].
// Ends with 'N passed, N failed'.
import WebSocket from "ws";
import { launch } from "./chromium.mjs";

const ADDR = process.argv[2];
const CHROMIUM = !process.argv.includes("--no-chromium");
const TIMEOUT = 15000;
let passed = 0, failed = 0;
function check(name, cond, detail) {
  if (cond) passed++; else failed++;
  console.log((cond ? "ok   " : "FAIL ") + name + (cond ? "" : ": " + JSON.stringify(detail)));
}

// A client whose messages queue up, so none is lost between awaits.
function open(perMessageDeflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${ADDR}/ws`, { perMessageDeflate });
    const queue = [], waiters = [];
    ws.on("message", (data) => {
      const m = JSON.parse(data.toString());
      if (waiters.length) waiters.shift()(m); else queue.push(m);
    });
    ws.next = () => new Promise((res, rej) => {
      if (queue.length) return res(queue.shift());
      const t = setTimeout(() => rej(new Error("timed out")), TIMEOUT);
      waiters.push((m) => { clearTimeout(t); res(m); });
    });
    // Every connection starts with a welcome naming its session.
    ws.once("open", () => ws.next().then((m) => {
      if (m.type !== "welcome") reject(new Error(`expected a welcome first, got ${JSON.stringify(m)}`));
      else resolve(ws);
    }, reject));
    ws.once("error", reject);
  });
}

async function counter(name) {
  const text = await (await fetch(`http://${ADDR}/metrics`)).text();
  return text.split("\n").filter((l) => l.startsWith(name + "{") || l.startsWith(name + " "))
    .reduce((a, l) => a + Number(l.split(" ").pop()), 0);
}

const payload = (i) => ({ seq: i, rows: Array.from({ length: 24 }, (_, k) => ({ sym: `S${String(k).padStart(3, "0")}`, bid: 100 + (k % 7) })) });

let browser = null;
const watchdog = setTimeout(async () => { console.log("FAIL timed out"); if (browser) await browser.close(); process.exit(1); }, 90000);
try {
  // threshold 0: ws compresses everything it sends, so the server inflates the publishes.
  const zipped = [await open({ threshold: 0 }), await open({ threshold: 0 })];
  const plain = [await open(false), await open(false)];
  check("ws negotiates permessage-deflate", zipped.every((w) => w.extensions.startsWith("permessage-deflate")), zipped[0].extensions);
  check("ws without it gets no extension", plain.every((w) => w.extensions === ""), plain[0].extensions);
  for (const [i, w] of [...zipped, ...plain].entries()) {
    w.send(JSON.stringify({ type: "subscribe", topics: ["z"], id: i }));
    const r = await w.next();
    check(`ws client ${i} subscribed`, r.type === "subscribed", r);
  }

  let page = 0;
  if (CHROMIUM) {
    browser = await launch(TIMEOUT);
    await browser.call("Page.enable");
    await browser.call("Page.navigate", { url: `http://${ADDR}/healthz` });
    await browser.until("document.readyState === 'complete'");
    const ext = await browser.evaluate(`new Promise((resolve) => {
      const ws = new WebSocket("ws://${ADDR}/ws");
      window.got = [];
      ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === "message") window.got.push(m.data); else if (m.type === "subscribed") resolve(ws.extensions); };
      ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", topics: ["z"], id: 1 }));
      ws.onerror = () => resolve("error");
    })`);
    check("Chromium negotiates permessage-deflate", typeof ext === "string" && ext.startsWith("permessage-deflate"), ext);
    page = 1;
  }

  const publisher = await open({ threshold: 0 });
  const before = [await counter("shardcast_compressions_total"), await counter("shardcast_messages_out_compressed_total")];
  const sent = [];
  for (let i = 0; i < 10; i++) {
    const data = payload(i);
    sent.push(data);
    if (i % 2 === 0) {
      publisher.send(JSON.stringify({ type: "publish", topic: "z", data }));
    } else {
      await fetch(`http://${ADDR}/api/publish`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ topic: "z", data }) });
    }
    // One at a time, so HTTP and WebSocket publishes keep their order.
    const m = await plain[0].next();
    check(`publish ${i} reaches a plain ws subscriber`, JSON.stringify(m.data) === JSON.stringify(data), m);
  }
  for (const [n, w] of [...zipped, plain[1]].entries()) {
    const got = [];
    for (let k = 0; k < sent.length; k++) got.push((await w.next()).data);
    check(`ws subscriber ${n} gets every publish whole and in order`, JSON.stringify(got) === JSON.stringify(sent), got[0]);
  }
  if (CHROMIUM) {
    const got = await browser.until(`window.got.length >= ${sent.length} && JSON.stringify(window.got)`);
    check("Chromium gets every publish whole and in order", got === JSON.stringify(sent), got && got.slice(0, 80));
  }
  const after = [await counter("shardcast_compressions_total"), await counter("shardcast_messages_out_compressed_total")];
  check("one compression per publish", after[0] - before[0] === sent.length, [before, after]);
  check("every compressing subscriber got compressed frames", after[1] - before[1] === sent.length * (zipped.length + page), [before, after]);
  for (const w of [...zipped, ...plain, publisher]) w.close();
} catch (e) {
  failed++;
  console.log("FAIL " + e.message);
}
clearTimeout(watchdog);
if (browser) await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
