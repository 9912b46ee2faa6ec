// Verifies in headless Chromium that the status page (served by the server, with the JavaScript client inlined) connects,
// draws live charts from $sys.stats, lists the busiest topics, shows a publish made with HTTP and acknowledges its own,
// and reconnects by itself when the server restarts. Also checks that the page's copy of shardcast.js is current.
// Needs Debian's chromium (or $CHROMIUM); skipped when it is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { ShardcastClient } from "../shardcast.js";
import { startServer, freePort } from "./support.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const here = dirname(fileURLToPath(import.meta.url));

test("the status page's copy of shardcast.js is the current one", () => {
  execFileSync(process.execPath, [join(here, "../sync-status-page.mjs"), "--check"]);
});

test("the status page in headless Chromium", { skip: !existsSync(CHROMIUM) && "no chromium" }, async () => {
  const port = await freePort();
  let server = await startServer(port, ["--stats-interval-ms", "200"]);
  const profile = mkdtempSync(join(tmpdir(), "shardcast-chromium-"));
  const browser = spawn(CHROMIUM, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-port=0",
    `--user-data-dir=${profile}`, "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise((r) => browser.once("exit", r));
  const others = [];
  let cdp;
  try {
    const devtools = await new Promise((resolve, reject) => {
      let err = "";
      const t = setTimeout(() => reject(new Error("chromium did not start in 20 s: " + err)), 20000);
      browser.stderr.on("data", (d) => {
        err += d;
        const m = err.match(/DevTools listening on (ws:\/\/[^\s]+)/);
        if (m) { clearTimeout(t); resolve(m[1]); }
      });
      browser.once("exit", (code) => { clearTimeout(t); reject(new Error(`chromium exited ${code}: ${err}`)); });
    });
    const targets = await (await fetch(`http://127.0.0.1:${new URL(devtools).port}/json/list`)).json();
    cdp = new WebSocket(targets.find((t) => t.type === "page").webSocketDebuggerUrl);
    await new Promise((r) => cdp.once("open", r));
    let seq = 0;
    const pending = new Map();
    cdp.on("message", (d) => {
      const m = JSON.parse(d.toString());
      if (m.id && pending.has(m.id)) { pending.get(m.id)(m); pending.delete(m.id); }
    });
    const call = (method, params = {}) => new Promise((resolve) => {
      const id = ++seq;
      pending.set(id, resolve);
      cdp.send(JSON.stringify({ id, method, params }));
    });
    const evaluate = async (expr) => (await call("Runtime.evaluate", { expression: expr, returnByValue: true })).result?.result?.value;
    const until = async (what, expr, ms = 15000) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const v = await evaluate(expr);
        if (v) return v;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error("timed out waiting for " + what);
    };

    await call("Page.enable");
    await call("Page.navigate", { url: `http://${server.addr}/` });
    await until("connected", "document.getElementById('status')?.textContent === 'connected'");
    // Three other clients on one topic, so it leads the ranking.
    for (let i = 0; i < 3; i++) {
      const c = new ShardcastClient(server.url, { WebSocket });
      others.push(c);
      await c.connected();
      await c.subscribe("busy");
    }
    // A ranking can be drawn between two of the subscribes: wait for the
    // one that counts all three (a timeout fails the test).
    const top = await until("the busiest topic with its 3 subscribers", "(() => { const r = document.querySelector('#topics tr.topic'); return r && r.cells[0].textContent === 'busy' && r.cells[1].textContent === '3' ? r.cells[1].textContent : null })()");
    assert.equal(top, "3");
    // The charts have samples: several stats messages drew lines with total and per-core values.
    const samples = await until("chart samples", "(() => { const n = document.querySelectorAll('#legend span').length; const px = document.getElementById('chart-connections').toDataURL().length; return n >= 3 && px > 2000 ? n : null })()");
    assert.ok(samples >= 3, "total + 2 cores in the legend");
    const conns = await evaluate("document.getElementById('conns').textContent");
    assert.ok(Number(conns) >= 4, conns);

    const r = await fetch(`http://${server.addr}/api/publish`, { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"topic":"demo","data":{"from":"curl"}}' });
    assert.equal((await r.json()).delivered, 1);
    await until("HTTP publish in the log", `[...document.querySelectorAll('#log .entry')].some(e => e.textContent === 'demo: {"from":"curl"}')`);
    await evaluate(`document.getElementById('data').value = '{"from":"page"}'; document.querySelector('#pub button').click(); true`);
    await until("own publish acknowledged", `[...document.querySelectorAll('#log .entry')].some(e => e.textContent === 'published, delivered to 1')`);

    // Restart the server on the same port: the page's client reconnects and resubscribes by itself.
    await server.stop();
    await until("the page saw the loss", "document.getElementById('status').textContent !== 'connected'");
    server = await startServer(port, ["--stats-interval-ms", "200"]);
    await until("reconnected", "document.getElementById('status').textContent === 'connected' && window.shardcast.metrics().reconnects >= 1");
    const r2 = await fetch(`http://${server.addr}/api/publish`, { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"topic":"demo","data":{"after":"restart"}}' });
    assert.equal((await r2.json()).delivered, 1, "the page is subscribed again");
    await until("message after restart", `[...document.querySelectorAll('#log .entry')].some(e => e.textContent === 'demo: {"after":"restart"}')`);
  } finally {
    for (const c of others) c.close();
    if (cdp) cdp.close();
    browser.kill("SIGKILL");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    try { rmSync(profile, { recursive: true, force: true, maxRetries: 5 }); } catch { /* a temp dir left behind */ }
    await server.stop().catch(() => {});
  }
});
