//! The HTTP API of `flowline serve` (JSON; described by `GET /api/openapi.json`), Prometheus
//! metrics at `/metrics`, and the dashboard pages.
//!
//! Bound to 127.0.0.1 unless the project says otherwise. With a token (`[server] token` or
//! `$FLOWLINE_TOKEN`), every request but the dashboard page `/` (whose requests carry the
//! token given as `/?token=...`) and `/api/openapi.json` needs
//! `Authorization: Bearer <token>`. Errors are `{"error": "..."}` with a 4xx/5xx status.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowline_connectors::serving;
use flowline_runtime::rejects;
use serde_json::{json, Value};

use crate::serve::{now_ms, Hosted, Server};

type Shared = Arc<Server>;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn not_found(what: &str, name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no {what} named `{name}`"))
}

pub fn router(server: Shared) -> Router {
    Router::new()
        .route("/api/project", get(project))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/{name}", get(pipeline))
        .route("/api/pipelines/{name}/runs", get(runs))
        .route("/api/pipelines/{name}/rejects", get(pipeline_rejects))
        .route("/api/pipelines/{name}/rejects/replay", post(rejects_replay))
        .route("/api/pipelines/{name}/history", get(history))
        .route("/api/pipelines/{name}/run", post(run_now))
        .route("/api/pipelines/{name}/backfill", post(backfill))
        .route(
            "/api/pipelines/{name}/replay",
            post(replay_start).get(replay_status).delete(replay_cancel),
        )
        .route("/api/tables", get(tables))
        .route("/api/tables/{name}", get(table))
        .route("/api/views", get(views))
        .route("/api/views/{name}", get(view))
        .route("/api/alerts", get(alerts))
        .route("/api/sql", post(sql))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(server.clone(), auth))
        .route("/api/openapi.json", get(openapi))
        .route("/", get(dashboard))
        .with_state(server)
}

async fn auth(State(server): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(token) = &server.project.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this server needs `Authorization: Bearer <token>`",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

/// The dashboard: one page that polls the API (with `?token=` when the server has a token).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DASHBOARD,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn project(State(server): State<Shared>) -> Response {
    Json(json!({
        "name": server.project.name,
        "dir": server.project.dir.display().to_string(),
        "started_ms": server.started_ms,
        "now_ms": now_ms(),
        "pipelines": server.pipelines.iter().map(|p| p.spec.name.clone()).collect::<Vec<_>>(),
        "tables": server.tables.keys().collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Everything about one pipeline now.
pub fn pipeline_json(p: &Hosted) -> Value {
    let state = p.state();
    let live = p.live();
    let freshness = p.freshness_ms();
    let target = p.spec.freshness.map(|f| f.as_millis() as i64);
    json!({
        "name": p.spec.name,
        "file": p.spec.file.display().to_string(),
        "mode": p.spec.plan.mode_name(),
        "plan": p.spec.plan.to_string(),
        "reason": p.spec.reason,
        "reads_logs": p.reads_logs,
        "sinks": p.sinks,
        "status": state.status,
        "since_ms": state.since_ms,
        "error": state.error,
        "runs": state.runs,
        "failures": state.failures,
        "restarts": state.restarts,
        "next_run_ms": state.next_run_ms,
        "last_run": state.last_run,
        "last_success_ms": state.last_success_ms,
        "backfill_queued": state.backfill_queued,
        "backfill_done": state.backfill_done,
        "backfill_failed": state.backfill_failed,
        "given_up": state.given_up,
        "version": p.active_version(),
        "replay": p.replay.lock().ok().and_then(|r| r.clone()),
        "alerts": p.alerts.lock().map(|a| a.firing.clone()).unwrap_or_default(),
        "alert_thresholds": {
            "lag_records": p.spec.alert_lag,
            "freshness_ms": p.spec.alert_freshness.or(p.spec.freshness).map(|d| d.as_millis() as u64),
            "for_ms": p.spec.alert_for.map(|d| d.as_millis() as u64),
        },
        "freshness": {
            "target_ms": target,
            "current_ms": freshness,
            "ok": match (target, freshness) {
                (Some(t), Some(f)) => Some(f <= t),
                (Some(_), None) => Some(false),
                (None, _) => None,
            },
        },
        "watermark_ms": live.watermark(),
        "watermarks": live.watermarks,
        // null while some source's lag cannot be read (not 0: that would say caught up).
        "lag_records": live.known_lag(),
        "lag": live.lag_records,
        "lag_unknown": live.lag_unknown,
        "throughput_rows_per_s": p.throughput(),
        "rows_read": live.rows_read,
        "rows_written": live.rows_written,
        "rejects": live.rejects,
        "rejects_total": live.total_rejects(),
        "last_checkpoint": live.last_checkpoint,
        "checkpoints": live.checkpoints,
        "operators": live.operators,
        "operator_rows": live.operator_rows,
    })
}

async fn pipelines(State(server): State<Shared>) -> Response {
    Json(
        server
            .pipelines
            .iter()
            .map(|p| pipeline_json(p))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn pipeline(Pipeline(p): Pipeline) -> Response {
    Json(pipeline_json(&p)).into_response()
}

/// The pipeline a path names (`/api/pipelines/{name}/...`); a 404 naming it when there is none.
struct Pipeline(Arc<Hosted>);

impl axum::extract::FromRequestParts<Shared> for Pipeline {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        server: &Shared,
    ) -> Result<Self, Response> {
        let Path(name) = Path::<String>::from_request_parts(parts, server)
            .await
            .map_err(IntoResponse::into_response)?;
        server
            .pipeline(&name)
            .cloned()
            .map(Pipeline)
            .ok_or_else(|| not_found("pipeline", &name))
    }
}

/// Runs `read` (files, stores) on the blocking threads, so that a slow disk never stalls the
/// handlers of other requests.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> flowline_core::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(read).await??)
}

fn limit(q: &HashMap<String, String>, default: usize) -> Result<usize, Box<Response>> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l.parse().map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("limit '{l}' is not a number"),
            ))
        }),
    }
}

async fn runs(Pipeline(p): Pipeline, Query(q): Query<HashMap<String, String>>) -> Response {
    let limit = match limit(&q, 50) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let path = p.manifest_path.clone();
    match blocking(move || flowline_runtime::manifest::read_last(&path, limit)).await {
        Ok(records) => Json(records.into_iter().rev().collect::<Vec<_>>()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn pipeline_rejects(
    Pipeline(p): Pipeline,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match limit(&q, 100) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let rejects_path = p.rejects_path();
    let (path, run, ledgers) = (
        rejects_path.clone(),
        q.get("run").cloned(),
        p.replay_ledgers.clone(),
    );
    let read = blocking(move || {
        let (total, rows) = rejects::read_last_rejects(&path, run.as_deref(), limit)?;
        Ok((total, rows, rejects::replayed(&ledgers)?))
    })
    .await;
    match read {
        Ok((total, rows, replayed)) => {
            let rows = rows.into_iter().rev().map(|mut r| {
                if let Some(at) = rejects::replay_key(&r).and_then(|k| replayed.get(&k)) {
                    r["replayed_at"] = at.clone().into();
                }
                r
            });
            Json(json!({
                "total": total,
                "path": rejects_path.display().to_string(),
                "replayed": replayed.len(),
                "rejects": rows.collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Replays corrected rejects: the body is a JSON array (or JSON lines) of rejects as listed by
/// `GET .../rejects`, each with `raw` corrected. Log rows are appended through this process's
/// producer of the topic (shared with the generators); file rows become a new file that the
/// next run reads (`?run=true` starts that run now). All rows are checked before any is
/// written: 400 names the first that cannot be replayed, 409 one that already was.
async fn rejects_replay(
    State(server): State<Shared>,
    Pipeline(p): Pipeline,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let name = p.spec.name.clone();
    let rows = match rejects::parse_corrected(&body) {
        Ok(rows) => rows,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
    };
    let run = match q.get("run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("run: expected true or false, not `{other}`"),
            )
        }
    };
    let mode = match p.spec.plan {
        crate::project::RunPlan::Stream { .. } => flowline_runtime::Mode::Stream,
        _ => flowline_runtime::Mode::Batch,
    };
    let opened =
        match flowline_runtime::OpenedPipeline::open(&p.spec.file, p.options(mode, None)).await {
            Ok(o) => o,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    let replay_server = server.clone();
    let result = tokio::task::spawn_blocking(move || {
        rejects::replay_corrected(&opened, &rows, &mut |topic, partition, values| {
            replay_server.producers.append_to(topic, partition, values)
        })
    })
    .await;
    match result {
        Ok(Ok(summary)) => {
            let started = run && !p.continuous();
            if started {
                p.wake.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Json(json!({
                "pipeline": name,
                "replayed": summary.rows,
                "appended": summary.appended.iter().map(|(t, p, o, n)| json!({
                    "topic": t, "partition": p, "offset": o, "rows": n,
                })).collect::<Vec<_>>(),
                "files": summary.files.iter().map(|(f, n)| json!({
                    "path": f, "rows": n,
                })).collect::<Vec<_>>(),
                "run_started": started,
            }))
            .into_response()
        }
        Ok(Err(rejects::ReplayError::AlreadyReplayed(m))) => error(StatusCode::CONFLICT, m),
        Ok(Err(rejects::ReplayError::Invalid(m))) => error(StatusCode::BAD_REQUEST, m),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn history(Pipeline(p): Pipeline) -> Response {
    let h = p.history.lock().map(|h| h.clone()).unwrap_or_default();
    Json(h).into_response()
}

async fn run_now(Pipeline(p): Pipeline) -> Response {
    let name = p.spec.name.clone();
    if p.continuous() {
        return error(
            StatusCode::CONFLICT,
            format!(
                "pipeline {name} runs continuously ({}); there is no run to start",
                p.spec.plan
            ),
        );
    }
    p.wake.store(true, std::sync::atomic::Ordering::SeqCst);
    (
        StatusCode::ACCEPTED,
        Json(json!({"pipeline": name, "requested": "run now"})),
    )
        .into_response()
}

/// Starts a Kappa replay into a new version (`?as=v2[&max_lag=100][&diff=true]`), or
/// corrections of a time range (`?from=...&to=...[&column=...]`).
async fn replay_start(Pipeline(p): Pipeline, Query(q): Query<HashMap<String, String>>) -> Response {
    if q.contains_key("from") || q.contains_key("to") {
        if q.contains_key("as") {
            return error(
                StatusCode::BAD_REQUEST,
                "give either `as` (a new version) or `from` and `to` (corrections), not both",
            );
        }
        let mut range = [0i64; 2];
        for (i, key) in ["from", "to"].into_iter().enumerate() {
            match q.get(key).map(|t| parse_time(t)) {
                Some(Ok(ms)) => range[i] = ms,
                Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("{key}: {e}")),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("corrections need both `from` and `to` (`{key}` is missing)"),
                    )
                }
            }
        }
        let range = flowline_connectors::TimeRange {
            from_ms: range[0],
            to_ms: range[1],
            column: q.get("column").cloned(),
        };
        return replay_response(crate::replay::start_correction(&p, range).await);
    }
    let Some(version) = q.get("as") else {
        return error(
            StatusCode::BAD_REQUEST,
            "give the version to build (`?as=v2`), or a time range to correct (`?from=&to=`)",
        );
    };
    let max_lag = match q.get("max_lag").map(|v| v.parse::<u64>()) {
        None => crate::replay::DEFAULT_MAX_LAG,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "max_lag must be a number of records",
            )
        }
    };
    let diff = match q.get("diff").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("diff must be true or false, not '{other}'"),
            )
        }
    };
    let request = crate::replay::ReplayRequest {
        version: version.clone(),
        max_lag,
        diff,
    };
    replay_response(crate::replay::start(&p, request).await)
}

/// 202 with the replay's status; 409 when it conflicts with one running or a version that
/// exists; 400 for a request that cannot run (bad SQL, no serving table, an empty range).
fn replay_response(started: anyhow::Result<crate::replay::ReplayStatus>) -> Response {
    match started {
        Ok(status) => (StatusCode::ACCEPTED, Json(status)).into_response(),
        Err(e) if e.downcast_ref::<crate::replay::Conflict>().is_some() => {
            error(StatusCode::CONFLICT, format!("{e:#}"))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

/// Cancels the running replay (not corrections): 202 with its status, which ends `cancelled`;
/// 409 when none is running.
async fn replay_cancel(Pipeline(p): Pipeline) -> Response {
    replay_response(crate::replay::cancel(&p))
}

/// The pipeline's last replay.
async fn replay_status(Pipeline(p): Pipeline) -> Response {
    let name = p.spec.name.clone();
    match p.replay.lock().ok().and_then(|r| r.clone()) {
        Some(r) => Json(r).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("pipeline {name} has not been replayed since the server started"),
        ),
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or ms since the epoch.
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            format!("'{text}' is not a date (2026-03-17), an RFC 3339 time (2026-03-17T06:00:00Z) or ms")
        })
}

async fn backfill(Pipeline(p): Pipeline, Query(q): Query<HashMap<String, String>>) -> Response {
    let name = p.spec.name.clone();
    let time = |key: &str, default: Option<i64>| -> Result<i64, Box<Response>> {
        let bad = |m: String| Box::new(error(StatusCode::BAD_REQUEST, m));
        match q.get(key) {
            Some(t) => parse_time(t).map_err(|e| bad(format!("{key}: {e}"))),
            None => default.ok_or_else(|| bad(format!("give `{key}` (a date such as 2026-03-17)"))),
        }
    };
    // Default: the runs missed since the last successful one.
    let last_ok = p.state().last_success_ms;
    let (from, to) = match (time("from", last_ok), time("to", Some(now_ms()))) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    match p.queue_backfill(from, to) {
        Ok(times) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "pipeline": name,
                "runs": times.len(),
                "scheduled_times": times
                    .iter()
                    .filter_map(|t| chrono::DateTime::from_timestamp_millis(*t))
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
    }
}

fn table_json(name: &str, server: &Server) -> Value {
    let entry = &server.tables[name];
    let info = entry.table.info(None);
    let versions = entry.table.versions().unwrap_or_default();
    match info {
        Ok(Some(info)) => json!({
            "name": name,
            "pipeline": entry.pipeline,
            "version": info.version,
            "versions": versions,
            "key": info.key,
            "rows": info.rows,
            "updated_ms": info.updated_ms,
            "published_epoch": info.published_epoch,
            "columns": info.schema.map(|s| s.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect::<Vec<_>>()),
        }),
        Ok(None) => {
            json!({"name": name, "pipeline": entry.pipeline, "rows": 0, "versions": versions, "version": null})
        }
        Err(e) => json!({"name": name, "pipeline": entry.pipeline, "error": e.to_string()}),
    }
}

async fn tables(State(server): State<Shared>) -> Response {
    let listed = blocking(move || {
        Ok(server
            .tables
            .keys()
            .map(|n| table_json(n, &server))
            .collect::<Vec<_>>())
    })
    .await;
    match listed {
        Ok(tables) => Json(tables).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Rows as a JSON array of objects (Arrow's JSON writer: nulls left out, decimals as numbers).
pub(crate) fn json_rows(batches: &[RecordBatch]) -> Result<Value, arrow::error::ArrowError> {
    let mut buf = vec![];
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_slice(&buf).map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))
}

/// Rows in the format asked for (`?format=json|csv|arrow`, default JSON), at most `?limit=`
/// of them; JSON wraps them in `envelope` with the columns and the total.
fn batches_response(
    q: &HashMap<String, String>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    envelope: Value,
) -> Response {
    let limit = match limit(q, usize::MAX) {
        Ok(l) => l,
        Err(r) => return *r,
    };
    let format = q.get("format").map(String::as_str).unwrap_or("json");
    let limited: Vec<RecordBatch> = {
        let mut left = limit;
        let mut out = vec![];
        for b in batches {
            if left == 0 {
                break;
            }
            let n = b.num_rows().min(left);
            out.push(b.slice(0, n));
            left -= n;
        }
        out
    };
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match format {
        "json" => {
            let rows = match json_rows(&limited) {
                Ok(rows) => rows,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
            let mut body = envelope;
            body["columns"] = json!(schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect::<Vec<_>>());
            body["total_rows"] = json!(total);
            body["truncated"] = json!(total > limit);
            body["rows"] = rows;
            Json(body).into_response()
        }
        "csv" => {
            let mut buf = vec![];
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in &limited {
                    if let Err(e) = w.write(b) {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
                    }
                }
            }
            if limited.is_empty() {
                buf = schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes();
                buf.push(b'\n');
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], buf).into_response()
        }
        "arrow" => {
            let mut buf = vec![];
            let written = (|| -> Result<(), arrow::error::ArrowError> {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
                for b in &limited {
                    w.write(b)?;
                }
                w.finish()
            })();
            if let Err(e) = written {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
            (
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                Body::from(buf),
            )
                .into_response()
        }
        other => error(
            StatusCode::BAD_REQUEST,
            format!("unknown format '{other}' (json, csv or arrow)"),
        ),
    }
}

async fn table(
    State(server): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(entry) = server.tables.get(&name) else {
        return not_found("serving table", &name);
    };
    let version = q.get("version").cloned();
    if let Some(v) = &version {
        if let Err(e) = serving::check_version_name(v) {
            return error(StatusCode::BAD_REQUEST, format!("version: {e}"));
        }
    }
    let key = q.get("key").cloned();
    let table = entry.table.clone();
    // The store is read off the async threads: a large table must not stall the others.
    let read = tokio::task::spawn_blocking(move || match key {
        Some(key) => {
            let parts: Vec<&str> = key.split(',').collect();
            table.lookup(version.as_deref(), &parts)
        }
        None => Ok(table.read_rows(version.as_deref())?),
    })
    .await;
    match read {
        Ok(Ok(Some(rows))) => {
            let envelope = json!({
                "table": name,
                "version": rows.version,
                "key": rows.key,
                "updated_ms": rows.updated_ms,
            });
            batches_response(&q, &rows.schema, &rows.batches, envelope)
        }
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("serving table `{name}` has no published rows yet"),
        ),
        Ok(Err(serving::ReadError::Request(e))) => error(StatusCode::BAD_REQUEST, e),
        Ok(Err(serving::ReadError::Store(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn sql(
    State(server): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let ctx = match crate::views::context(&server, &body).await {
        Ok(ctx) => ctx,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let options = crate::views::read_only();
    // A table that cannot be read is the server's fault; anything else is the query's.
    let status = |e: &datafusion::error::DataFusionError| match e.find_root() {
        datafusion::error::DataFusionError::External(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let df = match ctx.sql_with_options(&body, options).await {
        Ok(df) => df,
        Err(e) => return error(status(&e), e),
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = match df.collect().await {
        Ok(b) => b,
        Err(e) => return error(status(&e), e),
    };
    batches_response(&q, &schema, &batches, json!({"sql": body}))
}

/// Every pipeline's alerts: those firing and the latest events.
async fn alerts(State(server): State<Shared>) -> Response {
    let mut firing = vec![];
    let mut events = vec![];
    for p in &server.pipelines {
        if let Ok(book) = p.alerts.lock() {
            firing.extend(book.firing.iter().cloned());
            events.extend(book.events.iter().cloned());
        }
    }
    events.sort_by_key(|a| a.resolved_ms.unwrap_or(a.since_ms));
    Json(json!({
        "webhook": server.project.alert_webhook.is_some(),
        "firing": firing,
        "events": events,
    }))
    .into_response()
}

async fn views(State(server): State<Shared>) -> Response {
    Json(
        server
            .project
            .views
            .iter()
            .map(|v| {
                json!({
                    "name": v.name,
                    "batch": v.batch,
                    "stream": v.stream,
                    "time_column": v.time_column,
                    "period_ms": v.period.as_millis() as u64,
                })
            })
            .collect::<Vec<_>>(),
    )
    .into_response()
}

/// A Lambda view's rows: `?format=json|csv|arrow&limit=`.
async fn view(
    State(server): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(spec) = server.project.views.iter().find(|v| v.name == name) else {
        return not_found("view", &name);
    };
    let rows = match crate::views::evaluate(&server, spec).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    let envelope = json!({
        "view": name,
        "batch": spec.batch,
        "stream": spec.stream,
        "time_column": spec.time_column,
        "boundary_ms": rows.boundary_ms,
        "boundary": rows
            .boundary_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "batch_run": rows.batch_run,
    });
    batches_response(&q, &rows.schema, &rows.batches, envelope)
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of every pipeline's numbers.
pub fn metrics_text(server: &Server) -> String {
    /// One pipeline's numbers, taken once.
    struct Taken {
        labels: String,
        state: crate::serve::RunnerState,
        live: flowline_runtime::StatusSnapshot,
        freshness_ms: Option<i64>,
        target: Option<std::time::Duration>,
        alerts: Vec<crate::serve::Alert>,
    }
    let taken: Vec<Taken> = server
        .pipelines
        .iter()
        .map(|p| Taken {
            labels: format!("pipeline=\"{}\"", label(&p.spec.name)),
            state: p.state(),
            live: p.live(),
            freshness_ms: p.freshness_ms(),
            target: p.spec.freshness,
            alerts: p
                .alerts
                .lock()
                .map(|a| a.firing.clone())
                .unwrap_or_default(),
        })
        .collect();
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, rows: &dyn Fn(&Taken) -> Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for t in &taken {
                for (labels, v) in rows(t) {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        };
    let one = |t: &Taken, v: f64| vec![(t.labels.clone(), v)];
    // The labels of one operator of a pipeline.
    let op_labels = |t: &Taken, sink: &str, operator: &str, position: usize| {
        format!(
            "{},sink=\"{}\",operator=\"{}\",position=\"{position}\"",
            t.labels,
            label(sink),
            label(operator)
        )
    };
    // Rows of a per-name map, labelled `what="name"`.
    let each = |t: &Taken, what: &str, m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(n, v)| (format!("{},{what}=\"{}\"", t.labels, label(n)), *v as f64))
            .collect()
    };
    family(
        "flowline_pipeline_up",
        "gauge",
        "1 while the pipeline is running or waiting for its next run, 0 when retrying, failed (a batch run given up) or stopped",
        &|t| {
            let up = matches!(t.state.status.as_str(), "running" | "waiting");
            one(t, f64::from(u8::from(up)))
        },
    );
    family(
        "flowline_alert_firing",
        "gauge",
        "1 for each alert firing (kind: lag or freshness)",
        &|t| {
            t.alerts
                .iter()
                .map(|a| (format!("{},kind=\"{}\"", t.labels, a.kind), 1.0))
                .collect()
        },
    );
    family("flowline_runs_total", "counter", "Runs started", &|t| {
        one(t, t.state.runs as f64)
    });
    family(
        "flowline_run_failures_total",
        "counter",
        "Runs that failed",
        &|t| one(t, t.state.failures as f64),
    );
    family(
        "flowline_backfill_queued",
        "gauge",
        "Backfilled runs waiting",
        &|t| one(t, t.state.backfill_queued as f64),
    );
    family(
        "flowline_backfill_runs_total",
        "counter",
        "Backfilled runs finished (outcome: ok, or given_up after repeated failures)",
        &|t| {
            vec![
                (
                    format!("{},outcome=\"ok\"", t.labels),
                    t.state.backfill_done as f64,
                ),
                (
                    format!("{},outcome=\"given_up\"", t.labels),
                    t.state.backfill_failed as f64,
                ),
            ]
        },
    );
    family(
        "flowline_rows_read_total",
        "counter",
        "Rows read per source in the current run",
        &|t| each(t, "source", &t.live.rows_read),
    );
    family(
        "flowline_rows_written_total",
        "counter",
        "Rows published per sink in the current run",
        &|t| each(t, "sink", &t.live.rows_written),
    );
    family(
        "flowline_rejects_total",
        "counter",
        "Rejected rows per reason in the current run",
        &|t| each(t, "reason", &t.live.rejects),
    );
    family(
        "flowline_watermark_ms",
        "gauge",
        "Current watermark per source, ms since the Unix epoch",
        &|t| {
            t.live
                .watermarks
                .iter()
                .filter(|(_, w)| **w > i64::MIN && **w < i64::MAX)
                .map(|(s, w)| (format!("{},source=\"{}\"", t.labels, label(s)), *w as f64))
                .collect()
        },
    );
    family(
        "flowline_lag_records",
        "gauge",
        "Log records appended but not read yet, per source",
        &|t| each(t, "source", &t.live.lag_records),
    );
    family(
        "flowline_lag_unknown",
        "gauge",
        "1 per log source whose lag could not be read at the last checkpoint (absent from flowline_lag_records)",
        &|t| {
            t.live
                .lag_unknown
                .iter()
                .map(|n| (format!("{},source=\"{}\"", t.labels, label(n)), 1.0))
                .collect()
        },
    );
    family(
        "flowline_freshness_seconds",
        "gauge",
        "Age of the published output (now minus the last publish)",
        &|t| {
            t.freshness_ms
                .map(|f| one(t, f as f64 / 1000.0))
                .unwrap_or_default()
        },
    );
    family(
        "flowline_freshness_target_seconds",
        "gauge",
        "Declared freshness target",
        &|t| {
            t.target
                .map(|f| one(t, f.as_secs_f64()))
                .unwrap_or_default()
        },
    );
    family(
        "flowline_checkpoint_duration_ms",
        "gauge",
        "Duration of the last checkpoint",
        &|t| {
            t.live
                .last_checkpoint
                .as_ref()
                .map(|c| one(t, c.duration_ms as f64))
                .unwrap_or_default()
        },
    );
    family(
        "flowline_checkpoint_bytes",
        "gauge",
        "Operator state bytes written by the last checkpoint",
        &|t| {
            t.live
                .last_checkpoint
                .as_ref()
                .map(|c| one(t, c.bytes as f64))
                .unwrap_or_default()
        },
    );
    family(
        "flowline_checkpoints_total",
        "counter",
        "Checkpoints completed in the current run",
        &|t| one(t, t.live.checkpoints as f64),
    );
    family(
        "flowline_operator_state_bytes",
        "gauge",
        "State held per stateful operator at the last checkpoint",
        &|t| {
            t.live
                .operators
                .iter()
                .map(|o| {
                    (
                        op_labels(t, &o.sink, &o.operator, o.position),
                        o.state_bytes as f64,
                    )
                })
                .collect()
        },
    );
    // Rows in and out of every operator, labelled like the state above.
    let operator_rows = |t: &Taken, out: bool| -> Vec<(String, f64)> {
        t.live
            .operator_rows
            .iter()
            .map(|o| {
                (
                    op_labels(t, &o.sink, &o.operator, o.position),
                    (if out { o.rows_out } else { o.rows_in }) as f64,
                )
            })
            .collect()
    };
    family(
        "flowline_operator_rows_in_total",
        "counter",
        "Rows each operator received in the current run (data and retractions), as of the last \
         checkpoint or the end of the run",
        &|t| operator_rows(t, false),
    );
    family(
        "flowline_operator_rows_out_total",
        "counter",
        "Rows each operator sent in the current run (data and retractions), as of the last \
         checkpoint or the end of the run",
        &|t| operator_rows(t, true),
    );
    out
}

async fn metrics(State(server): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&server),
    )
        .into_response()
}
