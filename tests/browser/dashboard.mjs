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
// --timeout S  overall limit in seconds (default 90)
//
// Exits 0 when every check passed, 1 with `FAIL: ...` otherwise. Compares what the page shows
// with what the JSON API returns at about the same time; counts that grow are checked between
// an API reading taken before two page refreshes and one taken after.

import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}`);

function parseArgs(argv) {
  const opts = { timeout: 90 };
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

// The dashboard's own duration format (to compare the freshness target it shows).
const dur = (ms) => ms == null ? "–" : ms < 1000 ? ms + " ms" : ms < 120000 ? (ms / 1000).toFixed(1) + " s" : ms < 7200000 ? (ms / 60000).toFixed(1) + " min" : (ms / 3600000).toFixed(1) + " h";

// ---------------------------------------------------------------------------------------------
// The server (only with --serve)

async function startServer(bin, token, res) {
  const example = fileURLToPath(new URL("../../examples/freshmart", import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), "flowline-dashboard-project-"));
  res.projectDir = dir;
  for (const f of ["flowline.toml", "fraud.sql", "operations.sql", "pnl.sql"]) cpSync(join(example, f), join(dir, f));
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

// Sane size, not blank (luminance spread and enough non-background pixels).
function checkScreenshot(path, viewportWidth) {
  const png = decodePng(path);
  const { width, height, data } = png;
  check(width >= viewportWidth * 0.9 && width <= viewportWidth * 3, `${path}: width ${width} px is not about the viewport's ${viewportWidth}`);
  check(height >= 400 && height <= 30000, `${path}: height ${height} px is not sane`);
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

  // The browser.
  const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
  res.userDataDir = mkdtempSync(join(tmpdir(), "flowline-dashboard-chromium-"));
  const context = await chromium.launchPersistentContext(res.userDataDir, {
    executablePath, headless: true, args: CHROMIUM_ARGS, viewport: VIEWPORT, timeout: 30000,
  }).catch((e) => { throw new Failure(`cannot launch Chromium at ${executablePath} (set $CHROMIUM): ${e.message}`); });
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
      visible: tr.getBoundingClientRect().height > 0 && [...tr.cells].every((td) => td.getBoundingClientRect().width > 0),
    };
  }));
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
  }
  for (const name of EXPECTED_PIPELINES) check(shown.some((r) => r.name === name), `pipeline ${name} is not listed`);
  log(`pipelines: ${shown.map((r) => `${r.name} [${r.modeText}; ${r.status}; freshness ${r.freshText}]`).join(", ")}`);

  // ---- The table view.
  const readView = () => page.evaluate(() => {
    const v = document.querySelector("[data-testid=table-view]");
    const heads = [...v.querySelectorAll("thead th")].map((th) => th.textContent);
    const rows = [...v.querySelectorAll("tbody tr")].map((tr) => Object.fromEntries([...tr.cells].map((td) => [td.dataset.col, td.textContent])));
    const box = v.querySelector("table")?.getBoundingClientRect();
    return {
      table: v.dataset.table, rows: Number(v.dataset.rows), version: v.dataset.version, heads, data: rows,
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
}

async function cleanup(res) {
  res.closing = true;
  if (res.context) await Promise.race([res.context.close().catch(() => {}), sleep(10000)]);
  if (res.userDataDir) rmSync(res.userDataDir, { recursive: true, force: true });
  await stopServer(res);
  if (res.projectDir) rmSync(res.projectDir, { recursive: true, force: true });
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
