// Headless Chromium driven over the DevTools protocol (with `ws`), for the client tests:
// `const b = await launch(timeoutMs)` starts it with a fresh profile and attaches to its page;
// `b.call(method, params)`, `b.evaluate(expr)` (by value), `b.until(expr)` (polls until truthy or
// the timeout) drive it; `await b.close()` kills it (by PID) and removes the profile.
// Needs `chromium` (Debian) on PATH or in $CHROMIUM.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";

export async function launch(timeout) {
  const profile = mkdtempSync(join(tmpdir(), "shardcast-chromium-"));
  const browser = spawn(process.env.CHROMIUM || "chromium", [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
    "--remote-debugging-port=0", `--user-data-dir=${profile}`, "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  const exited = new Promise((r) => browser.once("exit", r));
  let cdp = null;
  // The profile is removed once the browser has gone: it writes there until then.
  const close = async () => {
    if (cdp) cdp.close();
    browser.kill("SIGKILL");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    try { rmSync(profile, { recursive: true, force: true, maxRetries: 5 }); } catch { /* a temp dir left behind */ }
  };
  try {
    const devtools = await new Promise((resolve, reject) => {
      let err = "";
      browser.stderr.on("data", (d) => {
        err += d;
        const m = err.match(/DevTools listening on (ws:\/\/[^\s]+)/);
        if (m) resolve(m[1]);
      });
      browser.once("exit", (code) => reject(new Error(`chromium exited ${code}: ${err}`)));
    });
    const port = new URL(devtools).port;
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    const page = targets.find((t) => t.type === "page");
    cdp = new WebSocket(page.webSocketDebuggerUrl);
    await new Promise((r) => cdp.once("open", r));
  } catch (e) {
    await close();
    throw e;
  }
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
  const evaluate = async (expr) =>
    (await call("Runtime.evaluate", { expression: expr, returnByValue: true, awaitPromise: true })).result?.result?.value;
  const until = async (expr) => {
    const start = Date.now();
    while (Date.now() - start < timeout) {
      const v = await evaluate(expr);
      if (v) return v;
      await new Promise((r) => setTimeout(r, 50));
    }
    return null;
  };
  return { call, evaluate, until, close };
}
