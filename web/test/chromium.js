// Loads the page (web/index.html?auto) in headless Chromium with a WebGPU adapter (SwiftShader,
// Chromium's CPU Vulkan), runs the demo, the heat map and the standard benchmark through the
// page's own buttons' code, and saves a full-page screenshot. Drives Chromium over the DevTools
// protocol; serves web/ itself.
//
//   deno run --allow-net --allow-read --allow-write --allow-run --allow-env web/test/chromium.js \
//       [OUT.png] [--runs N] [--kernels auto,flash]
//
// Without --kernels the page chooses: the planner's kernels, or three-pass on SwiftShader.
//
// Exits non-zero when Chromium has no adapter, a demo case fails or a benchmark shape errors.
// CHROMIUM: the browser binary (default `chromium`).

const args = [...Deno.args];
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const [, value] = args.splice(i, 2);
  return value;
};
const runs = opt("--runs", "1");
const kernels = opt("--kernels", null);
const pagePath = opt("--page", "index.html");
const out = args[0] ?? "target/web/page.png";
const root = new URL("../", import.meta.url);

const types = {
  html: "text/html",
  js: "text/javascript",
  css: "text/css",
  wasm: "application/wasm",
  json: "application/json",
};
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
  const path = new URL(req.url).pathname.replace(/^\/+/, "") || "index.html";
  if (path.includes("..")) return new Response("no", { status: 403 });
  try {
    const body = await Deno.readFile(new URL(path, root));
    const ext = path.split(".").pop();
    return new Response(body, {
      headers: { "content-type": types[ext] ?? "application/octet-stream" },
    });
  } catch {
    return new Response("not found", { status: 404 });
  }
});
const page = `http://127.0.0.1:${server.addr.port}/${pagePath}?auto&runs=${runs}` +
  (kernels ? `&kernels=${kernels}&kernel=${kernels.split(",")[0]}` : "");

const profile = await Deno.makeTempDir({ prefix: "wgattn-chromium-" });
const browser = new Deno.Command(Deno.env.get("CHROMIUM") ?? "chromium", {
  args: [
    "--headless=new",
    "--no-sandbox",
    "--no-first-run",
    "--disable-gpu-sandbox",
    `--user-data-dir=${profile}`,
    "--remote-debugging-port=0",
    // WebGPU on SwiftShader (Vulkan on the CPU): no GPU, no display needed.
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    // SwiftShader compiles the larger kernels for longer than the GPU watchdog allows.
    "--disable-gpu-watchdog",
    "--window-size=1100,900",
    "about:blank",
  ],
  stderr: "piped",
  stdout: "null",
}).spawn();

/** The DevTools websocket address Chromium prints on stderr. */
async function devtoolsPort() {
  const reader = browser.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    const m = text.match(/DevTools listening on ws:\/\/[^:]+:(\d+)\//);
    if (m) {
      // Keep draining stderr (Chromium must never block on it); GPU process messages are kept
      // for the report.
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const line of value.split("\n")) {
            if (/gpu|vulkan|swiftshader|dawn|webgpu|lost|crash/i.test(line)) gpuLog.push(line);
          }
        }
      })();
      return m[1];
    }
  }
  throw new Error(`Chromium did not start:\n${text}`);
}

let status = 1;
const gpuLog = [];
try {
  const port = await devtoolsPort();
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const target = targets.find((t) => t.type === "page");
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((ok, fail) => {
    ws.onopen = ok;
    ws.onerror = fail;
  });
  let id = 0;
  const pending = new Map();
  ws.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    } else if (msg.method === "Runtime.consoleAPICalled") {
      console.log(
        `  console.${msg.params.type}:`,
        msg.params.args.map((a) => a.value ?? a.description).join(" "),
      );
    } else if (msg.method === "Runtime.exceptionThrown") {
      console.log("  exception:", msg.params.exceptionDetails.exception?.description);
    }
  };
  const send = (method, params = {}) =>
    new Promise((ok, fail) => {
      const n = ++id;
      pending.set(n, (msg) =>
        msg.error ? fail(new Error(`${method}: ${msg.error.message}`)) : ok(msg.result));
      ws.send(JSON.stringify({ id: n, method, params }));
    });
  const evaluate = async (expression) =>
    (await send("Runtime.evaluate", { expression, returnByValue: true })).result.value;

  await send("Runtime.enable");
  await send("Page.enable");
  console.log(`loading ${page}`);
  await send("Page.navigate", { url: page });
  const started = Date.now();
  let state;
  while (Date.now() - started < 900_000) {
    await new Promise((r) => setTimeout(r, 1000));
    state = await evaluate("document.body?.dataset.state ?? ''");
    if (state === "done" || state === "failed") break;
  }
  console.log(
    `page state after ${((Date.now() - started) / 1000).toFixed(0)} s: ${
      state || "(still running)"
    }`,
  );
  console.log(await evaluate("document.getElementById('adapter').innerText"));
  console.log(await evaluate("document.getElementById('demo-table').innerText"));
  console.log(await evaluate("document.getElementById('bench-table').innerText"));
  const height = await evaluate("document.documentElement.scrollHeight");
  await send("Emulation.setDeviceMetricsOverride", {
    width: 1100,
    height,
    deviceScaleFactor: 1,
    mobile: false,
  });
  const shot = await send("Page.captureScreenshot", { format: "png", captureBeyondViewport: true });
  await Deno.mkdir(new URL(".", new URL(out, `file://${Deno.cwd()}/`)), { recursive: true });
  await Deno.writeFile(out, Uint8Array.from(atob(shot.data), (c) => c.charCodeAt(0)));
  console.log(`screenshot: ${out}`);
  status = state === "done" ? 0 : 1;
  if (gpuLog.length) console.log(`Chromium's GPU messages:\n${gpuLog.slice(0, 20).join("\n")}`);
  ws.close();
} catch (e) {
  console.error(`chromium: ${e.message}`);
} finally {
  browser.kill();
  await browser.status;
  await server.shutdown();
  await Deno.remove(profile, { recursive: true }).catch(() => {});
}
Deno.exit(status);
