// Copies shardcast.js into the status page (src/server/status.html), which inlines it so that the
// page stays one file served from the binary. `node sync-status-page.mjs --check` only compares
// (exit 1 when they differ); test.sh runs the check. Takes milliseconds.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const page = join(here, "../../src/server/status.html");
const BEGIN = "// BEGIN shardcast.js (copied by clients/js/sync-status-page.mjs; edit that file, not this block)\n";
const END = "// END shardcast.js\n";
const lib = readFileSync(join(here, "shardcast.js"), "utf8");
const html = readFileSync(page, "utf8");
const a = html.indexOf(BEGIN), b = html.indexOf(END);
if (a < 0 || b < a) { console.error("status.html has no shardcast.js block"); process.exit(1); }
const synced = html.slice(0, a + BEGIN.length) + lib + html.slice(b);
if (process.argv.includes("--check")) {
  if (synced !== html) { console.error("status.html's copy of shardcast.js is stale: run node clients/js/sync-status-page.mjs"); process.exit(1); }
} else if (synced !== html) {
  writeFileSync(page, synced);
}
