//! `flowline log ...` end to end through the binary: create, produce (JSON lines with keys,
//! CSV, bad lines), consume (from the beginning, by offset, with a group, following a producer
//! in another process), describe (tables and JSON), and the one-writer lock across processes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn flowline(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(args)
        .current_dir(cwd)
        .env_remove("FLOWLINE_LOG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowline");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `flowline log <args> --log-dir <dir>`, which must succeed; returns stdout.
fn ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = run(dir, args, stdin);
    assert!(
        out.status.success(),
        "flowline log {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let log_dir = dir.join("log");
    let mut full = vec!["log"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--log-dir", log_dir.to_str().unwrap()]);
    flowline(dir, &full, stdin)
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn describe(dir: &Path, topic: &str) -> Value {
    serde_json::from_str(&ok(dir, &["describe", topic, "--json"], "")).unwrap()
}

/// Total lag of a group from `describe --json`.
fn group_lag(description: &Value, group: &str) -> u64 {
    description["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {description}"))["lag"]
        .as_u64()
        .unwrap()
}

fn order(i: u64) -> String {
    format!(
        r#"{{"order_id":{i},"store":"s{}","amount":{}.5}}"#,
        i % 4,
        i * 3
    )
}

#[test]
fn create_produce_consume_with_groups_and_describe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = ok(
        dir,
        &[
            "create",
            "orders",
            "--partitions",
            "3",
            "--retention",
            "7d",
            "--retention-bytes",
            "1GB",
            "--segment-bytes",
            "64MB",
        ],
        "",
    );
    assert!(
        out.contains("created topic `orders` with 3 partitions"),
        "{out}"
    );
    let err = run(dir, &["create", "orders", "--partitions", "3"], "");
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("already exists"));

    // Produce 12 orders keyed by store.
    let input: String = (0..12).map(|i| order(i) + "\n").collect();
    let out = ok(dir, &["produce", "orders", "--key", "store"], &input);
    assert!(
        out.starts_with("produced 12 records to topic `orders` (partition "),
        "{out}"
    );

    // From the beginning, with metadata: every line comes back once, and a key's records all
    // sit in one partition with dense offsets.
    let out = ok(
        dir,
        &["consume", "orders", "--from-beginning", "--print-metadata"],
        "",
    );
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 12);
    let mut partition_of_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut offsets: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_string();
        let p = r["partition"].as_u64().unwrap();
        assert_eq!(r["value"]["store"].as_str().unwrap(), key);
        assert_eq!(*partition_of_key.entry(key).or_insert(p), p, "{r}");
        offsets
            .entry(p)
            .or_default()
            .push(r["offset"].as_u64().unwrap());
        assert!(r["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
    assert_eq!(partition_of_key.len(), 4);
    for list in offsets.values() {
        assert_eq!(*list, (0..list.len() as u64).collect::<Vec<_>>());
    }
    // Without metadata: the values exactly as produced.
    let out = ok(dir, &["consume", "orders", "--from-beginning"], "");
    let got: BTreeSet<String> = lines(&out).into_iter().collect();
    let want: BTreeSet<String> = (0..12).map(order).collect();
    assert_eq!(got, want);
    // Without a start option and without a group: the end, so nothing.
    assert_eq!(ok(dir, &["consume", "orders"], ""), "");

    // A group: the first run prints everything and commits, the second prints nothing.
    let first = ok(
        dir,
        &[
            "consume",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
        ],
        "",
    );
    assert_eq!(lines(&first).len(), 12);
    assert_eq!(
        ok(dir, &["consume", "orders", "--group", "billing"], ""),
        ""
    );
    let d = describe(dir, "orders");
    assert_eq!(group_lag(&d, "billing"), 0);
    let ends: Vec<u64> = d["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap())
        .collect();
    assert_eq!(ends.iter().sum::<u64>(), 12);
    assert_eq!(d["config"]["retention_ms"], 604_800_000);
    assert_eq!(d["config"]["retention_bytes"], 1_000_000_000u64);
    assert_eq!(d["config"]["segment_bytes"], 64_000_000);

    // More records: describe shows the lag, the group reads exactly the new ones.
    let more: String = (12..17).map(|i| order(i) + "\n").collect();
    ok(dir, &["produce", "orders", "--key", "store"], &more);
    assert_eq!(group_lag(&describe(dir, "orders"), "billing"), 5);
    let text = ok(dir, &["describe", "orders"], "");
    assert!(
        text.contains("topic orders: 3 partition(s), retention 7d or 1GB"),
        "{text}"
    );
    assert!(text.contains("group billing: lag 5"), "{text}");
    let again = ok(dir, &["consume", "orders", "--group", "billing"], "");
    let got: BTreeSet<String> = lines(&again).into_iter().collect();
    assert_eq!(got, (12..17).map(order).collect());
    assert_eq!(group_lag(&describe(dir, "orders"), "billing"), 0);

    // One partition from an offset, limited.
    let p = partition_of_key["s1"].to_string();
    let out = ok(
        dir,
        &[
            "consume",
            "orders",
            "--partition",
            &p,
            "--offset",
            "1",
            "--max",
            "2",
            "--print-metadata",
        ],
        "",
    );
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["offset"], 1);
    assert_eq!(records[1]["offset"], 2);
    assert!(records
        .iter()
        .all(|r| r["partition"] == partition_of_key["s1"]));
    let bad = run(dir, &["consume", "orders", "--partition", "7"], "");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no partition 7"));
}

#[test]
fn bad_lines_are_reported_with_their_number_and_fail_the_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["create", "t"], "");
    let input = "{\"a\":1}\nnot json\n[1,2]\n\n{\"a\":2}\n{\"a\":\n";
    let out = run(dir, &["produce", "t"], input);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: not JSON"), "{stderr}");
    assert!(
        stderr.contains("line 3: not a JSON object but an array"),
        "{stderr}"
    );
    assert!(stderr.contains("line 6: not JSON"), "{stderr}");
    assert!(
        !stderr.contains("line 4"),
        "a blank line is not an error: {stderr}"
    );
    assert!(stderr.contains("3 input line(s) were skipped"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("produced 2 records"), "{stdout}");
    // The good lines were produced.
    assert_eq!(
        lines(&ok(dir, &["consume", "t", "--from-beginning"], "")),
        vec!["{\"a\":1}", "{\"a\":2}"]
    );
    // Unknown topics are named.
    let out = run(dir, &["produce", "nope"], "{}\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no topic `nope`"));
}

#[test]
fn csv_rows_become_json_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["create", "c", "--partitions", "2"], "");
    let file = dir.join("in.csv");
    std::fs::write(
        &file,
        "id,store,note\n1,s1,\"hello, world\"\n2,s2,\"quote \"\"q\"\"\"\n3,s1\n4,s1,x\n",
    )
    .unwrap();
    let out = run(
        dir,
        &[
            "produce",
            "c",
            "--format",
            "csv",
            "--key",
            "store",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 4: bad CSV row"), "{stderr}");
    // Values are JSON objects in header order, exactly as stored.
    let mut values = lines(&ok(dir, &["consume", "c", "--from-beginning"], ""));
    values.sort();
    assert_eq!(
        values,
        vec![
            r#"{"id":"1","store":"s1","note":"hello, world"}"#,
            r#"{"id":"2","store":"s2","note":"quote \"q\""}"#,
            r#"{"id":"4","store":"s1","note":"x"}"#,
        ]
    );
    // The key is the store column.
    let out = ok(
        dir,
        &["consume", "c", "--from-beginning", "--print-metadata"],
        "",
    );
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["key"], v["value"]["store"], "{line}");
    }
    let out = run(
        dir,
        &["produce", "c", "--format", "csv", "--key", "shop"],
        "id,store\n1,a\n",
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no column `shop` in the CSV header (columns: id, store)"));
}

#[test]
fn log_dir_comes_from_the_environment_or_defaults_to_dot_flowline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = flowline(dir, &["log", "create", "here"], "");
    assert!(out.status.success());
    assert!(dir.join(".flowline/log/here/topic.json").is_file());
    let env_dir = dir.join("elsewhere");
    let out = Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(["log", "create", "there"])
        .current_dir(dir)
        .env("FLOWLINE_LOG_DIR", &env_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(env_dir.join("there/topic.json").is_file());
    // Reading a log that does not exist does not create it.
    let out = flowline(dir, &["log", "describe", "x", "--log-dir", "missing"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no log at `missing`"));
    assert!(!dir.join("missing").exists());
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_following_consumer_in_another_process_sees_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Small segments, so the consumer crosses segment rolls while following.
    ok(dir, &["create", "live", "--segment-bytes", "1KiB"], "");
    let log_dir = dir.join("log");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_flowline"))
            .args(["log", "consume", "live", "--from-beginning", "--follow"])
            .args(["--log-dir", log_dir.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut want = Vec::new();
    for batch in 0..4 {
        let input: String = (0..25)
            .map(|i| {
                let line = format!(r#"{{"batch":{batch},"i":{i},"pad":"{}"}}"#, "p".repeat(i));
                want.push(line.clone());
                line + "\n"
            })
            .collect();
        ok(dir, &["produce", "live"], &input);
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => panic!(
                "the consumer printed {} of {} records",
                got.len(),
                want.len()
            ),
        }
    }
    // One partition: the order is the produce order.
    assert_eq!(got, want);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    drop(child);
    let d = describe(dir, "live");
    assert!(d["partitions"][0]["segments"].as_u64().unwrap() > 3, "{d}");
}

#[test]
fn a_second_producer_process_is_refused_while_the_first_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["create", "t", "--partitions", "2"], "");
    let log_dir = dir.join("log");
    // The first producer holds the partitions while it waits for its standard input.
    let mut first = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_flowline"))
            .args([
                "log",
                "produce",
                "t",
                "--log-dir",
                log_dir.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Once its first record is readable, it surely holds the partitions' locks.
    let mut stdin = first.0.stdin.take().unwrap();
    stdin.write_all(b"{\"from\":\"first\"}\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok(dir, &["consume", "t", "--from-beginning"], "").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first producer wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(dir, &["produce", "t"], "{\"from\":\"refused\"}\n");
    assert!(!out.status.success());
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(refusal.contains("already has a writer"), "{refusal}");
    // Once the first finishes, the second may write.
    drop(stdin);
    let status = first.0.wait().unwrap();
    assert!(status.success());
    ok(dir, &["produce", "t"], "{\"from\":\"second\"}\n");
    let all = lines(&ok(dir, &["consume", "t", "--from-beginning"], ""));
    let all: BTreeSet<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(
        all,
        BTreeSet::from(["{\"from\":\"first\"}", "{\"from\":\"second\"}"])
    );
}
