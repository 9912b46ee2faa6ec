// Verifies the status page in headless Chromium (DevTools protocol over `ws`): the page connects
// over WebSocket, shows live statistics, and a message published with HTTP appears in its DOM;
// a publish made from the page's form is acknowledged. Usage: node test_chromium.mjs HOST:PORT
// [SCREENSHOT.png]. Needs `chromium` (Debian) on PATH or in $CHROMIUM. Ends with 'N passed, N failed'.
import { writeFileSync } from "node:fs";
import { launch } from "./chromium.mjs";

const ADDR = process.argv[2];
const SHOT = process.argv[3];
const TIMEOUT = 15000;
let passed = 0, failed = 0;
function check(name, cond, detail) {
  if (cond) passed++; else failed++;
  console.log((cond ? "ok   " : "FAIL ") + name + (cond ? "" : ": " + JSON.stringify(detail)));
}

let browser = null;
const watchdog = setTimeout(async () => { console.log("FAIL timed out"); if (browser) await browser.close(); process.exit(1); }, 60000);

try {
  browser = await launch(TIMEOUT);
  const { call, evaluate } = browser;
  const until = (_what, expr) => browser.until(expr);

  await call("Page.enable");
  await call("Page.navigate", { url: `http://${ADDR}/` });
  const status = await until("connected", "document.getElementById('status')?.textContent === 'connected' && 'connected'");
  check("page connects over WebSocket", status === "connected", status);
  const conns = await until("stats", "(() => { const t = document.getElementById('conns')?.textContent; return t && t !== '-' ? t : null })()");
  check("page shows live connections from $sys.stats", Number(conns) >= 1, conns);
  const rows = await evaluate("document.querySelectorAll('#cores tr').length");
  check("page shows one row per core", rows >= 1, rows);

  // Publish with HTTP until the page's subscription to "demo" is in place.
  let delivered = 0;
  const start = Date.now();
  while (delivered < 1 && Date.now() - start < TIMEOUT) {
    const r = await fetch(`http://${ADDR}/api/publish`, { method: "POST", headers: { "Content-Type": "application/json" }, body: '{"topic":"demo","data":{"from":"curl"}}' });
    delivered = (await r.json()).delivered;
    if (delivered < 1) await new Promise((r) => setTimeout(r, 50));
  }
  check("HTTP publish reaches the page", delivered >= 1, delivered);
  const line = await until("log", `[...document.querySelectorAll('#log .entry')].map(e => e.textContent).find(t => t === 'demo: {"from":"curl"}')`);
  check("published message appears in the DOM", line === 'demo: {"from":"curl"}', line);

  await evaluate(`document.getElementById('data').value = '{"from":"page"}'; document.querySelector('#pub button').click(); true`);
  const own = await until("own", `[...document.querySelectorAll('#log .entry')].map(e => e.textContent).find(t => t === 'demo: {"from":"page"}')`);
  check("a publish from the page comes back to it", !!own, own);
  const ack = await until("ack", `[...document.querySelectorAll('#log .entry')].map(e => e.textContent).find(t => t.startsWith('published, delivered to'))`);
  check("the page's publish is acknowledged", ack === "published, delivered to 1", ack);

  if (SHOT) {
    const shot = await call("Page.captureScreenshot", { format: "png" });
    writeFileSync(SHOT, Buffer.from(shot.result.data, "base64"));
  }
} catch (e) {
  failed++;
  console.log("FAIL " + e.message);
}
clearTimeout(watchdog);
if (browser) await browser.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
