// End-to-end test of the `flowline serve` dashboard in headless Chromium (Playwright, no
// bundled browsers), against the FreshMart example (examples/freshmart). See README.md.
//
//   node tests/browser/dashboard.mjs --url http://127.0.0.1:8080 --out DIR [--token T]
//   node tests/browser/dashboard.mjs --serve target/debug/flowline --out DIR [--token T]
//
// --url        a running `flowline serve examples/freshmart` (a copy of it)
// --serve BIN  instead: start `BIN serve` on a temporary copy of examples/freshmart on a free
//              port (with --token, as $FLOWLINE_TOKEN), and stop it at the end
// --out DIR    where the screenshots go (created)
// --token T    the server's token: the page is opened as /?token=T, API checks send it
// --html PATH  development only: serve PATH as the page `/` instead of the page compiled into the
//              binary (to try dashboard.html edits without a rebuild)
// --timeout S  overall limit in seconds (default 240: up to two Chromium starts of 60 s each)
//
// Exits 0 when every check passed, 1 with `FAIL: ...` otherwise. Compares what the page shows
// with what the JSON API returns at about the same time; counts that grow are checked between
// an API reading taken before two page refreshes and one taken after.
//
// With --serve, the project copy gives pnl `alert_freshness = "3s"` (it runs once at start, so
// its output soon ages past 3 s and the alert fires), and near the end the test edits the copy's
// fraud.sql (four uses a minute -> three) and replays fraud into v2 through the API.

import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}`);

function parseArgs(argv) {
  const opts = { timeout: 240 };
  const known = new Set(["url", "out", "token", "html", "serve", "timeout"]);
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m || !known.has(m[1])) throw new Failure(`unknown argument '${argv[i]}' (see the top of ${fileURLToPath(import.meta.url)})`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new Failure(`--${m[1]} needs a value`);
    opts[m[1]] = value;
  }
  if (!opts.out) throw new Failure("give --out DIR (where the screenshots go)");
  if (!!opts.url === !!opts.serve) throw new Failure("give either --url http://HOST:PORT or --serve PATH/TO/flowline");
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) throw new Failure("--timeout is a number of seconds");
  return opts;
}

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(typeof msg === "function" ? msg() : msg);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `f` until it returns something other than undefined/false; throws after `secs`.
async function until(what, secs, f) {
  const deadline = Date.now() + secs * 1000;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined && v !== false && v !== null) return v;
    } catch (e) {
      if (e instanceof Failure) throw e;
      last = e;
    }
    if (Date.now() > deadline) throw new Failure(`timed out after ${secs} s waiting for ${what}${last ? ` (last error: ${last.message}${last.cause ? `: ${last.cause.message || last.cause}` : ""})` : ""}`);
    await sleep(250);
  }
}

// The dashboard's own time format (to compare the boundary and alert times it shows).
const time = (ms) => ms == null ? "–" : new Date(ms).toISOString().replace("T", " ").replace(".000Z", "Z");
// A time value of a row ("2026-03-17", "2026-03-17T04:00:00", with or without a zone) in ms.
const timeMs = (v) => /^\d{4}-\d{2}-\d{2}$/.test(v) ? Date.parse(v + "T00:00:00Z") : Date.parse(/(Z|[+-]\d\d:?\d\d)$/.test(v) ? v : v + "Z");
// The dashboard's own duration format (to compare the freshness target it shows).
const dur = (ms) => ms == null ? "–" : ms < 1000 ? ms + " ms" : ms < 120000 ? (ms / 1000).toFixed(1) + " s" : ms < 7200000 ? (ms / 60000).toFixed(1) + " min" : (ms / 3600000).toFixed(1) + " h";

// ---------------------------------------------------------------------------------------------
// The server (only with --serve)

async function startServer(bin, token, res) {
  const example = fileURLToPath(new URL("../../examples/freshmart", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "flowline-dashboard-project-"));
  res.projectDir = dir;
  for (const f of ["flowline.toml", "fraud.sql", "operations.sql", "pnl.sql"]) cpSync(join(example, f), join(dir, f));
  writeFileSync(join(dir, "flowline.toml"), withPipelineSetting(readFileSync(join(dir, "flowline.toml"), "utf8"), "pnl.sql", "alert_freshness", '"3s"'));
  const env = { ...process.env };
  if (token) env.FLOWLINE_TOKEN = token; else delete env.FLOWLINE_TOKEN;
  const child = spawn(resolve(bin), ["serve", dir, "--listen", "127.0.0.1:0"], { env, stdio: ["ignore", "ignore", "pipe"] });
  res.server = child;
  res.serverLog = [];
  let buffer = "";
  return await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Failure(`flowline serve did not start listening within 60 s:\n${res.serverLog.join("\n")}`)), 60000);
    child.on("error", (e) => { clearTimeout(timer); fail(new Failure(`cannot start ${bin}: ${e.message}`)); });
    child.on("exit", (code, signal) => {
      res.serverExited = true;
      clearTimeout(timer);
      fail(new Failure(`flowline serve exited (${signal || code}) before listening:\n${res.serverLog.join("\n")}`));
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buffer += chunk;
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const line of lines) {
        res.serverLog.push(line);
        if (res.serverLog.length > 200) res.serverLog.shift();
        const m = /^serving on (http:\/\/[^/\s]+)/.exec(line);
        if (m) { clearTimeout(timer); ok(m[1]); }
      }
    });
  });
}

// Sets `key = value` in the [[pipeline]] block of `file` of a flowline.toml text.
function withPipelineSetting(toml, file, key, value) {
  const lines = toml.split("\n");
  const at = lines.findIndex((l) => new RegExp(`^\\s*file\\s*=\\s*"${file.replace(/\./g, "\\.")}"`).test(l));
  check(at >= 0, `flowline.toml has no pipeline with file = "${file}"`);
  let end = lines.findIndex((l, i) => i > at && /^\s*\[/.test(l));
  if (end < 0) end = lines.length;
  const block = lines.slice(at + 1, end).filter((l) => !new RegExp(`^\\s*${key}\\s*=`).test(l));
  return [...lines.slice(0, at + 1), `${key} = ${value}`, ...block, ...lines.slice(end)].join("\n");
}

async function stopServer(res) {
  const child = res.server;
  if (!child || res.serverExited || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  if (await Promise.race([exited.then(() => true), sleep(20000).then(() => false)])) return;
  child.kill("SIGKILL");
  await Promise.race([exited, sleep(5000)]);
}

// ---------------------------------------------------------------------------------------------
// Screenshots

function decodePng(path) {
  return PNG.sync.read(readFileSync(path));
}

// Sane size, not blank (luminance spread and enough non-background pixels). Element shots give
// their own smaller minimum sizes.
function checkScreenshot(path, viewportWidth, { minWidth = viewportWidth * 0.9, minHeight = 400 } = {}) {
  const png = decodePng(path);
  const { width, height, data } = png;
  check(width >= minWidth && width <= viewportWidth * 3, `${path}: width ${width} px is not about the viewport's ${viewportWidth}`);
  check(height >= minHeight && height <= 30000, `${path}: height ${height} px is not sane`);
  let sum = 0, sum2 = 0, ink = 0;
  const n = width * height;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.2126 * data[i] + 0.7152 * data[i + 1] + 0.0722 * data[i + 2];
    sum += y;
    sum2 += y * y;
    if (y < 200) ink++;
  }
  const mean = sum / n;
  const sd = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
  check(sd > 8, `${path} looks blank (luminance sd ${sd.toFixed(2)})`);
  check(ink / n > 0.005, `${path} has almost no text or lines (${(100 * ink / n).toFixed(3)}% dark pixels)`);
  return { png, width, height, sd, ink: ink / n };
}

// Pixels of a strong red (the alert colour #b00020 and its anti-aliased text).
function redPixels({ data }) {
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > 130 && data[i + 1] < 90 && data[i + 2] < 110 && data[i] - data[i + 1] > 80) n++;
  return n;
}

// Pixels that differ between two screenshots (rows beyond the shorter one count as different).
function differingPixels(a, b) {
  const w = Math.min(a.width, b.width), h = Math.min(a.height, b.height);
  let diff = Math.abs(a.height - b.height) * w + Math.abs(a.width - b.width) * h;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * a.width + x) * 4, j = (y * b.width + x) * 4;
      if (a.data[i] !== b.data[j] || a.data[i + 1] !== b.data[j + 1] || a.data[i + 2] !== b.data[j + 2]) diff++;
    }
  }
  return diff;
}

// ---------------------------------------------------------------------------------------------
// The test

const EXPECTED_PIPELINES = ["fraud", "operations", "pnl"];
const TABLES = { fraud: "fraud_alerts", operations: "store_minutes", pnl: "daily_pnl" };
const VIEWPORT = { width: 1280, height: 900 };
const CHROMIUM_ARGS = [
  // Playwright adds --headless (headless: true) and --user-data-dir (a new empty directory).
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

const LAUNCH_TRIES = 2;
const LAUNCH_TIMEOUT_MS = 60000;

async function launchBrowser(executablePath, res) {
  const errors = [];
  for (let attempt = 1; attempt <= LAUNCH_TRIES; attempt++) {
    res.userDataDir = mkdtempSync(join(tmpdir(), "flowline-dashboard-chromium-"));
    const t0 = Date.now();
    try {
      const context = await chromium.launchPersistentContext(res.userDataDir, {
        executablePath, headless: true, args: CHROMIUM_ARGS, viewport: VIEWPORT, timeout: LAUNCH_TIMEOUT_MS,
      });
      log(`Chromium started in ${((Date.now() - t0) / 1000).toFixed(1)} s${attempt > 1 ? ` (try ${attempt})` : ""}`);
      return context;
    } catch (e) {
      errors.push(`try ${attempt}: ${e.message}`);
      log(`Chromium did not start (try ${attempt} of ${LAUNCH_TRIES}, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      removeDir(res.userDataDir);
      res.userDataDir = undefined;
    }
  }
  throw new Failure(`cannot launch Chromium at ${executablePath} (set $CHROMIUM):\n${errors.join("\n")}`);
}

// A browser that is still shutting down may write into its profile while it is removed; retry,
// and never let cleanup hide the test's own result.
function removeDir(path) {
  try {
    rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  } catch (e) {
    console.error(`warning: could not remove ${path}: ${e.message}`);
  }
}

async function main(opts, res) {
  mkdirSync(opts.out, { recursive: true });
  const base = opts.url ? opts.url.replace(/\/+$/, "") : await startServer(opts.serve, opts.token, res);
  if (opts.serve) log(`started flowline serve on ${res.projectDir} at ${base}`);

  const apiHeaders = opts.token ? { Authorization: `Bearer ${opts.token}` } : {};
  async function api(path, body) {
    const r = await fetch(base + path, body === undefined ? { headers: apiHeaders } : { method: "POST", headers: apiHeaders, body });
    const text = await r.text();
    if (r.status === 401) throw new Failure(`${path}: HTTP 401: ${opts.token ? "--token is not the server's token" : "the server has a token: give --token"}`);
    if (!r.ok) throw new Error(`${body === undefined ? "GET" : "POST"} ${path}: HTTP ${r.status} ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }
  const sql = async (q) => (await api("/api/sql", q)).rows;

  // What the API says the project is.
  const project = await until(`the API at ${base}`, 30, () => api("/api/project"));
  for (const p of EXPECTED_PIPELINES) check(project.pipelines.includes(p), `the project has no pipeline '${p}' (has ${project.pipelines}); is this the FreshMart example?`);
  for (const t of Object.values(TABLES)) check(project.tables.includes(t), `the project has no serving table '${t}' (has ${project.tables})`);
  log(`API: project ${project.name}, pipelines ${project.pipelines.join(", ")}, tables ${project.tables.join(", ")}`);
  // A server that has just started publishes its first rows within seconds.
  await until("rows in every serving table and the P&L's first run (API)", 60, async () => {
    const [tables, pnl] = await Promise.all([api("/api/tables"), api("/api/pipelines/pnl")]);
    return tables.every((t) => !Object.values(TABLES).includes(t.name) || t.rows > 0) && pnl.last_run;
  });

  // The browser. A cold first start of Chromium on a fresh, loaded machine has taken over 30 s
  // (CI); it gets 60 s, and a second try with a new profile before the test gives up.
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  const context = await launchBrowser(executablePath, res);
  res.context = context;
  context.setDefaultTimeout(15000);
  const page = context.pages()[0] || await context.newPage();

  // Everything that goes wrong in the page.
  const problems = [];
  res.problems = problems;
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url || "?"})`); });
  page.on("pageerror", (e) => problems.push(`uncaught exception in the page: ${e.message}`));
  page.on("requestfailed", (r) => { if (!res.closing) problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`); });
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`); });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  const noProblems = (when) => check(problems.length === 0, () => `${when}:\n  ${problems.join("\n  ")}`);

  if (opts.html) {
    const html = readFileSync(opts.html);
    log(`DEV MODE: serving ${opts.html} as / instead of the page compiled into flowline`);
    await page.route((u) => u.origin === new URL(base).origin && u.pathname === "/", (route) =>
      route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html }));
  }

  const pageUrl = base + "/" + (opts.token ? `?token=${encodeURIComponent(opts.token)}` : "");
  const t0 = Date.now();
  const response = await page.goto(pageUrl, { waitUntil: "load" });
  check(response && response.ok(), `GET / gave HTTP ${response?.status()}`);
  await page.evaluate(() => { window.__dashboardTestMarker = "not reloaded"; });
  check(await page.locator("[data-testid=pipelines]").count() === 1,
    "the page has no data-testid hooks: this flowline binary was built before crates/cli/src/dashboard.html had them (rebuild it, or try the file with --html)");
  check(await page.locator("[data-testid=alerts]").count() === 1 && await page.locator("[data-testid=replays]").count() === 1,
    "the page has no alerts or replays section: this flowline binary was built before crates/cli/src/dashboard.html showed alerts, versions, replays and views (rebuild it, or try the file with --html)");
  const refreshes = () => page.evaluate(() => Number(document.body.dataset.refreshes || 0));
  await until("the first refresh of the page (body[data-refreshes])", 20, async () => (await refreshes()) >= 1);
  log(`page loaded and rendered in ${Date.now() - t0} ms`);
  // Waits until the page has finished `n` more refreshes (so the last one started after now).
  const afterRefreshes = async (n) => {
    const from = await refreshes();
    await until(`${n} more refreshes of the page`, 15, async () => (await refreshes()) >= from + n);
  };
  const pageError = () => page.locator("[data-testid=error]").textContent();
  const noPageError = async (when) => { const e = (await pageError()).trim(); check(e === "", `${when}: the page shows an error: ${e}`); };
  await noPageError("after loading");
  noProblems("after loading");

  const title = await page.locator("#title").textContent();
  check(title.includes(project.name), `the title '${title}' does not name the project '${project.name}'`);

  // ---- Pipelines: every one with its mode and freshness against its target.
  const readPipelines = () => page.evaluate(() => [...document.querySelectorAll("[data-testid=pipeline-row]")].map((tr) => {
    const cell = (c) => tr.querySelector(`[data-col="${c}"]`);
    const f = cell("freshness");
    return {
      name: tr.dataset.pipeline, mode: tr.dataset.mode, status: tr.dataset.status,
      modeText: cell("mode").textContent.trim(), freshText: f.textContent.trim(), freshClass: f.className,
      targetMs: f.dataset.targetMs, ok: f.dataset.ok, rejects: Number(cell("rejects").dataset.count),
      rejectsTitle: cell("rejects").title, lastRun: cell("last-run").textContent.trim(),
      version: cell("version")?.dataset.version, versionText: cell("version")?.textContent.trim(),
      freshAlert: f.dataset.alert || "", lagAlert: cell("lag").dataset.alert || "",
      visible: tr.getBoundingClientRect().height > 0 && [...tr.cells].every((td) => td.getBoundingClientRect().width > 0),
    };
  }));
  const shotPaths = [];
  const apiPipelines = await api("/api/pipelines");
  const shown = await readPipelines();
  check(shown.length === apiPipelines.length, `the page lists ${shown.length} pipelines, the API ${apiPipelines.length}`);
  for (const p of apiPipelines) {
    const row = shown.find((r) => r.name === p.name);
    check(row, `pipeline ${p.name} is not listed`);
    check(row.visible, `pipeline ${p.name}'s row is not visible`);
    check(row.mode === p.mode && row.modeText.startsWith(p.mode), `pipeline ${p.name}: mode '${row.modeText}' (data-mode ${row.mode}), the API says ${p.mode}`);
    const target = p.freshness.target_ms;
    check(String(target ?? "") === row.targetMs, `pipeline ${p.name}: freshness target ${row.targetMs} ms on the page, ${target} in the API`);
    const m = /^(–|\d+ ms|\d+\.\d (?:s|min|h)) \/ (.+)$/.exec(row.freshText);
    check(m, `pipeline ${p.name}: freshness '${row.freshText}' is not 'AGE / TARGET'`);
    check(m[2] === dur(target), `pipeline ${p.name}: freshness target shown as '${m[2]}', expected '${dur(target)}'`);
    if (row.ok !== "") check(row.freshClass === (row.ok === "true" ? "ok" : "late"), `pipeline ${p.name}: freshness ok=${row.ok} but styled '${row.freshClass}'`);
    check(row.version === p.version && row.versionText.startsWith(p.version), `pipeline ${p.name}: version '${row.versionText}' (data-version ${row.version}), the API says ${p.version}`);
  }
  log(`versions: ${shown.map((r) => `${r.name} ${r.version}`).join(", ")} (as the API says)`);
  for (const name of EXPECTED_PIPELINES) check(shown.some((r) => r.name === name), `pipeline ${name} is not listed`);
  log(`pipelines: ${shown.map((r) => `${r.name} [${r.modeText}; ${r.status}; freshness ${r.freshText}]`).join(", ")}`);

  // ---- Alerts: the banner lists what fires (as the API says), the breached cell is marked.
  if (opts.serve) {
    await until("pnl's freshness alert to fire (API; threshold 3 s in the project copy)", 30, async () =>
      (await api("/api/alerts")).firing.some((a) => a.pipeline === "pnl" && a.kind === "freshness"));
  }
  const readAlerts = () => page.evaluate(() => {
    const banner = document.querySelector("[data-testid=alert-banner]");
    const box = banner?.getBoundingClientRect();
    return {
      present: !!banner, firing: Number(banner?.dataset.firing), text: banner?.textContent || "", top: box ? box.top + window.scrollY : null,
      visible: !!box && box.width > 0 && box.height > 0,
      alerts: [...document.querySelectorAll("[data-testid=alert]")].map((li) => ({
        pipeline: li.dataset.pipeline, kind: li.dataset.kind, since_ms: Number(li.dataset.sinceMs), value: Number(li.dataset.value),
        threshold: Number(li.dataset.threshold), title: li.title, message: li.querySelector('[data-col="message"]').textContent,
        since: li.querySelector('[data-col="since"]').textContent, visible: li.getBoundingClientRect().height > 0,
      })),
      events: [...document.querySelectorAll("[data-testid=alert-event]")].map((tr) => ({
        pipeline: tr.dataset.pipeline, kind: tr.dataset.kind, status: tr.dataset.status, since_ms: Number(tr.dataset.sinceMs),
        resolved_ms: tr.dataset.resolvedMs === "" ? null : Number(tr.dataset.resolvedMs), message: tr.querySelector('[data-col="message"]').textContent,
      })),
    };
  });
  const alertsBefore = await api("/api/alerts");
  const pipesBefore = await api("/api/pipelines");
  await afterRefreshes(2);
  const [pageAlerts, pagePipesAlerts] = [await readAlerts(), await readPipelines()];
  const alertsAfter = await api("/api/alerts");
  const pipesAfter = await api("/api/pipelines");
  {
    const id = (a) => `${a.pipeline}/${a.kind}/${a.since_ms}`;
    const inBefore = new Map(alertsBefore.firing.map((a) => [id(a), a])), inAfter = new Map(alertsAfter.firing.map((a) => [id(a), a]));
    check(pageAlerts.present && pageAlerts.visible, "the page shows no alert banner (data-testid=alert-banner)");
    check(pageAlerts.firing === pageAlerts.alerts.length, `the banner says ${pageAlerts.firing} alerts firing and lists ${pageAlerts.alerts.length}`);
    for (const a of pageAlerts.alerts) {
      check(a.visible, `the alert ${id(a)} is not visible`);
      const apiAlert = inAfter.get(id(a)) || inBefore.get(id(a));
      check(apiAlert, `the page shows the alert ${JSON.stringify(a)}, which the API did not have firing before or after (${JSON.stringify([...inBefore.keys(), ...inAfter.keys()])})`);
      check(a.threshold === apiAlert.threshold && a.value > a.threshold, `alert ${id(a)}: value ${a.value} over threshold ${a.threshold} on the page, threshold ${apiAlert.threshold} in the API`);
      // pnl's output only ages (it runs at 04:00 UTC): its value is between the two readings.
      if (a.pipeline === "pnl" && a.kind === "freshness") {
        const lo = inBefore.get(id(a))?.value ?? -Infinity, hi = inAfter.get(id(a))?.value ?? Infinity;
        check(lo <= a.value && a.value <= hi, `alert ${id(a)}: value ${a.value} on the page, the API said ${lo} before and ${hi} after`);
      }
      // Messages give changing numbers and durations ("5243ms", "1m5s"): compared without them.
      const norm = (m) => m.replace(/^pipeline [^:]+: /, "").replace(/\d+(?:ms|h|m|s)(?:\d+(?:ms|h|m|s))*/g, "D").replace(/\d+/g, "N");
      check([inBefore.get(id(a)), inAfter.get(id(a))].some((x) => x && norm(x.message) === norm(a.message)) && a.title.startsWith(`pipeline ${a.pipeline}: `),
        `alert ${id(a)}: the page says '${a.message}', the API '${apiAlert.message}'`);
      check(a.since.includes(time(a.since_ms)), `alert ${id(a)}: '${a.since}' does not give when it started firing (${time(a.since_ms)})`);
    }
    for (const k of inBefore.keys()) {
      if (inAfter.has(k)) check(pageAlerts.alerts.some((a) => id(a) === k), `the API has the alert ${k} firing before and after, the page does not show it (shows ${pageAlerts.alerts.map(id)})`);
    }
    if (pageAlerts.firing === 0) check(/no alerts/.test(pageAlerts.text), `no alert fires but the banner says '${pageAlerts.text}'`);
    else check(pageAlerts.top < VIEWPORT.height / 2, `the alert banner is ${pageAlerts.top} px down the page, not at the top`);
    // The breached cell of each pipeline whose alert fired before and after is marked.
    for (const p of pipesAfter) {
      const row = pagePipesAlerts.find((r) => r.name === p.name);
      const was = pipesBefore.find((b) => b.name === p.name);
      for (const kind of ["freshness", "lag"]) {
        const mark = kind === "freshness" ? row.freshAlert : row.lagAlert;
        const both = p.alerts.some((a) => a.kind === kind) && was.alerts.some((a) => a.kind === kind);
        const neither = !p.alerts.some((a) => a.kind === kind) && !was.alerts.some((a) => a.kind === kind);
        if (both) check(mark === kind, `pipeline ${p.name}: its ${kind} alert fires but the ${kind} cell is not marked`);
        if (neither) check(mark === "", `pipeline ${p.name}: no ${kind} alert fires but the ${kind} cell is marked`);
      }
    }
    // The latest events, newest first, each as the API has it.
    const known = [...alertsBefore.events, ...alertsAfter.events];
    for (const e of pageAlerts.events) {
      check(known.some((k) => k.pipeline === e.pipeline && k.kind === e.kind && k.status === e.status && k.since_ms === e.since_ms && (k.resolved_ms ?? null) === e.resolved_ms && k.message.endsWith(e.message)),
        `the alert event shown ${JSON.stringify(e)} is not among the API's`);
    }
    for (let i = 1; i < pageAlerts.events.length; i++) {
      const at = (e) => e.resolved_ms ?? e.since_ms;
      check(at(pageAlerts.events[i - 1]) >= at(pageAlerts.events[i]), "the alert events are not newest first");
    }
    if (alertsBefore.events.length) check(pageAlerts.events.length > 0, "the API has alert events, the page shows none");
    if (opts.serve) {
      const pnlAlert = pageAlerts.alerts.find((a) => a.pipeline === "pnl" && a.kind === "freshness");
      check(pnlAlert, `the banner does not show pnl's freshness alert (shows ${pageAlerts.alerts.map(id)}; API: ${alertsAfter.firing.map(id)})`);
      const pnlApi = pipesAfter.find((p) => p.name === "pnl");
      check(pnlAlert.threshold === pnlApi.alert_thresholds.freshness_ms, `pnl's alert threshold ${pnlAlert.threshold} is not its alert_thresholds.freshness_ms ${pnlApi.alert_thresholds.freshness_ms}`);
      check(pagePipesAlerts.find((r) => r.name === "pnl").freshAlert === "freshness", "pnl's freshness cell is not marked as in breach");
      // Its firing event is listed while it is among the latest five (fraud's may push it out).
      const isIt = (e) => e.pipeline === "pnl" && e.kind === "freshness" && e.status === "firing" && e.since_ms === pnlAlert.since_ms;
      if (alertsBefore.events.slice(-5).some(isIt) && alertsAfter.events.slice(-5).some(isIt)) {
        check(pageAlerts.events.some(isIt), `the latest alert events do not show pnl's alert firing (${JSON.stringify(pageAlerts.events)})`);
      }
    }
    const path = join(opts.out, "alert-banner.png");
    await page.locator("[data-testid=alerts]").screenshot({ path });
    const shot = checkScreenshot(path, VIEWPORT.width, { minWidth: 300, minHeight: 20 });
    const red = redPixels(shot.png);
    if (pageAlerts.firing > 0) check(red > 50, `${path}: the alert banner shows no red (${red} red pixels)`);
    shotPaths.push(path);
    log(`alerts: ${pageAlerts.firing} firing on the page (${pageAlerts.alerts.map((a) => `${a.pipeline} ${a.kind}: ${a.message}`).join("; ") || "none"}), ` +
      `${pageAlerts.events.length} latest events; API ${alertsBefore.firing.length} -> ${alertsAfter.firing.length} firing; screenshot ${path} (${shot.width}x${shot.height}, ${red} red pixels)`);
  }

  // ---- The table view.
  const readView = () => page.evaluate(() => {
    const v = document.querySelector("[data-testid=table-view]");
    const heads = [...v.querySelectorAll("thead th")].map((th) => th.textContent);
    const rows = [...v.querySelectorAll("tbody tr")].map((tr) => Object.fromEntries([...tr.cells].map((td) => [td.dataset.col, td.textContent])));
    const layers = [...v.querySelectorAll("tbody tr")].map((tr) => tr.dataset.layer);
    const boundary = v.querySelector("[data-testid=view-boundary]");
    const box = v.querySelector("table")?.getBoundingClientRect();
    return {
      table: v.dataset.table, kind: v.dataset.kind, rows: Number(v.dataset.rows), version: v.dataset.version, heads, data: rows, layers,
      boundaryMs: v.dataset.boundaryMs, boundaryText: boundary?.textContent || "", boundaryAttr: boundary?.dataset.boundaryMs,
      selected: document.querySelector("[data-testid=table-select]").value,
      info: document.querySelector("[data-testid=table-info]").textContent,
      visible: !!box && box.width > 0 && box.height > 0,
    };
  });
  const select = async (table) => {
    const t = Date.now();
    await page.locator("[data-testid=table-select]").selectOption(table);
    const view = await until(`rows of ${table} in the table view`, 30, async () => {
      const v = await readView();
      return v.table === table && v.selected === table && v.data.length > 0 && v.visible && v;
    });
    return { view, ms: Date.now() - t };
  };
  const shots = {};
  const shoot = async (name) => {
    const path = join(opts.out, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    shots[name] = checkScreenshot(path, VIEWPORT.width);
    log(`screenshot ${path} (${shots[name].width}x${shots[name].height}, ${(100 * shots[name].ink).toFixed(1)}% ink)`);
  };
  const columnsOf = async (table) => (await api("/api/tables")).find((t) => t.name === table).columns.map((c) => c.name);

  // ---- Fraud alerts: within seconds, newest first, and the view refreshes itself.
  const newestAlertBefore = (await sql('SELECT MAX(event_time) AS t FROM fraud_alerts'))[0]?.t;
  const { view: fraud, ms: fraudMs } = await select("fraud_alerts");
  log(`fraud_alerts: ${fraud.data.length} rows shown ${fraudMs} ms after choosing the table (${fraud.info})`);
  check(fraudMs < 10000, `fraud alerts took ${fraudMs} ms to show`);
  check(JSON.stringify(fraud.heads) === JSON.stringify(await columnsOf("fraud_alerts")), `fraud_alerts columns ${fraud.heads} are not the table's ${await columnsOf("fraud_alerts")}`);
  for (const r of fraud.data) check(Number(r.tx_last_minute) >= 4, `a fraud alert with tx_last_minute ${r.tx_last_minute} (< 4): ${JSON.stringify(r)}`);
  for (let i = 1; i < fraud.data.length; i++) check(fraud.data[i - 1].event_time >= fraud.data[i].event_time, `fraud alerts are not newest first: ${fraud.data[i - 1].event_time} before ${fraud.data[i].event_time}`);
  check(!newestAlertBefore || fraud.data[0].event_time >= newestAlertBefore, `the newest alert shown (${fraud.data[0].event_time}) is older than the newest in the API before (${newestAlertBefore})`);
  const top = fraud.data[0];
  const byKey = (await api(`/api/tables/fraud_alerts?key=${encodeURIComponent(top.order_id)}`)).rows;
  check(byKey.length === 1 && byKey[0].card_id === top.card_id && Number(byKey[0].amount).toFixed(2) === top.amount && byKey[0].event_time === top.event_time,
    `the alert shown for order ${top.order_id} (${JSON.stringify(top)}) is not the API's (${JSON.stringify(byKey)})`);
  await shoot("dashboard-initial");
  const changed = await until("the fraud alert view to change without a reload", 30, async () => {
    const v = await readView();
    return v.table === "fraud_alerts" && (v.rows !== fraud.rows || v.data[0]?.order_id !== top.order_id) && v;
  });
  check(await page.evaluate(() => window.__dashboardTestMarker) === "not reloaded" && navigations === 1, "the page was reloaded or navigated");
  log(`fraud_alerts refreshed itself: ${fraud.rows} -> ${changed.rows} rows, newest order ${top.order_id} -> ${changed.data[0].order_id}`);
  await shoot("dashboard-later");
  await shoot("table-fraud_alerts");
  const liveDiff = differingPixels(shots["dashboard-initial"].png, shots["dashboard-later"].png);
  check(liveDiff > 100, `dashboard-initial.png and dashboard-later.png differ in only ${liveDiff} pixels`);
  log(`dashboard-initial.png and dashboard-later.png differ in ${liveDiff} pixels`);

  // ---- Counts that grow: rejects, table sizes. API before <= page <= API after.
  const rejectsOf = async () => Object.fromEntries(await Promise.all(EXPECTED_PIPELINES.map(async (p) => [p, await api(`/api/pipelines/${p}/rejects?limit=20`)])));
  const countsNow = async () => {
    const [pipes, rejects, tables] = await Promise.all([api("/api/pipelines"), rejectsOf(), api("/api/tables")]);
    return { pipes: Object.fromEntries(pipes.map((p) => [p.name, p])), rejects, tables: Object.fromEntries(tables.map((t) => [t.name, t])) };
  };
  const readRejects = () => page.evaluate(() => [...document.querySelectorAll("[data-testid=rejects-pipeline]")].map((d) => ({
    pipeline: d.dataset.pipeline, total: Number(d.dataset.total), text: d.querySelector("p").textContent,
    rows: [...d.querySelectorAll("tbody tr")].map((tr) => Object.fromEntries([...tr.cells].map((td) => [td.dataset.col, td.title || td.textContent]))),
  })));
  const before = await countsNow();
  await afterRefreshes(2);
  const [pageRejects, pagePipes, pageView] = [await readRejects(), await readPipelines(), await readView()];
  const after = await countsNow();
  const between = (what, lo, v, hi) => check(lo <= v && v <= hi, `${what}: the page shows ${v}, the API said ${lo} before and ${hi} after`);
  between("fraud_alerts rows", before.tables.fraud_alerts.rows, pageView.rows, after.tables.fraud_alerts.rows);
  const rejectSummary = [];
  for (const name of EXPECTED_PIPELINES) {
    const row = pagePipes.find((r) => r.name === name);
    between(`rejects of ${name} in this run`, before.pipes[name].rejects_total, row.rejects, after.pipes[name].rejects_total);
    for (const [reason, n] of Object.entries(after.pipes[name].rejects || {})) {
      if (n > 0 && before.pipes[name].rejects?.[reason] > 0) check(row.rejectsTitle.includes(`${reason}: `), `pipeline ${name}: the rejects cell does not give the count of '${reason}' (title '${row.rejectsTitle}')`);
    }
    const block = pageRejects.find((b) => b.pipeline === name);
    const lo = before.rejects[name].total, hi = after.rejects[name].total;
    if (hi === 0) {
      check(!block, `the page shows rejects for ${name}; the API has none`);
      rejectSummary.push(`${name} none`);
      continue;
    }
    if (lo === 0 && !block) { rejectSummary.push(`${name} none yet`); continue; }
    check(block, `the API has ${lo} rejects for ${name}; the page shows none`);
    between(`rejects of ${name} (all runs)`, lo, block.total, hi);
    check(block.text.includes(`${block.total} rejected`), `the rejects of ${name} say '${block.text}', not '${block.total} rejected'`);
    check(block.rows.length >= 1 && block.rows.length <= 3, `${block.rows.length} sample rejects shown for ${name}`);
    const known = [...before.rejects[name].rejects, ...after.rejects[name].rejects];
    for (const r of block.rows) {
      check(known.some((k) => k.reason === r.reason && k.raw === r.raw && k.detail === r.detail), `a reject shown for ${name} is not among the API's newest: ${JSON.stringify(r)}`);
    }
    rejectSummary.push(`${name} ${block.total} (${block.rows[0].reason}: ${block.rows[0].detail})`);
  }
  log(`rejects match the API: ${rejectSummary.join("; ")}`);
  await noPageError("after the live checks");

  // ---- The operations view and the nightly P&L.
  for (const table of ["store_minutes", "daily_pnl"]) {
    const cols = await columnsOf(table);
    const time = table === "daily_pnl" ? "day" : "window_start";
    const key = table === "daily_pnl" ? ["day", "store_id"] : ["store_id", "window_start"];
    const newestBefore = (await sql(`SELECT MAX(${time}) AS t FROM ${table}`))[0]?.t;
    const runBefore = (await api("/api/pipelines/pnl")).last_run?.run_id;
    const { view, ms } = await select(table);
    const all = (await api(`/api/tables/${table}`)).rows;
    // A nightly run (04:00 UTC) while checking replaces the P&L: then only keys are compared.
    const pnlRan = (await api("/api/pipelines/pnl")).last_run?.run_id !== runBefore;
    check(JSON.stringify(view.heads) === JSON.stringify(cols), `${table} columns ${view.heads} are not the table's ${cols}`);
    check(view.data.length === Math.min(50, view.rows), `${table}: ${view.data.length} rows shown of ${view.rows}`);
    check(view.rows <= all.length, `${table}: the page says ${view.rows} rows, the API has ${all.length} afterwards`);
    for (let i = 1; i < view.data.length; i++) check(view.data[i - 1][time] >= view.data[i][time], `${table} is not newest first`);
    check(!newestBefore || view.data[0][time] >= newestBefore, `${table}: the newest row shown (${view.data[0][time]}) is older than the API's (${newestBefore})`);
    const index = new Map(all.map((r) => [key.map((k) => r[k]).join("|"), r]));
    for (const r of view.data) {
      const a = index.get(key.map((k) => r[k]).join("|"));
      check(a, `${table}: the row ${JSON.stringify(r)} is not in the API's table`);
      check(Number(r.orders) > 0, `${table}: a row without orders: ${JSON.stringify(r)}`);
      // The P&L does not change between nightly runs: every value must be the API's.
      if (table === "daily_pnl" && !pnlRan) check(String(a.orders) === r.orders && Number(a.revenue).toFixed(2) === r.revenue, `daily_pnl: the page shows ${JSON.stringify(r)}, the API ${JSON.stringify(a)}`);
    }
    log(`${table}: ${view.data.length} of ${view.rows} rows shown ${ms} ms after choosing it, newest ${view.data[0][time]} (${view.info})`);
    await shoot(`table-${table}`);
  }

  // ---- The Lambda view: history from the nightly batch, today from the stream, split where the
  // API says.
  const apiViews = await api("/api/views");
  if (opts.serve) check(apiViews.some((v) => v.name === "revenue_by_day"), `the API has no view revenue_by_day (has ${apiViews.map((v) => v.name)})`);
  for (const spec of apiViews) {
    const key = `view:${spec.name}`;
    const viewBefore = await api(`/api/views/${encodeURIComponent(spec.name)}`);
    const runBefore = (await api("/api/pipelines/pnl")).last_run?.run_id;
    const { view, ms } = await select(key);
    await afterRefreshes(1);
    const shownView = await readView();
    const viewAfter = await api(`/api/views/${encodeURIComponent(spec.name)}`);
    const batchRows = (await api(`/api/tables/${encodeURIComponent(spec.batch)}`)).rows;
    const batchRan = (await api("/api/pipelines/pnl")).last_run?.run_id !== runBefore;
    const v = shownView.table === key ? shownView : view;
    const col = spec.time_column;
    check(v.kind === "view", `${key}: the table view is not marked as a view (data-kind ${v.kind})`);
    check(JSON.stringify(v.heads) === JSON.stringify(viewAfter.columns.map((c) => c.name)), `${key}: columns ${v.heads}, the API's ${viewAfter.columns.map((c) => c.name)}`);
    check(v.heads.includes("_layer"), `${key}: no _layer column`);
    check([viewBefore.total_rows, viewAfter.total_rows].includes(v.rows), `${key}: the page says ${v.rows} rows, the API ${viewBefore.total_rows} before and ${viewAfter.total_rows} after`);
    check(v.data.length === Math.min(50, v.rows), `${key}: ${v.data.length} rows shown of ${v.rows}`);
    // The boundary: as the API reports it, in words and in the rows' layers.
    const b = [viewBefore, viewAfter].find((x) => String(x.boundary_ms ?? "") === v.boundaryMs);
    check(b, `${key}: boundary ${v.boundaryMs} on the page, the API says ${viewBefore.boundary_ms} / ${viewAfter.boundary_ms}`);
    check(v.boundaryAttr === v.boundaryMs, `${key}: the boundary line says ${v.boundaryAttr}, the view ${v.boundaryMs}`);
    if (b.boundary_ms != null) {
      check(v.boundaryText.includes(time(b.boundary_ms)) && v.boundaryText.includes(spec.batch) && /batch/.test(v.boundaryText) && /stream/.test(v.boundaryText),
        `${key}: the boundary line '${v.boundaryText}' does not say history before ${time(b.boundary_ms)} is from ${spec.batch}, after from the stream`);
    }
    for (let i = 0; i < v.data.length; i++) {
      const r = v.data[i];
      check(r._layer === v.layers[i] && ["batch", "stream"].includes(r._layer), `${key}: row ${JSON.stringify(r)} has layer ${v.layers[i]}`);
      if (b.boundary_ms != null) {
        const expected = timeMs(r[col]) < b.boundary_ms ? "batch" : "stream";
        check(r._layer === expected, `${key}: the row ${JSON.stringify(r)} is from the ${r._layer} layer, but ${col} ${r[col]} is ${expected === "batch" ? "before" : "at or after"} the boundary ${b.boundary}`);
      } else check(r._layer === "stream", `${key}: no batch run yet, yet the row ${JSON.stringify(r)} is from the batch layer`);
      if (i > 0) check(v.data[i - 1][col] >= r[col], `${key} is not newest first (${v.data[i - 1][col]} before ${r[col]})`);
    }
    // Each row shown is the API's (stream rows grow: between before and after); batch rows are the
    // batch table's.
    const keyOf = (r) => v.heads.filter((h) => viewAfter.columns.find((c) => c.name === h && /^(Utf8|LargeUtf8|Date|Timestamp)/.test(c.type))).map((h) => r[h]).join("|");
    const numeric = viewAfter.columns.filter((c) => /^(U?Int|Float|Decimal)/.test(c.type)).map((c) => c.name);
    const index = (rows) => new Map(rows.map((r) => [keyOf(r), r]));
    const [ib, ia, it] = [index(viewBefore.rows), index(viewAfter.rows), index(batchRows.map((r) => ({ ...r, _layer: "batch" })))];
    const cell = (c, x) => { const t = viewAfter.columns.find((y) => y.name === c)?.type || ""; const s = /^Decimal\d*\(\d+, *(\d+)\)$/.exec(t); return x == null ? "" : s ? Number(x).toFixed(Number(s[1])) : String(x); };
    for (const r of v.data) {
      const was = ib.get(keyOf(r)), now = ia.get(keyOf(r));
      check(was || now, `${key}: the row ${JSON.stringify(r)} is not in the API's view`);
      const same = (x) => x && v.heads.every((h) => cell(h, x[h]) === r[h]);
      if (r._layer === "batch") {
        check(same(was) || same(now), `${key}: the batch row ${JSON.stringify(r)} is not the API's (${JSON.stringify(now || was)})`);
        if (!batchRan) check(same(it.get(keyOf(r))), `${key}: the batch row ${JSON.stringify(r)} is not ${spec.batch}'s (${JSON.stringify(it.get(keyOf(r)))})`);
      } else {
        for (const h of numeric) check(Number(cell(h, was?.[h] ?? 0)) <= Number(r[h]) && Number(r[h]) <= Number(cell(h, now?.[h] ?? Infinity)), `${key}: stream row ${JSON.stringify(r)}: ${h} not between the API's ${was?.[h]} and ${now?.[h]}`);
      }
    }
    const layersShown = [...new Set(v.layers)];
    const layersApi = [...new Set(viewAfter.rows.map((r) => r._layer))];
    if (v.rows <= 50) check(layersApi.every((l) => layersShown.includes(l)), `${key}: the API's view has layers ${layersApi}, the page shows ${layersShown}`);
    if (opts.serve && spec.name === "revenue_by_day") check(layersShown.includes("batch") && layersShown.includes("stream"), `${key}: the page shows only the ${layersShown} layer (the API: ${layersApi}, boundary ${viewAfter.boundary})`);
    log(`${key}: ${v.data.length} of ${v.rows} rows shown ${ms} ms after choosing it, layers ${layersShown.map((l) => `${l} ${v.layers.filter((x) => x === l).length}`).join(", ")}; ${v.boundaryText.trim()}`);
    await shoot(`view-${spec.name}`);
    check(differingPixels(shots[`view-${spec.name}`].png, shots["table-daily_pnl"].png) > 100, `view-${spec.name}.png is the same as table-daily_pnl.png`);
  }

  // ---- The P&L run in the manifest and in its pipeline's row.
  const pnl = await until("the P&L's first run", 30, async () => { const p = await api("/api/pipelines/pnl"); return p.last_run && p; });
  const runs = await api("/api/pipelines/pnl/runs?limit=3");
  check(runs.length > 0, "the API has no P&L run in the manifest");
  await afterRefreshes(1);
  const pageRuns = await page.evaluate(() => [...document.querySelectorAll("[data-testid=run-row]")].map((tr) => ({
    pipeline: tr.dataset.pipeline, run: tr.dataset.run, status: tr.dataset.status, mode: tr.querySelector('[data-col="mode"]')?.textContent,
  })));
  const pnlRun = pageRuns.find((r) => r.pipeline === "pnl");
  check(pnlRun, `the manifest section shows no P&L run (shows ${JSON.stringify(pageRuns)})`);
  const apiRun = (await api("/api/pipelines/pnl/runs?limit=10")).find((r) => r.run_id === pnlRun.run);
  check(apiRun && apiRun.status === pnlRun.status && apiRun.mode === pnlRun.mode, `the P&L run shown ${JSON.stringify(pnlRun)} is not the API's ${JSON.stringify(apiRun)}`);
  const pnlRow = (await readPipelines()).find((r) => r.name === "pnl");
  check(pnlRow.lastRun.startsWith(pnl.last_run.status), `pnl's last run shows '${pnlRow.lastRun}', the API says ${pnl.last_run.status}`);
  log(`manifest: P&L run ${pnlRun.run} (${pnlRun.mode}, ${pnlRun.status}); last run cell '${pnlRow.lastRun}'`);

  // ---- A Kappa replay (only with --serve: it edits the project copy): fraud's SQL now alerts from
  // three uses a minute; replayed into v2 with a diff, it catches up, is compared and swapped in.
  if (opts.serve) {
    const fraudSql = join(res.projectDir, "fraud.sql");
    const text = readFileSync(fraudSql, "utf8");
    check(/tx_last_minute >= 4/.test(text), "fraud.sql of the project copy has no 'tx_last_minute >= 4'");
    const fromVersion = (await api("/api/pipelines/fraud")).version;
    const toVersion = `v${Number(/\d+/.exec(fromVersion)?.[0] ?? 1) + 1}`;
    // Record every replay state the page shows for fraud (it refreshes every 0.5 s while one runs).
    await page.evaluate(() => {
      const seen = window.__replaySeen = [];
      const look = () => {
        const r = document.querySelector('[data-testid=replay][data-pipeline="fraud"]');
        const bar = r?.querySelector("[data-testid=replay-progress]");
        const badge = document.querySelector('[data-testid=pipeline-row][data-pipeline="fraud"] [data-testid=version-replay]')?.textContent || "";
        const state = r ? `${r.dataset.status}|${r.dataset.version}|${r.dataset.rowsRead}|${r.dataset.lag}|${bar ? (bar.hasAttribute("value") ? `${bar.value}/${bar.max}` : "indeterminate") : "none"}|${badge}` : "none";
        if (seen[seen.length - 1] !== state) seen.push(state);
      };
      look();
      new MutationObserver(look).observe(document.body, { childList: true, subtree: true, attributes: true });
    });
    writeFileSync(fraudSql, text.replace(/tx_last_minute >= 4/g, "tx_last_minute >= 3"));
    const started = await api(`/api/pipelines/fraud/replay?as=${toVersion}&diff=true`, "");
    check(started.status === "catching-up" && started.version === toVersion && started.from_version === fromVersion, `POST replay answered ${JSON.stringify(started)}`);
    // Look at fraud_alerts meanwhile (choosing a table refreshes the page at once).
    await page.locator("[data-testid=table-select]").selectOption("fraud_alerts");
    const done = await until("fraud's replay to end (API)", 60, async () => {
      const r = (await api("/api/pipelines/fraud/replay"));
      check(!["failed", "stopped"].includes(r.status), `the replay ended ${r.status}: ${r.error}`);
      return r.status === "swapped" && r;
    });
    const fraudNow = await until(`fraud to serve ${toVersion} (API)`, 30, async () => { const p = await api("/api/pipelines/fraud"); return p.version === toVersion && p; });
    const shownReplay = await until("the page to show the replay swapped and the new version", 15, () => page.evaluate(() => {
      const r = document.querySelector('[data-testid=replay][data-pipeline="fraud"]');
      const row = document.querySelector('[data-testid=pipeline-row][data-pipeline="fraud"] [data-col="version"]');
      if (!r || r.dataset.status !== "swapped" || !row) return false;
      return {
        status: r.dataset.status, version: r.dataset.version, from: r.dataset.fromVersion, rowsRead: Number(r.dataset.rowsRead), lag: r.dataset.lag,
        statusText: r.querySelector('[data-col="status"]').textContent, rowVersion: row.dataset.version, rowVersionText: row.textContent.trim(),
        visible: r.getBoundingClientRect().height > 0,
        diff: [...r.querySelectorAll("[data-testid=diff-row]")].map((tr) => Object.fromEntries([["table", tr.dataset.table], ...[...tr.cells].map((td) => [td.dataset.col, td.textContent])])),
        seen: window.__replaySeen,
      };
    }));
    check(shownReplay.visible && shownReplay.statusText === "swapped", `the replay is not shown as swapped (${shownReplay.statusText})`);
    check(shownReplay.version === toVersion && shownReplay.from === fromVersion, `the replay shown goes ${shownReplay.from} -> ${shownReplay.version}, the API's ${fromVersion} -> ${toVersion}`);
    check(shownReplay.rowVersion === fraudNow.version && shownReplay.rowVersionText.startsWith(fraudNow.version), `fraud's version shows '${shownReplay.rowVersionText}', the API says ${fraudNow.version}`);
    check(shownReplay.rowsRead === done.rows_read && shownReplay.lag === String(done.lag_records ?? ""), `the replay shows ${shownReplay.rowsRead} rows read, lag ${shownReplay.lag}; the API ${done.rows_read}, ${done.lag_records}`);
    check(done.diff?.length > 0 && shownReplay.diff.length === done.diff.length, `the page shows ${shownReplay.diff.length} diff rows, the API has ${done.diff?.length}`);
    for (const d of done.diff) {
      const r = shownReplay.diff.find((x) => x.table === d.table);
      check(r, `the diff of ${d.table} is not shown`);
      for (const k of ["from_rows", "to_rows", "same", "changed", "only_from", "only_to"]) check(r[k] === String(d[k]), `the diff of ${d.table}: ${k} ${r[k]} on the page, ${d[k]} in the API`);
    }
    // The states the page went through: a progression (catching-up, comparing) ending swapped.
    const order = ["catching-up", "comparing", "swapped"];
    const states = shownReplay.seen.map((s) => s.split("|")).filter((s) => s[0] !== "none" && s[1] === toVersion);
    const statuses = states.map((s) => s[0]).filter((s, i, a) => a[i - 1] !== s);
    check(statuses.every((s, i) => order.includes(s) && (i === 0 || order.indexOf(statuses[i - 1]) < order.indexOf(s))), `the page showed the replay going ${statuses.join(" -> ")}`);
    for (const s of states.filter((s) => s[0] === "catching-up")) {
      check(s[4] !== "none", `while catching up, the replay shows no progress bar (${s.join("|")})`);
      check(s[5].includes(toVersion), `while catching up, fraud's version cell shows no replay ('${s[5]}')`);
    }
    for (let i = 1; i < states.length; i++) check(Number(states[i - 1][2]) <= Number(states[i][2]), `the replay's rows read went down on the page: ${states[i - 1][2]} -> ${states[i][2]}`);
    // fraud_alerts is now served from the new version: three uses a minute count.
    const v2 = await until(`fraud_alerts at ${toVersion} in the table view`, 20, async () => { const v = await readView(); return v.table === "fraud_alerts" && v.version === toVersion && v.data.length > 0 && v; });
    for (const r of v2.data) check(Number(r.tx_last_minute) >= 3, `a fraud alert with tx_last_minute ${r.tx_last_minute} at ${toVersion}`);
    check(v2.info.includes(`version ${toVersion}`), `the table info '${v2.info}' does not say version ${toVersion}`);
    const d0 = done.diff[0];
    log(`replay: the page showed fraud ${statuses.join(" -> ")} (${states.length} states, e.g. ${states.map((s) => `${s[0]} read ${s[2]} lag ${s[3] || "?"} bar ${s[4]}`).slice(0, 3).join("; ")}); ` +
      `${fromVersion} -> ${shownReplay.rowVersion}, ${done.rows_read} rows read in ${done.ended_ms - done.started_ms} ms; diff ${d0.table}: ${d0.from_rows} -> ${d0.to_rows} rows, ${d0.same} same, ${d0.only_to} only in ${toVersion}`);
    await shoot("replay-swapped");
    await noPageError("after the replay");
  } else {
    log("replay: skipped (needs --serve: it edits the project's SQL)");
  }

  // ---- Layout: nothing needs sideways scrolling at 1280 px; screenshots differ per table.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the page is ${overflow} px wider than the 1280 px window (data hidden to the right)`);
  const tableShots = ["table-fraud_alerts", "table-store_minutes", "table-daily_pnl"];
  for (let i = 0; i < tableShots.length; i++) {
    for (let j = i + 1; j < tableShots.length; j++) {
      check(differingPixels(shots[tableShots[i]].png, shots[tableShots[j]].png) > 100, `${tableShots[i]}.png and ${tableShots[j]}.png are the same`);
    }
  }
  await noPageError("at the end");
  noProblems("during the test");
  log(`no console errors, no failed requests; ${await refreshes()} refreshes`);
  for (const name of Object.keys(shots)) console.log(resolve(join(opts.out, `${name}.png`)));
  for (const path of shotPaths) console.log(resolve(path));
}

async function cleanup(res) {
  res.closing = true;
  if (res.context) await Promise.race([res.context.close().catch(() => {}), sleep(10000)]);
  if (res.userDataDir) removeDir(res.userDataDir);
  await stopServer(res);
  if (res.projectDir) removeDir(res.projectDir);
}

const res = {};
let code = 0;
try {
  const opts = parseArgs(process.argv.slice(2));
  let timer;
  const deadline = new Promise((_, fail) => { timer = setTimeout(() => fail(new Failure(`the test took over ${opts.timeout} s`)), opts.timeout * 1000); });
  try {
    await Promise.race([main(opts, res), deadline]);
  } finally {
    clearTimeout(timer);
  }
  log("PASS");
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
  if (res.problems?.length) console.error(`problems seen in the page:\n  ${res.problems.join("\n  ")}`);
  if (res.serverLog?.length) console.error(`last lines of flowline serve:\n  ${res.serverLog.slice(-20).join("\n  ")}`);
}
await cleanup(res);
process.exit(code);
