//! `flowline serve` end to end, through the binary and its HTTP API: the FreshMart project's
//! stream, micro-batch and batch pipelines run side by side from one process with a generator
//! appending orders; serving tables are read as JSON, CSV, Arrow and by key, and with SQL; a
//! failing pipeline is retried with backoff without stopping the others; scheduled runs are
//! backfilled with their scheduled date; the token is enforced; metrics are exposed; SIGTERM
//! stops everything cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "s3cret";

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a new connection.
fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if headers.contains("transfer-encoding: chunked") {
        let mut out = vec![];
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = out;
    }
    let status = headers[9..12].parse().unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, Some(TOKEN), "")
}

fn post(addr: &str, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, Some(TOKEN), body)
}

/// Polls `f` until it gives `Some`, or panics after `secs` with `what`.
fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The FreshMart example with test settings: a faster operations trigger, a token, a pipeline
/// that always fails (a value too large for its sink column), a 3-second freshness alert on the
/// nightly P&L posted to `webhook`, and the example's Lambda view.
fn project(dir: &Path, webhook: &str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/freshmart");
    let toml = std::fs::read_to_string(example.join("flowline.toml")).unwrap();
    let view = &toml[toml.find("[[view]]").expect("the example's Lambda view")..];
    for f in ["fraud.sql", "operations.sql", "pnl.sql"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("big.csv"), "n\n3000000000\n").unwrap();
    std::fs::write(
        dir.join("broken.sql"),
        "CREATE TABLE src (n BIGINT) WITH ('connector' = 'files', 'path' = 'big.csv', 'format' = 'csv');
         CREATE TABLE small (n INT) WITH ('connector' = 'table');
         INSERT INTO small SELECT n FROM src;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("flowline.toml"),
        format!(
            "[project]\nname = \"freshmart-test\"\n[server]\ntoken = \"{TOKEN}\"\nalert_webhook = \"{webhook}\"\n
             [[generator]]\nkind = \"freshmart-orders\"\ntopic = \"orders\"\nrate = 200\nhistory = 3000\nbad_every = 101\n
             [[pipeline]]\nfile = \"fraud.sql\"\nmode = \"stream\"\nfreshness = \"2s\"\ncheckpoint_interval = \"500ms\"\n
             [[pipeline]]\nfile = \"operations.sql\"\nfreshness = \"2s\"\n
             [[pipeline]]\nfile = \"pnl.sql\"\nmode = \"batch\"\nschedule = \"0 4 * * *\"\nalert_freshness = \"3s\"\n
             [[pipeline]]\nfile = \"broken.sql\"\nmode = \"batch\"\n{view}"
        ),
    )
    .unwrap();
}

/// A loopback webhook: the JSON bodies POSTed to it, in order.
fn webhook() -> (String, std::sync::mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut raw = vec![];
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = s.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                assert!(head.starts_with("post /alerts "), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    break Some(raw[end + 4..end + 4 + len].to_vec());
                }
            };
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            if let Some(body) = body {
                let _ = tx.send(serde_json::from_slice(&body).unwrap());
            }
        }
    });
    (url, rx)
}

/// Waits up to `secs` for a webhook post that `f` accepts.
fn posted(
    hooks: &std::sync::mpsc::Receiver<Value>,
    secs: u64,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = hooks
            .recv_timeout(left)
            .expect("the webhook post did not arrive in time");
        if f(&v) {
            return v;
        }
    }
}

/// Kills the server if the test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM and waits (at most 60 s) for `serve` to stop every job and exit 0.
fn stop(server: &mut Server) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", server.0.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit}");
}

/// Starts `flowline serve` on a free port; returns the child and its address.
fn start(dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["serve", ".", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .env_remove("FLOWLINE_TOKEN")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.strip_prefix("serving on http://") {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn rows(reply: &Reply) -> Vec<Value> {
    reply.json()["rows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn serve_hosts_stream_micro_batch_and_batch_pipelines_with_an_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hook_url, hooks) = webhook();
    project(dir, &hook_url);
    let (child, addr) = start(dir);
    let mut server = Server(child);

    // The description is public; everything else needs the token.
    let spec = request(&addr, "GET", "/api/openapi.json", None, "");
    assert_eq!(spec.status, 200);
    assert!(spec.json()["paths"]["/api/tables/{name}"].is_object());
    let page = request(&addr, "GET", "/", None, "");
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("text/html"));
    assert!(
        page.text().contains("/api/pipelines"),
        "the dashboard polls the API"
    );
    let refused = request(&addr, "GET", "/api/pipelines", None, "");
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = request(&addr, "GET", "/metrics", Some("wrong"), "");
    assert_eq!(refused.status, 401);

    // The mode of `operations` was chosen from its freshness and says why.
    let ops = get(&addr, "/api/pipelines/operations").json();
    assert_eq!(ops["mode"], "micro-batch", "{ops}");
    assert!(
        ops["reason"]
            .as_str()
            .unwrap()
            .starts_with("chosen: freshness 2s"),
        "{ops}"
    );

    // Fraud alerts arrive from the stream: only stolen cards, four or more uses a minute.
    let alerts = wait(90, "fraud alerts", || {
        let r = get(&addr, "/api/tables/fraud_alerts");
        (r.status == 200 && !rows(&r).is_empty()).then(|| rows(&r))
    });
    for a in &alerts {
        assert!(
            a["card_id"].as_str().unwrap().starts_with("card-stolen-"),
            "{a}"
        );
        assert!(a["tx_last_minute"].as_i64().unwrap() >= 4, "{a}");
    }
    // One alert by key.
    let id = alerts[0]["order_id"].as_i64().unwrap();
    let one = get(&addr, &format!("/api/tables/fraud_alerts?key={id}"));
    assert_eq!(rows(&one).len(), 1);
    assert_eq!(rows(&one)[0]["order_id"].as_i64(), Some(id));
    let bad_key = get(&addr, "/api/tables/fraud_alerts?key=abc");
    assert_eq!(bad_key.status, 400, "{}", bad_key.text());

    // The micro-batch operations view and the batch P&L (run at start: it never ran).
    let minutes = wait(90, "store minutes", || {
        let r = get(&addr, "/api/tables/store_minutes");
        (r.status == 200 && !rows(&r).is_empty()).then(|| rows(&r))
    });
    assert!(minutes.iter().all(|m| m["orders"].as_i64().unwrap() > 0));
    // The first nightly run happened at start (it never ran): it succeeded.
    let first = wait(90, "the P&L's first run", || {
        let p = get(&addr, "/api/pipelines/pnl").json();
        p["last_run"].is_object().then_some(p)
    });
    assert_eq!(first["last_run"]["status"], "ok", "{first}");
    let pnl = wait(90, "the P&L", || {
        let r = get(&addr, "/api/tables/daily_pnl");
        (r.status == 200 && !rows(&r).is_empty()).then(|| rows(&r))
    });
    let orders: i64 = pnl.iter().map(|r| r["orders"].as_i64().unwrap()).sum();
    // The history (less its malformed orders) was in the topic before the first run.
    assert!(orders >= 3000 - 3000 / 101, "{orders} orders in the P&L");
    // The malformed orders went to the rejects of every pipeline that read them.
    let rejects = wait(60, "rejects", || {
        let r = get(&addr, "/api/pipelines/pnl/rejects?limit=5").json();
        (r["total"].as_u64().unwrap_or(0) > 0).then_some(r)
    });
    assert!(rejects["rejects"][0]["reason"].is_string(), "{rejects}");

    // Replaying a corrected reject of the fraud stream: checked first (a correction that still
    // does not decode is refused and nothing is appended), then appended to the partition it
    // came from through the server's producer (the generator's), read by the running job
    // without a new reject, marked replayed, and refused a second time through any pipeline
    // reading that topic.
    let reject = wait(60, "a fraud reject", || {
        let r = get(&addr, "/api/pipelines/fraud/rejects?limit=1").json();
        r["rejects"].get(0).cloned()
    });
    assert_eq!(reject["reason"], "bad-value", "{reject}");
    let raw = reject["raw"].as_str().unwrap();
    assert!(raw.contains("\"amount\":\"n/a\""), "{raw}");
    let partition_dir = Path::new(reject["file"].as_str().unwrap());
    let partition: u32 = partition_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reject}"));
    let topic_end = || {
        flowline_log::Log::open(dir.join(".flowline/log"))
            .unwrap()
            .topic("orders")
            .unwrap()
            .offsets(partition)
            .unwrap()
            .1
    };
    let mut still_bad = reject.clone();
    still_bad["raw"] = raw.replace("\"n/a\"", "\"12,34\"").into();
    let end = topic_end();
    let refused = post(
        &addr,
        "/api/pipelines/fraud/rejects/replay",
        &still_bad.to_string(),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("corrected row 1: still rejected: bad-value"),
        "{}",
        refused.text()
    );
    let mut fixed = reject.clone();
    fixed["raw"] = raw.replace("\"n/a\"", "12.34").into();
    let body = serde_json::to_string(&[&fixed]).unwrap();
    let replayed = post(&addr, "/api/pipelines/fraud/rejects/replay", &body);
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    let replayed = replayed.json();
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    let appended = &replayed["appended"][0];
    assert_eq!(appended["partition"], partition, "{replayed}");
    let offset = appended["offset"].as_u64().unwrap();
    let mut reader = flowline_log::Log::open(dir.join(".flowline/log"))
        .unwrap()
        .topic("orders")
        .unwrap()
        .reader(partition)
        .unwrap();
    // The refused attempt appended nothing: the generator's records since are not it.
    let since = reader
        .read(end, (offset + 1 - end) as usize, 1 << 26)
        .unwrap();
    assert_eq!(since.len() as u64, offset + 1 - end);
    let refused_raw = still_bad["raw"].as_str().unwrap().as_bytes();
    assert!(
        since.iter().all(|r| r.value != refused_raw),
        "the refused row was appended"
    );
    assert_eq!(
        since.last().unwrap().value,
        fixed["raw"].as_str().unwrap().as_bytes()
    );
    // The stream reads past it (a later reject of that partition) without rejecting it.
    let fraud_rejects = wait(60, "the stream past the replayed order", || {
        let r = get(&addr, "/api/pipelines/fraud/rejects?limit=1000").json();
        let rows = r["rejects"].as_array().unwrap().clone();
        rows.iter()
            .any(|x| x["file"] == reject["file"] && x["line"].as_u64() > Some(offset))
            .then_some(rows)
    });
    assert!(
        !fraud_rejects
            .iter()
            .any(|x| x["file"] == reject["file"] && x["line"].as_u64() == Some(offset)),
        "the corrected order was rejected again"
    );
    let marked = fraud_rejects
        .iter()
        .find(|x| x["file"] == reject["file"] && x["line"] == reject["line"])
        .expect("the original reject is still listed");
    assert!(marked["replayed_at"].is_string(), "{marked}");
    let twice = post(&addr, "/api/pipelines/fraud/rejects/replay", &body);
    assert_eq!(twice.status, 409, "{}", twice.text());
    let ops_reject = wait(60, "the same reject in operations", || {
        let r = get(&addr, "/api/pipelines/operations/rejects?limit=1000").json();
        r["rejects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["line"] == reject["line"] && x["file"] == reject["file"])
            .cloned()
    });
    let mut ops_fixed = ops_reject.clone();
    ops_fixed["raw"] = fixed["raw"].clone();
    let via_ops = post(
        &addr,
        "/api/pipelines/operations/rejects/replay",
        &ops_fixed.to_string(),
    );
    assert_eq!(via_ops.status, 409, "{}", via_ops.text());

    // Formats and SQL.
    let csv = get(&addr, "/api/tables/daily_pnl?format=csv");
    assert!(csv.headers.contains("text/csv"));
    assert!(
        csv.text().starts_with("day,store_id,orders,revenue\n"),
        "{}",
        csv.text()
    );
    let arrow = get(&addr, "/api/tables/daily_pnl?format=arrow");
    assert!(arrow
        .headers
        .contains("application/vnd.apache.arrow.stream"));
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body), None).unwrap();
    let arrow_rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert!(arrow_rows > 0);
    let sum = post(&addr, "/api/sql", "SELECT SUM(orders) AS n FROM daily_pnl");
    assert_eq!(sum.status, 200, "{}", sum.text());
    assert!(rows(&sum)[0]["n"].as_i64().unwrap() >= orders);
    for statement in [
        "DROP TABLE daily_pnl",
        "INSERT INTO daily_pnl SELECT * FROM daily_pnl",
        "CREATE TABLE x AS SELECT 1",
    ] {
        let r = post(&addr, "/api/sql", statement);
        assert_eq!(r.status, 400, "{statement}: {}", r.text());
    }

    // The Lambda view: closed days from the nightly batch, today from the micro-batch minutes,
    // each equal to its source in one snapshot (the view is also a table in SQL).
    let view = wait(60, "the Lambda view with both layers", || {
        let v = get(&addr, "/api/views/revenue_by_day").json();
        let layers: Vec<&str> = v["rows"]
            .as_array()?
            .iter()
            .map(|r| r["_layer"].as_str().unwrap())
            .collect();
        (layers.contains(&"batch") && layers.contains(&"stream")).then_some(v)
    });
    let boundary = view["boundary"].as_str().unwrap()[..10].to_string();
    for r in view["rows"].as_array().unwrap() {
        let day = r["day"].as_str().unwrap();
        match r["_layer"].as_str().unwrap() {
            "batch" => assert!(day < boundary.as_str(), "{r} (boundary {boundary})"),
            _ => assert!(day >= boundary.as_str(), "{r} (boundary {boundary})"),
        }
    }
    let check = post(
        &addr,
        "/api/sql",
        "SELECT v._layer, COUNT(*) AS n, SUM(CASE WHEN v.orders = COALESCE(p.orders, m.orders) \
           THEN 0 ELSE 1 END) AS wrong \
         FROM revenue_by_day v \
         LEFT JOIN daily_pnl p ON v._layer = 'batch' AND v.day = p.day AND v.store_id = p.store_id \
         LEFT JOIN (SELECT CAST(window_start AS DATE) AS day, store_id, SUM(orders) AS orders \
                    FROM store_minutes GROUP BY 1, 2) m \
           ON v._layer = 'stream' AND v.day = m.day AND v.store_id = m.store_id \
         GROUP BY v._layer ORDER BY v._layer",
    );
    assert_eq!(check.status, 200, "{}", check.text());
    let layers = rows(&check);
    assert_eq!(layers.len(), 2, "{layers:?}");
    for l in &layers {
        assert!(l["n"].as_i64().unwrap() > 0, "{l}");
        assert_eq!(l["wrong"], 0, "{l}");
    }
    assert_eq!(get(&addr, "/api/views/nope").status, 404);

    // Alerts: the P&L's output grows older than its 3 s threshold; the alert is on the API and
    // in the metrics, and posted to the webhook; a run now resolves it (posted too).
    let fired = posted(&hooks, 60, |v| {
        v["alert"]["pipeline"] == "pnl" && v["alert"]["status"] == "firing"
    });
    assert_eq!(fired["alert"]["kind"], "freshness", "{fired}");
    assert_eq!(fired["alert"]["threshold"], 3000, "{fired}");
    assert_eq!(fired["project"], "freshmart-test");
    let firing = get(&addr, "/api/alerts").json();
    assert!(
        firing["firing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["pipeline"] == "pnl"),
        "{firing}"
    );
    assert_eq!(
        get(&addr, "/api/pipelines/pnl").json()["alerts"][0]["kind"],
        "freshness"
    );
    assert!(get(&addr, "/metrics")
        .text()
        .contains("flowline_alert_firing{pipeline=\"pnl\",kind=\"freshness\"} 1"));
    assert_eq!(post(&addr, "/api/pipelines/pnl/run", "").status, 202);
    let resolved = posted(&hooks, 60, |v| {
        v["alert"]["pipeline"] == "pnl" && v["alert"]["status"] == "resolved"
    });
    assert!(
        resolved["alert"]["resolved_ms"].as_i64().unwrap()
            >= fired["alert"]["since_ms"].as_i64().unwrap()
    );

    // The broken pipeline fails, is retried with backoff, and the others keep running.
    let broken = wait(60, "retries of the broken pipeline", || {
        let b = get(&addr, "/api/pipelines/broken").json();
        (b["failures"].as_u64().unwrap_or(0) >= 2).then_some(b)
    });
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("cannot be written as Int32"),
        "{broken}"
    );
    assert!(broken["restarts"].as_u64().unwrap() >= 1, "{broken}");
    // After 4 attempts (1, 2 and 4 s apart) its run is given up: it waits, failed, for a
    // request instead of retrying forever.
    let broken = wait(60, "the broken run given up", || {
        let b = get(&addr, "/api/pipelines/broken").json();
        (b["status"] == "failed").then_some(b)
    });
    assert_eq!(broken["failures"], 4, "{broken}");
    let fraud = get(&addr, "/api/pipelines/fraud").json();
    assert_eq!(fraud["status"], "running", "{fraud}");
    assert_eq!(fraud["failures"], 0, "{fraud}");
    assert!(fraud["checkpoints"].as_u64().unwrap() >= 1, "{fraud}");
    assert_eq!(fraud["freshness"]["target_ms"], 2000);

    // Backfill two missed nightly runs: each gets its scheduled date.
    let runs_before = get(&addr, "/api/pipelines/pnl").json()["runs"]
        .as_u64()
        .unwrap();
    let queued = post(
        &addr,
        "/api/pipelines/pnl/backfill?from=2026-03-01&to=2026-03-03",
        "",
    );
    assert_eq!(queued.status, 202, "{}", queued.text());
    assert_eq!(
        queued.json()["scheduled_times"],
        serde_json::json!(["2026-03-01T04:00:00Z", "2026-03-02T04:00:00Z"])
    );
    wait(90, "the backfilled runs", || {
        let p = get(&addr, "/api/pipelines/pnl").json();
        (p["runs"].as_u64().unwrap() >= runs_before + 2 && p["status"] == "waiting").then_some(())
    });
    let pnl = get(&addr, "/api/pipelines/pnl").json();
    assert_eq!(
        (
            &pnl["backfill_done"],
            &pnl["backfill_failed"],
            &pnl["backfill_queued"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{pnl}"
    );
    let runs = get(&addr, "/api/pipelines/pnl/runs?limit=2").json();
    let dates: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["params"]["SCHEDULED_DATE"].as_str().unwrap())
        .collect();
    assert_eq!(dates, ["2026-03-02", "2026-03-01"], "{runs}");
    let not_scheduled = post(
        &addr,
        "/api/pipelines/fraud/backfill?from=2026-03-01&to=2026-03-03",
        "",
    );
    assert_eq!(not_scheduled.status, 400);
    assert_eq!(get(&addr, "/api/pipelines/nope").status, 404);

    // Metrics per pipeline, source, sink and operator.
    let metrics = get(&addr, "/metrics").text();
    for needle in [
        "flowline_rows_read_total{pipeline=\"fraud\",source=\"orders\"}",
        "flowline_rows_written_total{pipeline=\"fraud\",sink=\"fraud_alerts\"}",
        "flowline_lag_records{pipeline=\"fraud\",source=\"orders\"}",
        "flowline_operator_state_bytes{pipeline=\"fraud\",sink=\"fraud_alerts\",operator=\"over-aggregate\"",
        "flowline_run_failures_total{pipeline=\"broken\"} 4",
        "flowline_pipeline_up{pipeline=\"broken\"} 0",
        "flowline_backfill_runs_total{pipeline=\"pnl\",outcome=\"ok\"} 2",
        "flowline_freshness_seconds{pipeline=\"fraud\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }
    // Rows in and out per operator of the fraud stream, from one snapshot: each operator
    // received what the one before it sent, and the first received rows.
    let per_position = |family: &str| -> Vec<(String, u64)> {
        let prefix = format!("{family}{{pipeline=\"fraud\",sink=\"fraud_alerts\",operator=\"");
        let mut v: Vec<(usize, String, u64)> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|rest| {
                let (op, rest) = rest.split_once('"').unwrap();
                let pos = rest.split('"').nth(1).unwrap().parse().unwrap();
                let n = rest.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
                (pos, op.to_string(), n)
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, op, n)| (op, n)).collect()
    };
    let (rows_in, rows_out) = (
        per_position("flowline_operator_rows_in_total"),
        per_position("flowline_operator_rows_out_total"),
    );
    assert!(rows_in.len() >= 2, "{metrics}");
    assert_eq!(rows_in.len(), rows_out.len());
    assert!(rows_in[0].1 > 0, "{rows_in:?}");
    for i in 1..rows_in.len() {
        assert_eq!(rows_in[i].1, rows_out[i - 1].1, "{rows_in:?} {rows_out:?}");
    }

    // SIGTERM: every job stops (streams with a final checkpoint) and the process exits 0.
    stop(&mut server);
    // After the process is gone, the serving tables are readable on disk.
    let table = flowline_connectors::serving::ServingTable::at(dir.join("serving/fraud_alerts"));
    let (_, batches) = table.read(None).unwrap().unwrap();
    let served: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(served >= alerts.len());
}

/// Kappa replay-and-swap: v2 of the fraud pipeline (a lower threshold) replays the log from the
/// start into a shadow table while v1 serves; once caught up it is compared with v1 and swapped
/// in. A reader polling the table all along never sees it shrink (no half-built table, no gap),
/// and the pipeline goes on writing v2. Bad requests fail before anything runs; a stopped
/// project replays in-process from the command line.
#[test]
fn replay_builds_a_new_version_beside_the_served_one_and_swaps_it_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hook_url, _hooks) = webhook();
    project(dir, &hook_url);
    let (child, addr) = start(dir);
    let mut server = Server(child);
    let alerts = |addr: &str| -> Option<(u64, String)> {
        let r = get(addr, "/api/tables/fraud_alerts?limit=0");
        (r.status == 200).then(|| {
            let v = r.json();
            (
                v["total_rows"].as_u64().unwrap(),
                v["version"].as_str().unwrap().to_string(),
            )
        })
    };
    let v1_rows = wait(60, "v1 fraud alerts", || {
        alerts(&addr).filter(|(n, _)| *n > 0).map(|(n, _)| n)
    });

    // A reader polls all along: the table never shrinks and never goes missing.
    let stop_reader = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let addr = addr.clone();
        let stop = stop_reader.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<(u64, String)> = vec![];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (n, version) = alerts(&addr).expect("the table is always readable");
                if let Some((prev, _)) = seen.last() {
                    assert!(
                        n >= *prev,
                        "the served table shrank from {prev} to {n} ({version})"
                    );
                }
                seen.push((n, version));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };

    // Bad requests fail before anything runs.
    let r = post(&addr, "/api/pipelines/fraud/replay?as=v1", "");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("already serves version v1"),
        "{}",
        r.text()
    );
    let r = post(&addr, "/api/pipelines/fraud/replay", "");
    assert_eq!(r.status, 400, "{}", r.text());
    let good = std::fs::read_to_string(dir.join("fraud.sql")).unwrap();
    std::fs::write(
        dir.join("fraud.sql"),
        good.replace("WHERE tx_last_minute", "WHER tx"),
    )
    .unwrap();
    let r = post(&addr, "/api/pipelines/fraud/replay?as=v2", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("new version of pipeline fraud"),
        "{}",
        r.text()
    );
    assert!(!dir.join("serving/fraud_alerts/v2.redb").exists());

    // v2: alerts from three transactions a minute instead of four.
    std::fs::write(
        dir.join("fraud.sql"),
        good.replace("tx_last_minute >= 4", "tx_last_minute >= 3"),
    )
    .unwrap();

    // A replay cancelled while it catches up: nothing is swapped, and its version and state are
    // deleted, so the name can be used again.
    let cancel = |addr: &str| {
        request(
            addr,
            "DELETE",
            "/api/pipelines/fraud/replay",
            Some(TOKEN),
            "",
        )
    };
    assert_eq!(cancel(&addr).status, 409, "nothing is replaying yet");
    let r = post(&addr, "/api/pipelines/fraud/replay?as=v2&max_lag=0", "");
    assert_eq!(r.status, 202, "{}", r.text());
    // (Cancelled through the API at once: the replay must still be catching up.)
    let r = cancel(&addr);
    assert_eq!(r.status, 202, "{}", r.text());
    let cancelled = wait(60, "the replay to be cancelled", || {
        let r = get(&addr, "/api/pipelines/fraud/replay").json();
        (!matches!(r["status"].as_str(), Some("catching-up" | "comparing"))).then_some(r)
    });
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(!dir.join("serving/fraud_alerts/v2.redb").exists());
    assert!(!dir.join(".flowline/fraud/versions/v2").exists());
    assert_eq!(get(&addr, "/api/pipelines/fraud").json()["version"], "v1");
    let r = cancel(&addr);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("no replay running"), "{}", r.text());
    // The command line asks the server to cancel; with nothing running it fails and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["replay", ".", "fraud", "--cancel", "--listen", &addr])
        .current_dir(dir)
        .env_remove("FLOWLINE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second cancel succeeded: {err}");
    assert!(err.contains("no replay running"), "{err}");
    let r = post(
        &addr,
        "/api/pipelines/fraud/replay?as=v2&max_lag=50&diff=true",
        "",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let again = post(&addr, "/api/pipelines/fraud/replay?as=v3", "");
    assert_eq!(again.status, 409, "one replay at a time: {}", again.text());
    let done = wait(90, "the replay to swap", || {
        let r = get(&addr, "/api/pipelines/fraud/replay").json();
        assert_ne!(r["status"], "failed", "{r}");
        (r["status"] == "swapped").then_some(r)
    });
    assert_eq!(done["from_version"], "v1");
    // The state the cancelled replay would have left is where this one's is.
    assert!(dir.join(".flowline/fraud/versions/v2").is_dir());
    let diff = &done["diff"][0];
    assert_eq!(diff["table"], "fraud_alerts", "{done}");
    // Every v1 alert is a v2 alert; v2 adds the three-a-minute ones.
    assert_eq!(diff["changed"], 0, "{diff}");
    assert_eq!(diff["only_from"], 0, "{diff}");
    assert!(diff["only_to"].as_u64().unwrap() > 0, "{diff}");
    assert!(diff["same"].as_u64().unwrap() >= v1_rows, "{diff}");
    assert!(diff["samples"][0]["to"]["tx_last_minute"] == 3, "{diff}");

    // The pipeline goes on with v2, from the replay's checkpoint.
    let p = wait(30, "fraud running on v2", || {
        let p = get(&addr, "/api/pipelines/fraud").json();
        (p["version"] == "v2" && p["status"] == "running").then_some(p)
    });
    assert_eq!(p["replay"]["version"], "v2");
    let written = |addr: &str| {
        let t = get(addr, "/api/tables/fraud_alerts?limit=0").json();
        t["updated_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no updated_ms: {t}"))
    };
    let at_swap = written(&addr);
    wait(30, "v2 publishing new epochs", || {
        (written(&addr) > at_swap).then_some(())
    });
    let table = get(&addr, "/api/tables/fraud_alerts?limit=100000").json();
    assert_eq!(table["version"], "v2");
    assert!(rows(&get(&addr, "/api/tables/fraud_alerts?limit=100000"))
        .iter()
        .all(|r| r["tx_last_minute"].as_i64().unwrap() >= 3));
    stop_reader.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.join().expect("the reader saw no gap");
    assert!(seen.iter().any(|(_, v)| v == "v1") && seen.iter().any(|(_, v)| v == "v2"));

    // Corrections: six hours of the operations table rerun with fixed logic (revenue doubled,
    // say) replace exactly that range; rows outside it stay as they were.
    let minutes = |addr: &str| -> std::collections::BTreeMap<(String, i64), f64> {
        rows(&get(addr, "/api/tables/store_minutes?limit=10000000"))
            .iter()
            .map(|r| {
                let start = chrono::NaiveDateTime::parse_from_str(
                    r["window_start"].as_str().unwrap(),
                    "%Y-%m-%dT%H:%M:%S%.f",
                )
                .unwrap()
                .and_utc()
                .timestamp_millis();
                (
                    (r["store_id"].as_str().unwrap().to_string(), start),
                    r["revenue"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let before = wait(60, "store minutes", || {
        let m = minutes(&addr);
        (m.len() > 100).then_some(m)
    });
    let hour = 3_600_000;
    let first = before.keys().map(|(_, t)| *t).min().unwrap();
    let (from, to) = ((first / hour + 1) * hour, (first / hour + 7) * hour);
    let ops = std::fs::read_to_string(dir.join("operations.sql")).unwrap();
    std::fs::write(
        dir.join("operations.sql"),
        ops.replace("SUM(amount) AS revenue", "SUM(amount) * 2 AS revenue"),
    )
    .unwrap();
    let bad = post(
        &addr,
        &format!("/api/pipelines/operations/replay?from={to}&to={from}"),
        "",
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(
        bad.text().contains("the time range is empty"),
        "{}",
        bad.text()
    );
    let r = post(
        &addr,
        &format!("/api/pipelines/operations/replay?from={from}&to={to}"),
        "",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let done = wait(90, "the corrections", || {
        let r = get(&addr, "/api/pipelines/operations/replay").json();
        assert_ne!(r["status"], "failed", "{r}");
        (r["status"] == "corrected").then_some(r)
    });
    assert!(done["rows_written"].as_u64().unwrap() > 0, "{done}");
    let after = minutes(&addr);
    let mut corrected = 0;
    for (key, revenue) in &before {
        let (_, start) = key;
        if *start < from {
            assert_eq!(after.get(key), Some(revenue), "{key:?} is before the range");
        } else if *start < to {
            assert_eq!(
                after.get(key),
                Some(&(revenue * 2.0)),
                "{key:?} is in the range"
            );
            corrected += 1;
        }
    }
    assert!(corrected > 0);
    let in_range = |m: &std::collections::BTreeMap<(String, i64), f64>| {
        m.keys().filter(|(_, t)| (from..to).contains(t)).count()
    };
    assert_eq!(in_range(&after), in_range(&before));

    // A batch pipeline's replay swaps in after one run; its next run reads everything again
    // (the swap must not leave it stopped before it starts).
    let r = post(&addr, "/api/pipelines/pnl/replay?as=v2", "");
    assert_eq!(r.status, 202, "{}", r.text());
    wait(90, "the P&L replay to swap", || {
        let r = get(&addr, "/api/pipelines/pnl/replay").json();
        assert_ne!(r["status"], "failed", "{r}");
        (r["status"] == "swapped").then_some(())
    });
    let runs = get(&addr, "/api/pipelines/pnl").json()["runs"]
        .as_u64()
        .unwrap();
    assert_eq!(post(&addr, "/api/pipelines/pnl/run", "").status, 202);
    let after = wait(90, "the P&L's run on v2", || {
        let p = get(&addr, "/api/pipelines/pnl").json();
        (p["runs"].as_u64().unwrap() > runs && p["status"] == "waiting").then_some(p)
    });
    assert_eq!(after["version"], "v2", "{after}");
    assert_eq!(after["last_run"]["status"], "ok", "{after}");
    assert!(
        after["last_run"]["rows_read"].as_u64().unwrap() > 1000,
        "the run after the swap read nothing: {after}"
    );

    // Stopped, the project replays in this process from the command line.
    stop(&mut server);
    let out = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args([
            "replay", ".", "pnl", "--as", "v3", "--diff", "--listen", &addr,
        ])
        .current_dir(dir)
        .env_remove("FLOWLINE_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("replaying in this process"), "{err}");
    assert!(
        err.contains("replay of pnl into v3 (from v2): swapped"),
        "{err}"
    );
    assert!(err.contains("diff daily_pnl v2→v3"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("serving/daily_pnl/CURRENT"))
            .unwrap()
            .trim(),
        "v3"
    );
}
