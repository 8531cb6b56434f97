#!/usr/bin/env python3
"""Nexmark side by side: Flowline (stream and batch) and Apache Flink (PyFlink, parallelism 1
and 2) on the same generated events, one table of events/s per core and their ratio.

The input is generated once: `flowline generate nexmark --format json` (JSON lines, the nested
person/auction/bid rows of Flink's nexmark table). Both engines read those files:

  Flowline  `flowline run <pipeline> --mode stream|batch`, the pipeline being ddl_gen.sql with a
            files/json source, ddl_views.sql and qN.sql with its blackhole sink as published.
            (`flowline bench nexmark --source files` reads Parquet only, which Flink cannot read
            with PyFlink's jars, so it is not what is compared; it is run as a reference column
            unless --no-parquet-reference.) wall = the process's wall time, cpu = its user +
            system CPU time (wait4), both including its start-up and planning (milliseconds).
  Flink     flink_nexmark.py: the same statements with a filesystem/json source, one JVM per
            query, a warm-up run, then the measured job: wall = the job's net runtime, cpu = the
            JVM's CPU time from job submission to job end (planning and MiniCluster start-up
            left out). See flink_nexmark.py.

events/s per core = events / cpu seconds, for both (what `flowline bench nexmark` reports).
ratio = best Flowline per-core number (stream or batch) / best Flink per-core number (any
parallelism and mode run); the geometric mean is over the queries both ran.

Usage (from the repository root):
    python3 benches/peers/compare.py                          # 1 000 000 events, all queries
    python3 benches/peers/compare.py --events 200000 --queries q0,q5,q7

Exit code 0 when it ran (failures of either engine on a query are reported in the table), 2 on
a setup error.
"""

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flink_nexmark as fn  # noqa: E402

REPO = fn.REPO
NEXMARK = fn.NEXMARK


# --------------------------------------------------------------------------------------------
# Flowline


def flowline_pipeline(query, data_dir, flink_home):
    gen = (NEXMARK / "ddl_gen.sql").read_text()
    with_clause = (f") WITH ('connector' = 'files', 'path' = '{data_dir}', "
                   f"'format' = 'json');")
    gen, n = re.subn(r"\)\s*WITH\s*\(.*?\);", lambda _: with_clause, gen, count=1, flags=re.S)
    if n != 1:
        raise ValueError("no WITH (...) clause in ddl_gen.sql")
    views = (NEXMARK / "ddl_views.sql").read_text().replace("${NEXMARK_TABLE}", "datagen")
    text = (NEXMARK / f"{query}.sql").read_text().replace("${FLINK_HOME}", str(flink_home))
    return f"{gen}\n{views}\n{text}\n"


def run_flowline(flowline, q, mode, events, data_dir, work, timeout):
    base = {"engine": "flowline", "query": q, "mode": mode, "events": events}
    data_dir, work = Path(data_dir).resolve(), Path(work).resolve()
    qdir = work / "flowline" / f"{q}-{mode}"
    pipeline = qdir / f"{q}.sql"
    state = qdir / "state"
    if qdir.exists():
        shutil.rmtree(qdir)
    qdir.mkdir(parents=True)
    flink_home = work / "flink_home"
    if "${FLINK_HOME}" in (NEXMARK / f"{q}.sql").read_text():
        fn.write_side_input(flink_home)
    pipeline.write_text(flowline_pipeline(q, data_dir, flink_home))
    cmd = [str(flowline), "run", str(pipeline), "--mode", mode, "--state-dir", str(state)]
    out_path, err_path = qdir / "stdout.txt", qdir / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        deadline = t0 + timeout
        rusage = None
        status = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return {**base, "status": "failed", "why": f"timed out after {timeout} s"}
            time.sleep(0.01)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = [l for l in err_path.read_text(errors="replace").splitlines() if l.strip()]
        first = next((l.strip() for l in lines if "error" in l.lower()),
                     lines[0].strip() if lines else f"exit code {proc.returncode}")
        return {**base, "status": "failed", "why": first}
    cpu = rusage.ru_utime + rusage.ru_stime
    summary = out_path.read_text(errors="replace") + err_path.read_text(errors="replace")
    rows = sum(int(m.group(1)) for m in re.finditer(r"wrote\s+(\d+) rows", summary))
    return {**base, "status": "ok", "wall_s": wall, "cpu_s": cpu,
            "events_per_s": events / max(wall, 1e-9),
            "events_per_s_per_core": events / max(cpu, 1e-9),
            "cores_busy": cpu / max(wall, 1e-9),
            "peak_rss_bytes": rusage.ru_maxrss * 1024, "result_rows": rows}


def run_flowline_parquet_reference(flowline, queries, events, work, timeout):
    """`flowline bench nexmark --source files` (Parquet, same generator and seed) for reference."""
    out = work / "flowline-bench-parquet.json"
    out.unlink(missing_ok=True)
    cmd = [str(flowline), "bench", "nexmark", "--query", ",".join(queries), "--events",
           str(events), "--mode", "both", "--source", "files", "--dir", str(work / "bench"),
           "--json", str(out)]
    print("reference: " + " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True, timeout=timeout * len(queries), capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"reference run failed: {e}", flush=True)
        return {}
    res = {}
    for r in json.loads(out.read_text())["results"]:
        res[(r["query"], r["mode"])] = r
    return res


# --------------------------------------------------------------------------------------------
# Table


def per_core(r):
    return r.get("events_per_s_per_core") if r and r.get("status") == "ok" else None


def cell(r):
    if r is None:
        return "-"
    if r.get("status") == "ok":
        return f"{r['events_per_s_per_core']:,.0f}"
    if r.get("status") == "skipped":
        return "skipped"
    return "error"


def render(header, rows):
    widths = [max(len(str(x[i])) for x in rows + [header]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for x in rows:
        lines.append("| " + " | ".join(str(v).ljust(w) for v, w in zip(x, widths)) + " |")
    return "\n".join(lines)


def summary_table(queries, fl, fk, flink_cols, skipped):
    header = (["query", "Flowline stream", "Flowline batch"]
              + [f"Flink {label}" for label, _ in flink_cols]
              + ["ratio FL/Flink", "notes"])
    rows, ratios = [], []
    for q in queries:
        if q in skipped:
            rows.append([q, "-", "-"] + ["-"] * len(flink_cols) + ["-", f"skipped: {skipped[q]}"])
            continue
        fl_res = [fl.get((q, m)) for m in ("stream", "batch")]
        fk_res = [fk.get((q, key)) for _, key in flink_cols]
        best_fl = max((v for v in map(per_core, fl_res) if v), default=None)
        best_fk = max((v for v in map(per_core, fk_res) if v), default=None)
        ratio = ""
        if best_fl and best_fk:
            ratios.append(best_fl / best_fk)
            ratio = f"{best_fl / best_fk:.2f}"
        notes, seen = [], set()
        for label, r in list(zip(("Flowline stream", "Flowline batch"), fl_res)) + \
                list(zip([f"Flink {l}" for l, _ in flink_cols], fk_res)):
            if r and r.get("status") == "failed":
                # Java class names without their package, to keep the table narrow.
                why = re.sub(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*(?:Exception|Error))\b", r"\1",
                             r.get("why", "")).replace("|", "/")
                if why in seen:
                    notes[-1] = notes[-1].replace(":", f", {label}:", 1)
                else:
                    seen.add(why)
                    notes.append(f"{label}: {why}")
        adapted = next((r["adapted"] for r in fk_res if r and r.get("adapted")), None)
        if adapted:
            notes.append(f"Flink text: {adapted}")
        rows.append([q] + [cell(r) for r in fl_res] + [cell(r) for r in fk_res]
                    + [ratio, "; ".join(notes)])
    gm = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    return render(header, rows), gm, len(ratios)


def detail_table(queries, fl, fk, flink_cols, ref):
    header = ["query", "run", "wall s", "cpu s", "events/s", "events/s/core", "cores busy",
              "peak RSS MB", "extra"]
    rows = []
    for q in queries:
        runs = [(f"Flowline {m} (json)", fl.get((q, m))) for m in ("stream", "batch")]
        runs += [(f"Flowline {m} (parquet, bench)", ref.get((q, m))) for m in ("stream", "batch")
                 if ref.get((q, m))]
        runs += [(f"Flink {label}", fk.get((q, key))) for label, key in flink_cols]
        for label, r in runs:
            if not r or r.get("status") != "ok":
                continue
            extra = ""
            if r.get("engine") == "flink":
                extra = (f"ev/s/slot {r['events_per_s_per_slot']:,.0f}; submit "
                         f"{r['submit_s']:.1f} s; client wall {r['client_wall_s']:.2f} s")
            elif r.get("result_rows") is not None:
                extra = f"rows {r['result_rows']}"
            rows.append([q, label, f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}",
                         f"{r['events_per_s']:,.0f}", f"{r['events_per_s_per_core']:,.0f}",
                         f"{r['cpu_s'] / max(r['wall_s'], 1e-9):.2f}",
                         f"{r.get('peak_rss_bytes', 0) / 1e6:.0f}", extra])
    return render(header, rows)


# --------------------------------------------------------------------------------------------
# Driver


def versions(flowline):
    def out(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"
    try:
        import pyflink.version
        flink = pyflink.version.__version__
    except ImportError:
        flink = None
    return {
        "flowline": out([str(flowline), "--version"]),
        "flink": flink,
        "java": out(["java", "-version"]),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": next((l.split(":", 1)[1].strip() for l in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if l.startswith("model name")), "?"),
        "cores": os.cpu_count(),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--queries", default=None, help="comma-separated (default: every query)")
    ap.add_argument("--flink-parallelism", default="1,2", help="default 1,2")
    ap.add_argument("--flink-modes", default="stream",
                    help="Flink runtime modes: stream, batch or stream,batch (default stream)")
    ap.add_argument("--warmup-events", type=int, default=100_000,
                    help="Flink warm-up run per query, in the same JVM (0: none)")
    ap.add_argument("--no-upstream-options", action="store_true",
                    help="Flink without the upstream runner's mini-batch/distinct-split options")
    ap.add_argument("--as-published", action="store_true",
                    help="Flink runs q11 as published (it fails to parse; by default its "
                    "`dateTime` is quoted as upstream master does)")
    ap.add_argument("--no-parquet-reference", action="store_true",
                    help="skip `flowline bench nexmark --source files` (Parquet) reference runs")
    ap.add_argument("--skip-flink", action="store_true", help="Flowline only")
    ap.add_argument("--skip-flowline", action="store_true", help="Flink only")
    ap.add_argument("--flowline", default="target/release/flowline")
    ap.add_argument("--work", default="target/peers", help="working folder (from the repo root)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--json", default=None, help="also write every measurement here")
    args = ap.parse_args()

    flowline = Path(args.flowline)
    flowline = flowline if flowline.is_absolute() else REPO / flowline
    if not flowline.exists():
        print(f"no Flowline binary at {flowline} (cargo build --release)", file=sys.stderr)
        return 2
    if not args.skip_flink:
        try:
            import pyflink.version  # noqa: F401
        except ImportError:
            print("PyFlink is not installed: python3 -m pip install apache-flink==2.3.0",
                  file=sys.stderr)
            return 2
    work = Path(args.work)
    work = (work if work.is_absolute() else REPO / work).resolve()
    queries = fn.ALL_QUERIES if not args.queries else [q.strip() for q in args.queries.split(",")]
    for q in queries:
        if q not in fn.ALL_QUERIES:
            print(f"unknown query {q!r}", file=sys.stderr)
            return 2
    parallelisms = [int(p) for p in args.flink_parallelism.split(",") if p.strip()]
    modes = [m.strip() for m in args.flink_modes.split(",") if m.strip()]
    if any(m not in ("stream", "batch") for m in modes):
        print("--flink-modes: stream and/or batch", file=sys.stderr)
        return 2
    flink_cols = [((f"p{p}" if m == "stream" else f"batch p{p}") + " ", (m, p))
                  for m in modes for p in parallelisms]
    flink_cols = [(label.strip(), key) for label, key in flink_cols]

    started = time.monotonic()
    load_start = os.getloadavg()
    data_dir = fn.input_dir(work, args.events)
    fn.generate(flowline, data_dir, args.events)
    warmup_dir = None
    if args.warmup_events and not args.skip_flink:
        warmup_dir = work / f"warmup-json-{args.warmup_events}"
        fn.generate(flowline, warmup_dir, args.warmup_events)
    info = versions(flowline)
    command = "python3 " + " ".join(shlex.quote(a) for a in
                                    [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    print(f"{dt.date.today()}  {info['cores']} cores ({info['cpu']}); {info['flowline']}; "
          f"Flink {info['flink']} (PyFlink); {info['java']}; Python {info['python']}", flush=True)

    skipped = {}
    for q in queries:
        why = fn.not_applicable_reason((NEXMARK / f"{q}.sql").read_text())
        if why:
            skipped[q] = "-- Flowline: not applicable: " + why.split(";")[0].split(" (")[0]
    runnable = [q for q in queries if q not in skipped]

    fl, fk, ref = {}, {}, {}
    if not args.skip_flowline:
        for q in runnable:
            for m in ("stream", "batch"):
                r = run_flowline(flowline, q, m, args.events, data_dir, work, args.timeout)
                fl[(q, m)] = r
                print(f"flowline {q} {m}: {r['status']}"
                      + (f" {r['events_per_s_per_core']:,.0f} ev/s/core" if r["status"] == "ok"
                         else f" ({r.get('why')})"), flush=True)
        if not args.no_parquet_reference and runnable:
            ref = run_flowline_parquet_reference(flowline, runnable, args.events, work,
                                                 args.timeout)
    if not args.skip_flink:
        for m in modes:
            for p in parallelisms:
                for q in runnable:
                    r = fn.run_query(q, m, p, args.events, data_dir, warmup_dir, work,
                                     args.timeout, upstream_options=not args.no_upstream_options,
                                     as_published=args.as_published)
                    fk[(q, (m, p))] = r
                    print(f"flink {m} p{p} {q}: {r['status']}"
                          + (f" {r['events_per_s_per_core']:,.0f} ev/s/core"
                             if r["status"] == "ok" else f" ({r.get('why')})"), flush=True)
    elapsed = time.monotonic() - started
    load_end = os.getloadavg()

    table, gm, n = summary_table(queries, fl, fk, flink_cols, skipped)
    print()
    print(f"Nexmark, {args.events:,} events (JSON lines, {fn.FILES} files, "
          f"{fn.RATE:,} events/s of event time), events/s per core (= events / CPU seconds)")
    print()
    print(table)
    print()
    if gm is not None:
        print(f"geometric mean of ratio (best Flowline / best Flink, per core) over {n} "
              f"queries: {gm:.2f}")
    print()
    print("Every run (wall and CPU as defined in compare.py / flink_nexmark.py):")
    print()
    print(detail_table(runnable, fl, fk, flink_cols, ref))
    print()
    print(f"command: {command}")
    print(f"total time: {elapsed / 60:.1f} min; load average (1/5/15 min) at the start "
          f"{'/'.join(f'{x:.2f}' for x in load_start)}, at the end "
          f"{'/'.join(f'{x:.2f}' for x in load_end)}")
    if args.json:
        doc = {"date": str(dt.date.today()), "command": command, "versions": info,
               "events": args.events, "rate": fn.RATE, "files": fn.FILES,
               "warmup_events": args.warmup_events,
               "upstream_options": not args.no_upstream_options,
               "load_average_start": load_start, "load_average_end": load_end,
               "geomean_ratio": gm, "queries_compared": n,
               "flowline": [r for r in fl.values()],
               "flowline_parquet_reference": [r for r in ref.values()],
               "flink": [r for r in fk.values()], "skipped": skipped}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
