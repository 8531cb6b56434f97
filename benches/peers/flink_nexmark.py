#!/usr/bin/env python3
"""Run the Nexmark queries of benches/nexmark/ on Apache Flink (PyFlink, local MiniCluster).

Flink reads the same events as Flowline: JSON lines files written by
`flowline generate nexmark --format json` (PyFlink's bundled jars have the filesystem connector
with the csv and json formats, but no parquet format). Each query is the published text:
ddl_gen.sql with its `WITH (...)` replaced by a filesystem/json source over those files,
ddl_views.sql with ${NEXMARK_TABLE} = datagen, and qN.sql unchanged except ${FLINK_HOME} (q13's
side input folder). The blackhole sink is kept as the query declares it. q14's Java UDF
count_char is compiled from flink_udf/ (javac, against PyFlink's jars) and loaded with
`pipeline.jars`, so `CREATE FUNCTION count_char AS 'com.github.nexmark.flink.udf.CountChar'`
runs as published.

Every query runs in its own Python process and so its own JVM (PyFlink's gateway JVM, which runs
the MiniCluster in local mode). In that JVM an optional warm-up run of the same query over a
smaller input comes first (same JVM, separate TableEnvironment), then the measured run:

  wall  = the job's net runtime as Flink reports it (JobExecutionResult.getNetRuntime(): from
          the job's INITIALIZING to its FINISHED status). It leaves out JVM start, SQL planning
          and optimisation, and MiniCluster start-up; it includes task deployment, operator set-up,
          reading and parsing the files, processing and the end of input (all windows fire).
  cpu   = user + system CPU seconds of the JVM (and any other descendant process) between the
          return of execute_sql(INSERT ...) (job planned, MiniCluster started, job submitted) and
          the job's end, from /proc/<pid>/stat. The JVM runs nothing else at that time.
  events/s          = events / wall
  events/s per core = events / cpu  (as `flowline bench nexmark` defines it: events per CPU
                      second, whatever the parallelism)
  events/s per slot = events / wall / parallelism

Configuration: parallelism.default = --parallelism; the upstream Nexmark runner's table options
(table.exec.mini-batch.enabled = true, allow-latency 2 s, size 50000,
table.optimizer.distinct-agg.split.enabled = true) unless --no-upstream-options; default state
backend (hashmap, on the heap), no checkpoints; streaming runtime mode unless --mode batch.

Usage (from the repository root):
    python3 benches/peers/flink_nexmark.py --events 1000000 --queries q0,q5 --parallelism 2
    python3 benches/peers/flink_nexmark.py --input DIR --events N --json out.json

Exit code 0 when it ran (queries that fail on Flink are reported, not fatal), 2 on a setup error.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent
NEXMARK = REPO / "benches" / "nexmark"
ALL_QUERIES = [f"q{i}" for i in range(23)]
# Events per second of event time: Flink's Nexmark default (TPS) and `flowline bench nexmark`'s.
# At this rate 1 000 000 events span 0.1 s of event time, less than the 4 s watermark delay, so
# no event can be late whatever order the parallel file readers take the files in.
RATE = 10_000_000
FILES = 4
SIDE_INPUT_ROWS = 10_000
UDF_SOURCE = PEERS / "flink_udf" / "com" / "github" / "nexmark" / "flink" / "udf" / "CountChar.java"
# Options of upstream's nexmark-flink conf/config.yaml ("Runtime Others") that are table options.
UPSTREAM_TABLE_OPTIONS = {
    "table.exec.mini-batch.enabled": "true",
    "table.exec.mini-batch.allow-latency": "2s",
    "table.exec.mini-batch.size": "50000",
    "table.optimizer.distinct-agg.split.enabled": "true",
}


# --------------------------------------------------------------------------------------------
# Input


def input_dir(work, events):
    return work / f"input-json-{events}"


def generate(flowline, data_dir, events, timeout=3600, rate=RATE, files=FILES, quiet=False):
    """`flowline generate nexmark --format json` into data_dir, unless it is already there.

    The marker lives beside the folder (<folder>.params.json), not in it, so that no reader
    sees it as data."""
    marker = data_dir.with_name(data_dir.name + ".params.json")
    params = {"events": events, "rate": rate, "files": files, "format": "json", "seed": 0,
              "flowline_mtime": os.path.getmtime(flowline)}
    if marker.exists() and json.loads(marker.read_text()) == params and \
            len(list(data_dir.glob("part-*.jsonl"))) == files:
        if not quiet:
            print(f"input: reusing {data_dir} ({events} events)", flush=True)
        return
    marker.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(flowline), "generate", "nexmark", str(data_dir), "--events", str(events),
           "--rate", str(rate), "--files", str(files), "--format", "json", "--seed", "0"]
    print("input: " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    marker.write_text(json.dumps(params))


def count_events(data_dir):
    marker = data_dir.with_name(data_dir.name + ".params.json")
    if marker.exists():
        return json.loads(marker.read_text())["events"]
    n = 0
    for f in sorted(data_dir.glob("*.jsonl")):
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def write_side_input(flink_home):
    """q13's side input as Flowline writes it: `key,key` for keys 0..9999."""
    path = Path(flink_home) / "data" / "side_input.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k},{k}\n" for k in range(SIDE_INPUT_ROWS)))
    return path


# --------------------------------------------------------------------------------------------
# SQL


def not_applicable_reason(text):
    for line in text.splitlines():
        if line.startswith("-- Flowline: not applicable:"):
            return line.split(":", 2)[2].strip()
    return None


def flink_source_ddl(data_dir):
    gen = (NEXMARK / "ddl_gen.sql").read_text()
    with_clause = (f") WITH (\n    'connector' = 'filesystem',\n"
                   f"    'path' = 'file://{Path(data_dir).resolve()}',\n"
                   f"    'format' = 'json',\n"
                   f"    'json.timestamp-format.standard' = 'ISO-8601'\n);")
    gen, n = re.subn(r"\)\s*WITH\s*\(.*?\);", lambda _: with_clause, gen, count=1, flags=re.S)
    if n != 1:
        raise ValueError("no WITH (...) clause in ddl_gen.sql")
    return gen


def statements(text):
    """The statements of a SQL text: `--` comment lines dropped, split at `;`."""
    body = "\n".join(l for l in text.splitlines() if not l.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


# Changes to the published query text that Flink needs, each as upstream made it later. Applied
# unless --as-published; the result records which.
FLINK_ADAPTATIONS = {
    # Flink 2.x's Calcite reserves DATETIME: the unquoted `B.dateTime` of our q11 copy does not
    # parse ("Encountered \". dateTime\""). Upstream master quotes it (nexmark PR #63).
    "q11": ("`dateTime` quoted as upstream master does (nexmark PR #63)",
            lambda t: re.sub(r"\bB\.dateTime\b", "B.`dateTime`", t)),
}


def pipeline_statements(query, data_dir, flink_home, adapt=True):
    text = (NEXMARK / f"{query}.sql").read_text().replace("${FLINK_HOME}", str(flink_home))
    if adapt and query in FLINK_ADAPTATIONS:
        text = FLINK_ADAPTATIONS[query][1](text)
    views = (NEXMARK / "ddl_views.sql").read_text().replace("${NEXMARK_TABLE}", "datagen")
    stmts = statements(flink_source_ddl(data_dir)) + statements(views) + statements(text)
    if not stmts[-1].upper().startswith("INSERT"):
        raise ValueError(f"{query}: the last statement is not an INSERT")
    return stmts


# --------------------------------------------------------------------------------------------
# Helpers


def pyflink_home():
    import pyflink
    return Path(pyflink.__file__).resolve().parent


def udf_jar(work):
    """Compiles flink_udf/CountChar.java into <work>/udf/nexmark-udf.jar (once per change)."""
    out = work / "udf"
    jar = out / "nexmark-udf.jar"
    stamp = out / "source.mtime"
    mtime = str(os.path.getmtime(UDF_SOURCE))
    if jar.exists() and stamp.exists() and stamp.read_text() == mtime:
        return jar
    shutil.rmtree(out, ignore_errors=True)
    classes = out / "classes"
    classes.mkdir(parents=True)
    cp = str(pyflink_home() / "lib" / "*")
    javac = shutil.which("javac")
    jar_tool = shutil.which("jar")
    if not javac or not jar_tool:
        raise RuntimeError("javac/jar not found (apt-get install -y openjdk-17-jdk-headless)")
    subprocess.run([javac, "--release", "11", "-nowarn", "-cp", cp, "-d", str(classes),
                    str(UDF_SOURCE)], check=True, capture_output=True, text=True)
    subprocess.run([jar_tool, "cf", str(jar), "-C", str(classes), "."], check=True)
    stamp.write_text(mtime)
    return jar


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # after the name: state(0) ppid(1) ... utime(11) stime(12)
    return int(fields[1]), int(fields[11]) + int(fields[12])


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                children.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def descendants_cpu():
    """CPU seconds (user + system, all threads) of the live descendants of this process."""
    total = 0
    for pid in descendants(os.getpid()):
        st = _proc_stat(pid)
        if st:
            total += st[1]
    return total / CLK_TCK


def descendants_peak_rss():
    peak = 0
    for pid in descendants(os.getpid()):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
    return peak


def error_lines(e):
    """(first line of the error, first line of its root cause or None)."""
    text = str(e).strip()
    stack = getattr(e, "stack_trace", None) or ""
    java = getattr(e, "java_exception", None)
    if java is not None:
        try:
            text = str(java.toString())
            cause = java
            while cause.getCause() is not None and cause.getCause() != cause:
                cause = cause.getCause()
            root = str(cause.toString())
            return text.splitlines()[0], (root.splitlines()[0] if root != text else None)
        except Exception:  # noqa: BLE001 - best effort on a broken gateway
            pass
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    first = lines[0] if lines else type(e).__name__
    causes = [l for l in (stack or text).splitlines() if l.strip().startswith("Caused by:")]
    root = causes[-1].strip()[len("Caused by:"):].strip() if causes else None
    return first, root


def short_error(first, root):
    """One line for the table: the error's first line (with its root cause's first line when that
    differs), or only the root cause's when the first line is a generic wrapper of a failed job."""
    generic = ("Job execution failed", "JobExecutionException", "ExecutionException",
               "An error occurred while calling")
    if root and any(g in first for g in generic):
        return root
    if root and root not in first:
        return f"{first} [root cause: {root}]"
    return first


# --------------------------------------------------------------------------------------------
# One query in this process (the child)


def make_env(args, jar):
    from pyflink.table import EnvironmentSettings, TableEnvironment
    settings = (EnvironmentSettings.in_batch_mode() if args.mode == "batch"
                else EnvironmentSettings.in_streaming_mode())
    env = TableEnvironment.create(settings)
    cfg = env.get_config()
    cfg.set("parallelism.default", str(args.parallelism))
    if not args.no_upstream_options:
        for k, v in UPSTREAM_TABLE_OPTIONS.items():
            cfg.set(k, v)
    if jar:
        cfg.set("pipeline.jars", f"file://{jar}")
    return env


def run_once(env, stmts):
    """Runs the statements; returns the measurement of the last one (the INSERT)."""
    for s in stmts[:-1]:
        env.execute_sql(s)
    cpu0 = descendants_cpu()
    t0 = time.monotonic()
    result = env.execute_sql(stmts[-1])  # plans, starts the MiniCluster, submits the job
    t1 = time.monotonic()
    cpu1 = descendants_cpu()
    job = result.get_job_client().get_job_execution_result().result()
    t2 = time.monotonic()
    cpu2 = descendants_cpu()
    return {
        "submit_s": t1 - t0,
        "submit_cpu_s": cpu1 - cpu0,
        "net_runtime_s": job.get_net_runtime() / 1000.0,
        "client_wall_s": t2 - t1,
        "cpu_s": cpu2 - cpu1,
    }


def child(args):
    q = args.child
    work = Path(args.work).resolve()
    flink_home = work / "flink_home"
    res = {"query": q, "mode": args.mode, "parallelism": args.parallelism,
           "events": args.events, "engine": "flink"}
    try:
        import pyflink.version
        res["flink_version"] = pyflink.version.__version__
        adapt = not args.as_published
        if adapt and q in FLINK_ADAPTATIONS:
            res["adapted"] = FLINK_ADAPTATIONS[q][0]
        jar = udf_jar(work) if "count_char" in (NEXMARK / f"{q}.sql").read_text() else None
        if "${FLINK_HOME}" in (NEXMARK / f"{q}.sql").read_text():
            write_side_input(flink_home)
        if args.warmup_input:
            w = time.monotonic()
            env = make_env(args, jar)
            run_once(env, pipeline_statements(q, args.warmup_input, flink_home, adapt))
            res["warmup_s"] = time.monotonic() - w
            res["warmup_events"] = count_events(Path(args.warmup_input))
        env = make_env(args, jar)
        m = run_once(env, pipeline_statements(q, args.input, flink_home, adapt))
        res.update(m)
        ev = args.events
        res.update({
            "status": "ok",
            "wall_s": m["net_runtime_s"],
            "events_per_s": ev / max(m["net_runtime_s"], 1e-9),
            "events_per_s_per_core": ev / max(m["cpu_s"], 1e-9),
            "events_per_s_per_slot": ev / max(m["net_runtime_s"], 1e-9) / args.parallelism,
            "cores_busy": m["cpu_s"] / max(m["net_runtime_s"], 1e-9),
            "peak_rss_bytes": descendants_peak_rss(),
        })
    except Exception as e:  # noqa: BLE001 - every failure is a result
        first, root = error_lines(e)
        res.update({"status": "failed", "why": short_error(first, root), "error": first,
                    "root_cause": root})
    Path(args.out).write_text(json.dumps(res))
    return 0


# --------------------------------------------------------------------------------------------
# The runner (parent): one child process per query


def run_query(q, mode, parallelism, events, data_dir, warmup_dir, work, timeout,
              upstream_options=True, as_published=False):
    """Runs query q in a child process; returns its result dict (never raises)."""
    out = work / "results" / f"flink-{mode}-p{parallelism}-{q}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    log = work / "logs" / f"flink-{mode}-p{parallelism}-{q}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", q, "--out", str(out),
           "--input", str(data_dir), "--events", str(events), "--mode", mode,
           "--parallelism", str(parallelism), "--work", str(work)]
    if warmup_dir:
        cmd += ["--warmup-input", str(warmup_dir)]
    if not upstream_options:
        cmd.append("--no-upstream-options")
    if as_published:
        cmd.append("--as-published")
    base = {"query": q, "mode": mode, "parallelism": parallelism, "engine": "flink"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # The child's session holds its gateway JVM; end the whole group we started.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    if out.exists():
        return json.loads(out.read_text())
    if timed_out:
        return {**base, "status": "failed", "why": f"timed out after {timeout} s"}
    tail = [l for l in log.read_text(errors="replace").splitlines() if l.strip()][-1:]
    return {**base, "status": "failed",
            "why": f"runner exited with {proc.returncode}: {' '.join(tail)}"}


def skip_reason(q, include_na):
    text = (NEXMARK / f"{q}.sql").read_text()
    reason = not_applicable_reason(text)
    if reason and not include_na:
        return f"Flowline: not applicable: {reason}"
    return None


def fmt_rate(v):
    return f"{v:,.0f}" if v is not None else ""


def print_rows(results):
    header = ("query", "mode", "p", "wall s", "cpu s", "events/s", "ev/s/core", "ev/s/slot",
              "status")
    rows = []
    for r in results:
        if r.get("status") == "ok":
            rows.append((r["query"], r["mode"], str(r["parallelism"]), f"{r['wall_s']:.2f}",
                         f"{r['cpu_s']:.2f}", fmt_rate(r["events_per_s"]),
                         fmt_rate(r["events_per_s_per_core"]),
                         fmt_rate(r["events_per_s_per_slot"]), "ok"))
        else:
            rows.append((r["query"], r.get("mode", ""), str(r.get("parallelism", "")), "", "", "",
                         "", "", f"{r.get('status')}: {r.get('why', '')}"))
    widths = [max(len(x[i]) for x in rows + [header]) for i in range(len(header) - 1)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:-1], widths)) + "  " + header[-1])
    for x in rows:
        print("  ".join(v.ljust(w) for v, w in zip(x[:-1], widths)) + "  " + x[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000,
                    help="events to generate (or: how many --input holds); default 1000000")
    ap.add_argument("--input", default=None,
                    help="folder of JSON lines from `flowline generate nexmark --format json` "
                    "(default: generated under --work)")
    ap.add_argument("--warmup-events", type=int, default=100_000,
                    help="a warm-up run of each query over this many events (the first events "
                    "of the same generator) in the same JVM before the measured run; 0: none")
    ap.add_argument("--warmup-input", default=None, help="warm-up input folder (else generated)")
    ap.add_argument("--queries", default=None, help="comma-separated, e.g. q0,q5 (default: all)")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--mode", choices=("stream", "batch"), default="stream",
                    help="Flink's runtime mode (stream: STREAMING, batch: BATCH)")
    ap.add_argument("--no-upstream-options", action="store_true",
                    help="leave out the upstream runner's mini-batch / distinct-split options")
    ap.add_argument("--as-published", action="store_true",
                    help="run q11 as published too (see FLINK_ADAPTATIONS; it fails to parse)")
    ap.add_argument("--include-na", action="store_true",
                    help="also run the queries marked `-- Flowline: not applicable:`")
    ap.add_argument("--flowline", default="target/release/flowline",
                    help="the Flowline binary, to generate the input")
    ap.add_argument("--work", default="target/peers",
                    help="working folder (relative to the repository root)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per query")
    ap.add_argument("--json", default=None, help="also write the results here")
    # internal: one query in this process
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        return child(args)

    try:
        import pyflink.version
    except ImportError:
        print("PyFlink is not installed: python3 -m pip install apache-flink==2.3.0",
              file=sys.stderr)
        return 2
    work = Path(args.work)
    work = (work if work.is_absolute() else REPO / work).resolve()
    queries = ALL_QUERIES if not args.queries else [q.strip() for q in args.queries.split(",")]
    for q in queries:
        if q not in ALL_QUERIES:
            print(f"unknown query {q!r}", file=sys.stderr)
            return 2
    flowline = Path(args.flowline)
    flowline = flowline if flowline.is_absolute() else REPO / flowline
    if args.input:
        data_dir = Path(args.input).resolve()
        events = count_events(data_dir)
    else:
        if not flowline.exists():
            print(f"no Flowline binary at {flowline} (cargo build --release)", file=sys.stderr)
            return 2
        data_dir, events = input_dir(work, args.events), args.events
        generate(flowline, data_dir, events)
    warmup_dir = None
    if args.warmup_input:
        warmup_dir = Path(args.warmup_input).resolve()
    elif args.warmup_events:
        warmup_dir = work / f"warmup-json-{args.warmup_events}"
        generate(flowline, warmup_dir, args.warmup_events)

    print(f"Flink {pyflink.version.__version__} ({args.mode}, parallelism {args.parallelism}), "
          f"{events} events from {data_dir}, {os.cpu_count()} cores", flush=True)
    results = []
    for q in queries:
        why = skip_reason(q, args.include_na)
        if why:
            r = {"query": q, "mode": args.mode, "parallelism": args.parallelism,
                 "engine": "flink", "status": "skipped", "why": why}
        else:
            r = run_query(q, args.mode, args.parallelism, events, data_dir, warmup_dir, work,
                          args.timeout, upstream_options=not args.no_upstream_options,
                          as_published=args.as_published)
        results.append(r)
        print(f"{q}: {r['status']}" + (f" {r['events_per_s_per_core']:,.0f} ev/s/core"
                                        if r["status"] == "ok" else f" ({r.get('why', '')})"),
              flush=True)
    print()
    print_rows(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"events": events, "input": str(data_dir),
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
