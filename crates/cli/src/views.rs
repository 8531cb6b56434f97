//! Lambda views and the read-only SQL context over serving tables.
//!
//! A Lambda view (`[[view]]` in `flowline.toml`, the seeds' view-count example) answers from the
//! *batch* table for closed periods and from the *stream* side for the open one, so one query
//! shows exact history and a fresh today:
//!
//! * the **boundary** is the newest event time read by the batch pipeline's last successful full
//!   run of the served version (its manifest's `max_event_time`; with several sources the
//!   smallest of their newest; corrections of a range and replays not swapped in do not count),
//!   rounded down to the view's `period`: periods before it are closed (the batch run saw them
//!   whole), the period holding it and later ones are open;
//! * rows of the batch table with `time_column` before the boundary, plus rows of the stream side
//!   (a serving table, or a SELECT over serving tables) at or after it, each with a `_layer`
//!   column saying which (`batch` or `stream`);
//! * before the batch pipeline's first successful run, everything comes from the stream side.
//!
//! Each side is read from one committed snapshot of its table's current version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use flowline_connectors::serving::{self, ServingTable};
use flowline_runtime::manifest;

use crate::project::ViewSpec;
use crate::serve::Server;

/// A view's rows and where the split was.
pub struct ViewRows {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The first instant of the open period (ms since the Unix epoch); `None` before the batch
    /// pipeline's first run.
    pub boundary_ms: Option<i64>,
    /// The batch run the boundary comes from.
    pub batch_run: Option<String>,
}

/// SQL options of every query over serving tables: read-only.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// A DataFusion context over the project's serving tables, each under its name, and the
/// Lambda views that `sql` names (a view is computed only when asked for). A table is read
/// (its current version, one committed snapshot) only when the query names it.
pub async fn context(server: &Server, sql: &str) -> Result<SessionContext> {
    let ctx = tables_context(server)?;
    let named = named_tables(&ctx, sql);
    for view in &server.project.views {
        if !named.iter().any(|n| n.eq_ignore_ascii_case(&view.name)) {
            continue;
        }
        let rows = evaluate_in(&ctx, server, view).await?;
        let table = datafusion::datasource::MemTable::try_new(rows.schema, vec![rows.batches])?;
        ctx.register_table(view.name.as_str(), Arc::new(table))?;
    }
    Ok(ctx)
}

/// The tables a statement reads (as DataFusion resolves them; CTEs excluded). Empty when the
/// text does not parse: the query then fails with the parser's own error.
fn named_tables(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    state
        .sql_to_statement(sql, &dialect)
        .and_then(|statement| state.resolve_table_references(&statement))
        .map(|refs| refs.iter().map(|r| r.table().to_string()).collect())
        .unwrap_or_default()
}

fn tables_context(server: &Server) -> Result<SessionContext> {
    serving_context(
        server
            .tables
            .iter()
            .map(|(name, entry)| (name.clone(), (entry.table.clone(), entry.pipeline.clone())))
            .collect(),
    )
}

/// A context over `tables` (name → table and the pipeline writing it).
fn serving_context(tables: BTreeMap<String, (ServingTable, String)>) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let schema = ServingSchema {
        pipelines: tables
            .iter()
            .map(|(n, (_, p))| (n.clone(), p.clone()))
            .collect(),
        tables: tables.into_iter().map(|(n, (t, _))| (n, t)).collect(),
        versions: Mutex::default(),
        loaded: Mutex::default(),
    };
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| anyhow!("DataFusion has no default catalog"))?;
    catalog.register_schema("public", Arc::new(schema))?;
    Ok(ctx)
}

/// The serving tables as DataFusion's default schema. The planner asks for the tables a query
/// names; each is read then, once per context, off the async threads. A table with nothing
/// published yet does not exist. Views computed for the query are registered here too.
#[derive(Debug)]
struct ServingSchema {
    tables: BTreeMap<String, ServingTable>,
    /// The pipeline writing each table.
    pipelines: BTreeMap<String, String>,
    /// The version the context reads of each table of the pipelines it has read from (`None`:
    /// none on disk), fixed for all tables of a pipeline at once, in one step against its
    /// replays' swaps: a query over several of them reads them all before a swap or all after.
    versions: Mutex<HashMap<String, Option<String>>>,
    /// Tables read so far and views registered, by name.
    loaded: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl ServingSchema {
    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn TableProvider>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version of table `name` this context reads; the first table of a pipeline fixes
    /// the versions of all its tables (a few small file reads).
    fn version_of(&self, name: &str) -> DfResult<Option<String>> {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = versions.get(name) {
            return Ok(v.clone());
        }
        let pipeline = self.pipelines.get(name);
        let group: Vec<(&String, &ServingTable)> = self
            .tables
            .iter()
            .filter(|(n, _)| self.pipelines.get(*n) == pipeline)
            .collect();
        let found = serving::current_versions(&group.iter().map(|(_, t)| *t).collect::<Vec<_>>())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for ((n, _), v) in group.into_iter().zip(found) {
            versions.insert(n.clone(), v);
        }
        Ok(versions.get(name).cloned().flatten())
    }

    /// The serving table a name means: its exact name, else the one table whose name differs
    /// only in case (DataFusion lower-cases unquoted names; pipelines keep the case written).
    fn resolve(&self, name: &str) -> Option<(&String, &ServingTable)> {
        self.tables.get_key_value(name).or_else(|| {
            let mut matches = self
                .tables
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name));
            match (matches.next(), matches.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        })
    }
}

#[async_trait::async_trait]
impl SchemaProvider for ServingSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tables.keys().cloned().collect();
        names.extend(self.loaded().keys().cloned());
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.loaded().get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        let Some((name, table)) = self.resolve(name) else {
            return Ok(None);
        };
        if let Some(table) = self.loaded().get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        let (name, table) = (name.clone(), table.clone());
        let version = self.version_of(&name)?;
        let read = tokio::task::spawn_blocking(move || table.read(version.as_deref()))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let Some((schema, batches)) = read else {
            return Ok(None);
        };
        let table: Arc<dyn TableProvider> = Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![batches],
        )?);
        let mut loaded = self.loaded();
        Ok(Some(Arc::clone(loaded.entry(name).or_insert(table))))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.resolve(&name).is_some() {
            return Err(DataFusionError::Plan(format!(
                "{name} is a serving table; a view cannot take its name"
            )));
        }
        Ok(self.loaded().insert(name, table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.resolve(name).is_some() || self.loaded().contains_key(name)
    }
}

/// Checks a view against the project's serving tables (before anything runs).
pub fn check(view: &ViewSpec, server: &Server) -> Result<()> {
    let Some(entry) = server.tables.get(&view.batch) else {
        bail!(
            "view {}: batch table `{}` is not a serving table of the project (tables: {})",
            view.name,
            view.batch,
            server.tables.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let writer = server
        .pipeline(&entry.pipeline)
        .ok_or_else(|| anyhow!("view {}: no pipeline {}", view.name, entry.pipeline))?;
    if !matches!(writer.spec.plan, crate::project::RunPlan::Batch { .. }) {
        bail!(
            "view {}: batch table `{}` is written by pipeline {}, which is not a batch pipeline \
             ({})",
            view.name,
            view.batch,
            writer.spec.name,
            writer.spec.plan
        );
    }
    // SQL names are case-insensitive here (unquoted names are lower-cased), so `Daily` and
    // `daily` would clash in every query.
    if let Some(table) = server
        .tables
        .keys()
        .find(|t| t.eq_ignore_ascii_case(&view.name))
    {
        bail!(
            "view {}: serving table `{table}` has that name (names differ only in case clash \
             in SQL): rename the view",
            view.name
        );
    }
    if !is_query(&view.stream) && !server.tables.contains_key(&view.stream) {
        bail!(
            "view {}: stream `{}` is neither a serving table of the project nor a SELECT",
            view.name,
            view.stream
        );
    }
    Ok(())
}

fn is_query(text: &str) -> bool {
    let t = text.trim_start().to_ascii_lowercase();
    t.starts_with("select") || t.starts_with("with") || t.starts_with('(')
}

/// The rows of a view now.
pub async fn evaluate(server: &Server, view: &ViewSpec) -> Result<ViewRows> {
    let ctx = tables_context(server)?;
    evaluate_in(&ctx, server, view).await
}

async fn evaluate_in(ctx: &SessionContext, server: &Server, view: &ViewSpec) -> Result<ViewRows> {
    let (boundary_ms, batch_run) = boundary(server, view).await?;
    let column = format!("\"{}\"", view.time_column.replace('"', "\"\""));
    let stream = if is_query(&view.stream) {
        format!("({})", view.stream)
    } else {
        format!("\"{}\"", view.stream)
    };
    // Read here (not only when the SQL below plans), because a batch table with nothing
    // published yet leaves the stream side alone; a store that fails fails the view. Without a
    // batch run there is no boundary, and the batch side is not read at all.
    let has_batch = boundary_ms.is_some()
        && ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("public"))
            .ok_or_else(|| anyhow!("no serving schema"))?
            .table(&view.batch)
            .await?
            .is_some();
    let sql = match (boundary_ms, has_batch) {
        (Some(b), true) => {
            let at = chrono::DateTime::from_timestamp_millis(b)
                .ok_or_else(|| anyhow!("boundary out of range"))?
                .format("%Y-%m-%d %H:%M:%S%.3f");
            format!(
                "SELECT *, 'batch' AS _layer FROM \"{batch}\" \
                   WHERE CAST({column} AS TIMESTAMP) < TIMESTAMP '{at}' \
                 UNION ALL \
                 SELECT *, 'stream' AS _layer FROM {stream} AS s \
                   WHERE CAST(s.{column} AS TIMESTAMP) >= TIMESTAMP '{at}' \
                 ORDER BY {column}",
                batch = view.batch
            )
        }
        _ => format!("SELECT *, 'stream' AS _layer FROM {stream} AS s ORDER BY {column}"),
    };
    let df = ctx
        .sql_with_options(&sql, read_only())
        .await
        .with_context(|| {
            format!(
                "view {}: the batch table `{}` and the stream side must have the same columns, \
                 with `{}` a date or time",
                view.name, view.batch, view.time_column
            )
        })?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .with_context(|| format!("view {}", view.name))?;
    Ok(ViewRows {
        schema,
        batches,
        boundary_ms,
        batch_run,
    })
}

/// The first instant of the open period and the batch run it comes from. The manifest is read
/// on the blocking pool.
async fn boundary(server: &Server, view: &ViewSpec) -> Result<(Option<i64>, Option<String>)> {
    let Some(entry) = server.tables.get(&view.batch) else {
        return Ok((None, None));
    };
    let Some(writer) = server.pipeline(&entry.pipeline) else {
        return Ok((None, None));
    };
    let path = writer.manifest_path.clone();
    let (active, declared) = (writer.active_version(), writer.declared_version.clone());
    let period = view.period.as_millis().max(1) as i64;
    tokio::task::spawn_blocking(move || {
        let records = manifest::read(&path)
            .with_context(|| format!("the batch pipeline's manifest {}", path.display()))?;
        Ok(boundary_in(&records, &active, &declared, period))
    })
    .await?
}

/// [`boundary`] from the batch pipeline's manifest records, the version it serves and the one
/// its SQL declares.
fn boundary_in(
    records: &[serde_json::Value],
    active: &str,
    declared: &str,
    period: i64,
) -> (Option<i64>, Option<String>) {
    // The last full run of the version served: not a correction of a range, not a replay into
    // a version that is not (yet) served, and one that read events.
    let newest_event = |r: &serde_json::Value| -> Option<i64> {
        r["max_event_time"]
            .as_object()?
            .values()
            .filter_map(|v| v.as_str())
            .filter_map(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").ok())
            .map(|t| t.and_utc().timestamp_millis())
            // Every source has seen up to the smallest of their newest events.
            .min()
    };
    let Some((run, newest)) = records.iter().rev().find_map(|r| {
        let version = r["serving_version"].as_str().unwrap_or(declared);
        let usable = r["status"] == "ok" && r["time_range"].is_null() && version == active;
        usable.then(|| newest_event(r).map(|t| (r, t))).flatten()
    }) else {
        return (None, None);
    };
    (
        Some(newest.div_euclid(period) * period),
        run["run_id"].as_str().map(str::to_string),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table is read only when a query names it: a broken store fails only the queries that
    /// read it, as the server's fault (an external error), and a table with nothing published
    /// does not exist.
    #[tokio::test]
    async fn tables_are_read_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("v1.redb"), b"not a redb file").unwrap();
        let tables = BTreeMap::from([
            // Pipelines keep the case written; DataFusion lower-cases unquoted names.
            (
                "Broken".to_string(),
                (ServingTable::at(&broken), "a".to_string()),
            ),
            (
                "empty".to_string(),
                (ServingTable::at(dir.path().join("empty")), "b".to_string()),
            ),
        ]);
        let ctx = serving_context(tables).unwrap();
        let one = ctx
            .sql("SELECT 1 AS x")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(one[0].num_rows(), 1);
        let err = ctx.sql("SELECT * FROM broken").await.unwrap_err();
        assert!(
            matches!(err.find_root(), DataFusionError::External(_)),
            "{err:?}"
        );
        assert!(err.to_string().contains("v1.redb"), "{err}");
        let err = ctx.sql("SELECT * FROM empty").await.unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let err = ctx.sql("SELECT * FROM \"Broken\"").await.unwrap_err();
        assert!(err.to_string().contains("v1.redb"), "{err}");
        // Views are computed only for the queries that read them, not for any text that
        // mentions their name.
        assert_eq!(
            named_tables(
                &ctx,
                "WITH v AS (SELECT 1) SELECT 'pnl' AS x FROM v JOIN daily_pnl p ON true"
            ),
            vec!["daily_pnl".to_string()]
        );
        assert!(named_tables(&ctx, "SELEC oops").is_empty());
        // Views computed for a query cannot shadow a serving table.
        let mem =
            datafusion::datasource::MemTable::try_new(one[0].schema(), vec![one.clone()]).unwrap();
        assert!(ctx.register_table("broken", Arc::new(mem)).is_err());
    }
}
