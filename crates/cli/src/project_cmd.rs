//! `flowline replay` and `flowline backfill`: act on a project's pipeline. When the project's
//! `flowline serve` is running (its address answers), the command asks it through the HTTP API
//! and follows the work with a progress bar; otherwise it opens the project itself and does the
//! work in this process, with the same code the server uses.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::client;
use crate::progress::Progress;
use crate::project::Project;
use crate::replay::{self, ReplayRequest};
use crate::serve::{Hosted, Server};

const API_TIMEOUT: Duration = Duration::from_secs(30);

/// The running server's base URL, if one answers at the project's address.
fn running_server(project: &Project) -> Option<String> {
    let addr = project.listen.to_socket_addrs().ok()?.next()?;
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    Some(format!("http://{}", project.listen))
}

fn load(path: &Path, listen: Option<String>) -> Result<Project> {
    let mut project = Project::load(path)?;
    if let Some(l) = listen {
        project.listen = l;
    }
    Ok(project)
}

/// Opens the project in this process (no runner started) and finds the pipeline.
async fn open_here(project: Project, pipeline: &str) -> Result<(Arc<Server>, Arc<Hosted>)> {
    for g in &project.generators {
        g.create_topic(&project.log_dir)?;
    }
    let server = Arc::new(Server::open(project).await?);
    let hosted = server.pipeline(pipeline).cloned().ok_or_else(|| {
        anyhow!(
            "the project has no pipeline `{pipeline}` (pipelines: {})",
            server
                .pipelines
                .iter()
                .map(|p| p.spec.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok((server, hosted))
}

fn api_error(reply: &client::Reply) -> anyhow::Error {
    let message = reply
        .json()
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned());
    anyhow!("the server refused ({}): {message}", reply.status)
}

/// What `flowline replay` does.
pub enum ReplayWhat {
    /// Build a new version and swap it in.
    Version(ReplayRequest),
    /// Corrections of an event-time range.
    Range {
        from: String,
        to: String,
        column: Option<String>,
    },
    /// Cancel the running replay.
    Cancel,
}

/// `flowline replay PROJECT PIPELINE --as VERSION`, `--from T --to T` or `--cancel`.
pub async fn replay(
    path: &Path,
    pipeline: &str,
    what: ReplayWhat,
    listen: Option<String>,
) -> Result<ExitCode> {
    let project = load(path, listen)?;
    let token = project.token.clone();
    if let ReplayWhat::Cancel = what {
        return cancel_replay(&project, pipeline).await;
    }
    let time =
        |what: &str, t: &str| crate::http::parse_time(t).map_err(|e| anyhow!("--{what}: {e}"));
    let range = match &what {
        ReplayWhat::Version(_) | ReplayWhat::Cancel => None,
        ReplayWhat::Range { from, to, column } => Some(flowline_connectors::TimeRange {
            from_ms: time("from", from)?,
            to_ms: time("to", to)?,
            column: column.clone(),
        }),
    };
    let query = match (&what, &range) {
        (ReplayWhat::Version(r), _) => {
            format!("as={}&max_lag={}&diff={}", r.version, r.max_lag, r.diff)
        }
        (_, Some(r)) => format!(
            "from={}&to={}{}",
            r.from_ms,
            r.to_ms,
            r.column
                .as_ref()
                .map(|c| format!("&column={c}"))
                .unwrap_or_default()
        ),
        (_, None) => unreachable!("a range was parsed above"),
    };
    let status = if let Some(base) = running_server(&project) {
        eprintln!("asking the running server at {base}");
        let url = format!("{base}/api/pipelines/{pipeline}/replay?{query}");
        let reply = client::request("POST", &url, token.as_deref(), None, API_TIMEOUT)?;
        if reply.status != 202 {
            return Err(api_error(&reply));
        }
        let status_url = format!("{base}/api/pipelines/{pipeline}/replay");
        follow_replay(|| {
            let reply = client::request("GET", &status_url, token.as_deref(), None, API_TIMEOUT)?;
            if reply.status != 200 {
                return Err(api_error(&reply));
            }
            reply.json()
        })
        .await?
    } else {
        eprintln!(
            "no server answers at {}: replaying in this process",
            project.listen
        );
        let (_server, hosted) = open_here(project, pipeline).await?;
        match (what, range) {
            (ReplayWhat::Version(request), _) => {
                replay::start(&hosted, request).await?;
            }
            (_, Some(range)) => {
                replay::start_correction(&hosted, range).await?;
            }
            (_, None) => unreachable!("a range was parsed above"),
        }
        follow_replay(|| {
            let r = hosted.replay.lock().ok().and_then(|r| r.clone());
            Ok(serde_json::to_value(r)?)
        })
        .await?
    };
    print_replay(&status);
    Ok(
        if status["status"] == "swapped" || status["status"] == "corrected" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// Asks the running server to cancel the pipeline's replay, and follows it until it ends.
async fn cancel_replay(project: &Project, pipeline: &str) -> Result<ExitCode> {
    let token = project.token.clone();
    let Some(base) = running_server(project) else {
        bail!(
            "no server answers at {}, so no replay runs that could be cancelled: a replay runs \
             inside `flowline serve`, or inside the `flowline replay` that started it (Ctrl-C \
             stops that one but keeps its half-built version: replay into another version name, \
             or delete that version's file under serving/<table>/ and its state under \
             .flowline/<pipeline>/versions/)",
            project.listen
        );
    };
    let url = format!("{base}/api/pipelines/{pipeline}/replay");
    let reply = client::request("DELETE", &url, token.as_deref(), None, API_TIMEOUT)?;
    if reply.status != 202 {
        return Err(api_error(&reply));
    }
    let status = follow_replay(|| {
        let reply = client::request("GET", &url, token.as_deref(), None, API_TIMEOUT)?;
        if reply.status != 200 {
            return Err(api_error(&reply));
        }
        reply.json()
    })
    .await?;
    print_replay(&status);
    Ok(if status["status"] == "cancelled" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls a replay's status with a progress bar until it ends; returns the last status.
async fn follow_replay(mut get: impl FnMut() -> Result<Value>) -> Result<Value> {
    let mut bar = Progress::new("replay");
    loop {
        let status = get()?;
        let state = status["status"].as_str().unwrap_or("?").to_string();
        let read = status["rows_read"].as_u64().unwrap_or(0);
        let lag = status["lag_records"].as_u64();
        let unknown: Vec<&str> = status["lag_unknown"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
            .unwrap_or_default();
        bar.set(
            read,
            lag.map(|l| read + l),
            format!(
                "{state} into {}: {read} rows{}{}",
                status["version"].as_str().unwrap_or("?"),
                lag.map(|l| format!(", {l} behind")).unwrap_or_default(),
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!(", waiting: lag of {} cannot be read", unknown.join(", "))
                }
            ),
        );
        if !crate::replay::is_running(&state) {
            bar.finish();
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_replay(status: &Value) {
    if let Some(range) = status["range"].as_array() {
        let at = |v: &Value| {
            v.as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        eprintln!(
            "corrections of {} in version {}, event time [{}, {}): {} — {} rows read, {} rows written{}",
            status["pipeline"].as_str().unwrap_or("?"),
            status["version"].as_str().unwrap_or("?"),
            at(&range[0]),
            at(&range[1]),
            status["status"].as_str().unwrap_or("?"),
            status["rows_read"].as_u64().unwrap_or(0),
            status["rows_written"].as_u64().unwrap_or(0),
            status["error"]
                .as_str()
                .map(|e| format!("\n  error: {e}"))
                .unwrap_or_default()
        );
        return;
    }
    eprintln!(
        "replay of {} into {} (from {}): {} — {} rows read{}",
        status["pipeline"].as_str().unwrap_or("?"),
        status["version"].as_str().unwrap_or("?"),
        status["from_version"].as_str().unwrap_or("?"),
        status["status"].as_str().unwrap_or("?"),
        status["rows_read"].as_u64().unwrap_or(0),
        status["error"]
            .as_str()
            .map(|e| format!("\n  error: {e}"))
            .unwrap_or_default()
    );
    for d in status["diff"].as_array().into_iter().flatten() {
        eprintln!(
            "  diff {} {}→{}{}: {} rows vs {}, {} same, {} changed, {} only in {}, {} only in {}{}",
            d["table"].as_str().unwrap_or("?"),
            d["from_version"].as_str().unwrap_or("?"),
            d["to_version"].as_str().unwrap_or("?"),
            d["closed_until_ms"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| format!(" (windows closed by {})", t.format("%Y-%m-%d %H:%M:%S")))
                .unwrap_or_default(),
            d["from_rows"],
            d["to_rows"],
            d["same"],
            d["changed"],
            d["only_from"],
            d["from_version"].as_str().unwrap_or("?"),
            d["only_to"],
            d["to_version"].as_str().unwrap_or("?"),
            if d["schema_changed"] == true {
                " (the columns changed: rows only counted)"
            } else {
                ""
            }
        );
        for s in d["samples"].as_array().into_iter().flatten() {
            eprintln!("    {s}");
        }
    }
}

/// `flowline backfill PROJECT PIPELINE --from DATE [--to DATE]`.
pub async fn backfill(
    path: &Path,
    pipeline: &str,
    from: &str,
    to: Option<&str>,
    listen: Option<String>,
) -> Result<ExitCode> {
    let time =
        |what: &str, t: &str| crate::http::parse_time(t).map_err(|e| anyhow!("--{what}: {e}"));
    let from_ms = time("from", from)?;
    let to_ms = match to {
        Some(t) => time("to", t)?,
        None => crate::serve::now_ms(),
    };
    let project = load(path, listen)?;
    let token = project.token.clone();
    if let Some(base) = running_server(&project) {
        let status_url = format!("{base}/api/pipelines/{pipeline}");
        // The server's start: another one means it restarted and lost its queue.
        let started = || -> Result<serde_json::Value> {
            let url = format!("{base}/api/project");
            let reply = client::request("GET", &url, token.as_deref(), None, API_TIMEOUT)?;
            if reply.status != 200 {
                return Err(api_error(&reply));
            }
            Ok(reply.json()?["started_ms"].clone())
        };
        let started_before = started()?;
        // Counted before asking: the first backfilled run may start at once.
        let first = client::request("GET", &status_url, token.as_deref(), None, API_TIMEOUT)?;
        if first.status != 200 {
            return Err(api_error(&first));
        }
        let first = first.json()?;
        // Backfilled runs end as done, or failed after the server's retries (given up).
        let counters = |p: &serde_json::Value| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            (n("backfill_done"), n("backfill_failed"))
        };
        let (done_before, failed_before) = counters(&first);
        let url = format!("{base}/api/pipelines/{pipeline}/backfill?from={from_ms}&to={to_ms}");
        let reply = client::request("POST", &url, token.as_deref(), None, API_TIMEOUT)?;
        if reply.status != 202 {
            return Err(api_error(&reply));
        }
        let total = reply.json()?["runs"].as_u64().unwrap_or(0);
        eprintln!("the server at {base} queued {total} runs");
        let mut bar = Progress::new("backfill");
        let mut warned_retry = false;
        loop {
            let reply = client::request("GET", &status_url, token.as_deref(), None, API_TIMEOUT)?;
            if reply.status != 200 {
                return Err(api_error(&reply));
            }
            let p = reply.json()?;
            let (done, failed) = counters(&p);
            if started()? != started_before || done < done_before || failed < failed_before {
                bar.finish();
                anyhow::bail!(
                    "the server at {base} restarted during the backfill; its queue was lost: \
                     run the backfill again"
                );
            }
            if p["status"] == "retrying" && !warned_retry {
                warned_retry = true;
                eprintln!(
                    "backfill of {pipeline}: a run failed ({}); the server retries it (up to {} \
                     attempts) before the rest",
                    p["error"].as_str().unwrap_or("see the pipeline's last run"),
                    crate::serve::MAX_SLOT_ATTEMPTS
                );
            }
            let (done, failed) = (done - done_before, failed - failed_before);
            bar.set(done + failed, Some(total), "runs".into());
            // The counters are the pipeline's, not this request's: runs of a backfill queued
            // earlier count too, so it is over only once nothing is queued or running.
            let idle = p["backfill_queued"].as_u64() == Some(0)
                && !matches!(p["status"].as_str(), Some("running" | "retrying"));
            if done + failed >= total && idle {
                bar.finish();
                eprintln!(
                    "backfill of {pipeline}: {total} runs, {failed} given up after failing {} \
                     times{}",
                    crate::serve::MAX_SLOT_ATTEMPTS,
                    if failed > 0 {
                        format!(" (their times: `given_up` at {status_url}; backfill them again once fixed)")
                    } else {
                        String::new()
                    }
                );
                return Ok(if failed == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    eprintln!(
        "no server answers at {}: running the backfill in this process",
        project.listen
    );
    let (_server, hosted) = open_here(project, pipeline).await?;
    let times = hosted.backfill_times(from_ms, to_ms)?;
    let total = times.len() as u64;
    let hosted2 = hosted.clone();
    let failed = tokio::task::spawn_blocking(move || {
        let mut bar = Progress::new("backfill");
        let mut failed = 0;
        for (i, t) in times.iter().enumerate() {
            let day = chrono::DateTime::from_timestamp_millis(*t)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default();
            bar.set(i as u64, Some(total), format!("runs (now {day})"));
            if hosted2.run_slot(Some(*t)).is_err() {
                failed += 1;
            }
        }
        bar.finish();
        failed
    })
    .await
    .context("the backfill thread")?;
    eprintln!("backfill of {pipeline}: {total} runs, {failed} failed");
    if failed > 0 {
        bail!("{failed} of {total} backfilled runs failed (see `flowline runs`)");
    }
    Ok(ExitCode::SUCCESS)
}
