// Shared by the tests: a real shardcast server process (started and killed by its PID), and a TCP proxy that cuts connections.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import net from "node:net";

export const BIN = process.env.SHARDCAST_BIN;
if (!BIN) throw new Error("set SHARDCAST_BIN to the shardcast binary (test.sh does)");

/** A free loopback port. */
export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/** Starts the server on 127.0.0.1:port (0: any) and resolves once its JSON log names the address (at most 20 s). */
export async function startServer(port = 0, extra = []) {
  const proc = spawn(BIN, ["--listen", `127.0.0.1:${port}`, "--cores", "2", "--no-pin", "--log-format", "json", ...extra], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const exited = new Promise((r) => proc.once("exit", r));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not log its address in 20 s")), 20000);
    createInterface({ input: proc.stdout }).on("line", (line) => {
      try {
        const a = JSON.parse(line).fields?.addr;
        if (a) { clearTimeout(timer); resolve(a); }
      } catch { /* not JSON */ }
    });
    proc.once("exit", (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}`)); });
  });
  return {
    addr,
    url: `ws://${addr}/ws`,
    /** SIGTERM: the server closes every connection with 1001; resolves on exit (at most 10 s). */
    async stop() {
      proc.kill("SIGTERM");
      await Promise.race([exited, new Promise((_, rej) => setTimeout(() => rej(new Error("no exit after SIGTERM")), 10000))]);
    },
    async kill() { proc.kill("SIGKILL"); await exited; },
  };
}

/** A loopback proxy to `upstream` ("host:port"): `cut("reset" | "silent" | "halfopen")` acts on open connections. */
export async function startProxy(upstream) {
  const conns = new Set();
  let refuse = false;
  const server = net.createServer((client) => {
    if (refuse) { client.resetAndDestroy(); return; }
    const [host, port] = upstream.split(":");
    const up = net.connect(Number(port), host);
    const c = { client, up, mode: "pass" };
    conns.add(c);
    client.on("data", (d) => { if (c.mode === "pass") up.write(d); });
    up.on("data", (d) => { if (c.mode === "pass") client.write(d); });
    const end = () => { conns.delete(c); if (c.mode === "pass") { client.destroy(); up.destroy(); } };
    client.on("close", end); up.on("close", end);
    client.on("error", () => {}); up.on("error", () => {});
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    addr,
    url: `ws://${addr}/ws`,
    refuse(on) { refuse = on; },
    cut(how) {
      for (const c of conns) {
        if (how === "reset") { c.mode = "reset"; c.client.resetAndDestroy(); c.up.resetAndDestroy(); }
        else if (how === "silent") { c.mode = "silent"; } // forward nothing, close nothing
        else if (how === "halfopen") { c.mode = "halfopen"; c.up.destroy(); } // the client's side stays open, unanswered
      }
    },
    async close() {
      for (const c of conns) { c.client.destroy(); c.up.destroy(); }
      await new Promise((r) => server.close(r));
    },
  };
}

/** Resolves when `cond()` is truthy, polling every 20 ms; rejects after `ms`. */
export async function until(cond, ms = 10000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next "state" event whose state is `state`. */
export function nextState(client, state, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { client.removeEventListener("state", on); reject(new Error(`no ${state} in ${ms} ms`)); }, ms);
    const on = (ev) => { if (ev.detail.state === state) { clearTimeout(t); client.removeEventListener("state", on); resolve({ ...ev.detail, at: Date.now() }); } };
    client.addEventListener("state", on);
  });
}
