//! Plans views and `INSERT` queries with DataFusion, registering window TVF relations on the
//! way. The same binding runs for planning (relations are schema-only) and for batch execution
//! through DataFusion (relations hold data); a [`TvfBinder`] decides which.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use flowline_core::{Error, Result};

use crate::parse::{PipelineDef, Statement, TvfCall};

/// A planned `INSERT INTO sink <query>`.
#[derive(Debug, Clone)]
pub struct BoundInsert {
    pub sink: String,
    /// The analyzed (type-coerced), unoptimized logical plan of the query.
    pub plan: LogicalPlan,
    pub line: u64,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Supplies the table behind a window TVF relation.
pub trait TvfBinder: Sync {
    /// `input` is the plan of `SELECT * FROM call.input`; `schema` is its schema plus the window
    /// columns.
    fn bind<'a>(
        &'a self,
        ctx: &'a SessionContext,
        call: &'a TvfCall,
        input: LogicalPlan,
        schema: SchemaRef,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>>>;
}

/// A DataFusion session configured for Flowline: identifiers are case-sensitive, as in Flink.
pub fn new_session() -> SessionContext {
    let mut config = datafusion::prelude::SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    flowline_core::functions::register_flink_functions(&ctx);
    // Flink's name for DataFusion's approx_distinct.
    let approx = datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf();
    ctx.register_udaf(
        approx
            .as_ref()
            .clone()
            .with_aliases(["approx_count_distinct"]),
    );
    ctx
}

/// The window columns every window TVF adds, in order.
pub const WINDOW_COLUMNS: [&str; 3] = ["window_start", "window_end", "window_time"];

/// Plans every statement of `def` in `ctx`, where the pipeline's source tables are already
/// registered. Returns the inserts in file order.
pub async fn bind(
    def: &PipelineDef,
    ctx: &SessionContext,
    binder: &dyn TvfBinder,
) -> Result<Vec<BoundInsert>> {
    let mut inserts = vec![];
    for (i, stmt) in def.statements.iter().enumerate() {
        for call in def.tvfs.iter().filter(|c| c.statement == i) {
            let input = ctx
                .table(call.input.as_str())
                .await
                .map_err(|e| {
                    Error::Plan(format!(
                        "line {}: window over `{}`: {}",
                        call.line,
                        call.input,
                        Error::from(e)
                    ))
                })?
                .into_unoptimized_plan();
            let schema = tvf_schema(call, input.schema().as_arrow())?;
            let provider = binder.bind(ctx, call, input, schema).await?;
            ctx.register_table(call.name.as_str(), provider)?;
        }
        // `table FOR SYSTEM_TIME AS OF ...`: the query reads a view of the table by a
        // generated name (see `TemporalRef`).
        for t in def.temporal.iter().filter(|t| t.statement == i) {
            let plan = ctx
                .table(t.table.as_str())
                .await
                .map_err(|e| {
                    Error::Plan(format!(
                        "line {}: {} FOR SYSTEM_TIME AS OF: {}",
                        t.line,
                        t.table,
                        Error::from(e)
                    ))
                })?
                .into_unoptimized_plan();
            ctx.register_table(t.name.as_str(), Arc::new(ViewTable::new(plan, None)))?;
        }
        match stmt {
            Statement::View { name, query, line } => {
                let plan = plan_query(ctx, query, *line).await?;
                ctx.register_table(name.as_str(), Arc::new(ViewTable::new(plan, None)))?;
            }
            Statement::Insert { sink, query, line } => {
                let plan = plan_query(ctx, query, *line).await?;
                inserts.push(BoundInsert {
                    sink: sink.clone(),
                    plan,
                    line: *line,
                });
            }
        }
    }
    Ok(inserts)
}

fn tvf_schema(call: &TvfCall, input: &Schema) -> Result<SchemaRef> {
    let field = input.field_with_name(&call.time_column).map_err(|_| {
        Error::Plan(format!(
            "line {}: DESCRIPTOR({}) names no column of `{}` (columns: {})",
            call.line,
            call.time_column,
            call.input,
            input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    if !matches!(field.data_type(), DataType::Timestamp(..)) {
        return Err(Error::Plan(format!(
            "line {}: DESCRIPTOR({}) must name a TIMESTAMP column, `{}` is {}",
            call.line,
            call.time_column,
            call.time_column,
            field.data_type()
        )));
    }
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in WINDOW_COLUMNS {
        if input.field_with_name(name).is_ok() {
            return Err(Error::Plan(format!(
                "line {}: `{}` already has a column named `{name}`, which the window adds",
                call.line, call.input
            )));
        }
        fields.push(Field::new(
            name,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

async fn plan_query(ctx: &SessionContext, query: &Query, line: u64) -> Result<LogicalPlan> {
    let state = ctx.state();
    let stmt = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
    let located = |e: Error| match e {
        Error::Plan(m) => Error::Plan(format!("line {line}: {m}")),
        other => other,
    };
    let plan = state
        .statement_to_plan(stmt)
        .await
        .map_err(|e| located(e.into()))?;
    state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| located(e.into()))
}
