//! Batch-only queries the streaming dataflow does not support (joins, ORDER BY, plain GROUP BY,
//! OVER, ...) run on DataFusion over the rows the sources decoded (rejects already removed).
//! Window TVF relations are materialized with the same [`assign_windows`] the dataflow uses.
//!
//! Limitation: these inputs are held in memory for the duration of the query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use flowline_core::plan::WindowSpec;
use flowline_core::{Error, Reject, RejectReason, Result};
use flowline_sql::bind::BoxFuture;
use flowline_sql::{bind, BoundInsert, PipelineDef, TvfBinder, TvfCall};

use crate::operators::assign_windows;
use crate::rejects::RejectBin;
use crate::rows::rows_as_json;

/// Runs `inserts` on DataFusion; returns (sink, rows) per insert, in order.
pub async fn execute(
    def: &PipelineDef,
    schemas: &BTreeMap<String, SchemaRef>,
    mut data: BTreeMap<String, Vec<RecordBatch>>,
    inserts: &[&BoundInsert],
    bin: &mut RejectBin,
) -> Result<Vec<(String, Vec<RecordBatch>)>> {
    let ctx = crate::functions::session();
    for (name, schema) in schemas {
        let provider: Arc<dyn TableProvider> = match data.remove(name) {
            Some(batches) => Arc::new(MemTable::try_new(schema.clone(), vec![batches])?),
            None => Arc::new(EmptyTable::new(schema.clone())),
        };
        ctx.register_table(name.as_str(), provider)?;
    }
    let binder = Materialize::default();
    let bound = bind(def, &ctx, &binder).await?;
    let rejects = std::mem::take(
        &mut *binder
            .rejects
            .lock()
            .map_err(|_| Error::Internal("poisoned".into()))?,
    );
    bin.write(&rejects)?;
    let mut out = vec![];
    for insert in inserts {
        let plan = bound
            .iter()
            .find(|b| b.line == insert.line && b.sink == insert.sink)
            .ok_or_else(|| Error::Internal("insert not re-bound".into()))?;
        let batches = ctx
            .execute_logical_plan(plan.plan.clone())
            .await?
            .collect()
            .await?;
        out.push((insert.sink.clone(), batches));
    }
    Ok(out)
}

/// Registers each window TVF relation as the windowed rows of its input.
#[derive(Default)]
struct Materialize {
    rejects: Mutex<Vec<Reject>>,
}

impl TvfBinder for Materialize {
    fn bind<'a>(
        &'a self,
        ctx: &'a SessionContext,
        call: &'a TvfCall,
        input: LogicalPlan,
        schema: SchemaRef,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>>> {
        Box::pin(async move {
            let time_column = input.schema().as_arrow().index_of(&call.time_column)?;
            let spec = WindowSpec {
                kind: call.kind,
                time_column,
                schema: schema.clone(),
            };
            let batches = ctx.execute_logical_plan(input).await?.collect().await?;
            let mut windowed = vec![];
            for b in &batches {
                let b = RecordBatch::try_new(
                    Arc::new(arrow::datatypes::Schema::new(
                        schema.fields()[..b.num_columns()].to_vec(),
                    )),
                    b.columns().to_vec(),
                )?;
                let (w, nulls) = assign_windows(&b, &spec)?;
                if !nulls.is_empty() {
                    let mut rejects = self
                        .rejects
                        .lock()
                        .map_err(|_| Error::Internal("poisoned".into()))?;
                    for raw in rows_as_json(&b, &nulls)? {
                        rejects.push(Reject {
                            reason: RejectReason::MissingEventTime,
                            detail: format!(
                                "column `{}` is NULL, so the row belongs to no window",
                                call.time_column
                            ),
                            table: call.input.clone(),
                            sink: None,
                            file: None,
                            line: None,
                            raw,
                            window: None,
                            watermark: None,
                        });
                    }
                }
                windowed.push(w);
            }
            Ok(Arc::new(MemTable::try_new(schema, vec![windowed])?) as Arc<dyn TableProvider>)
        })
    }
}
