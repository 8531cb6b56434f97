//! DataFusion logical plan → Flowline dataflow chain.
//!
//! The streaming dataflow supports, per `INSERT`: one source (a table or views over it),
//! projections and filters with any DataFusion scalar expression, one window TVF (TUMBLE, HOP)
//! and one aggregate (COUNT, COUNT DISTINCT, SUM, MIN, MAX, AVG, with FILTER) per window or
//! over the whole input, and stateless projections and filters after it. Anything else is
//! reported as [`Error::Unsupported`] naming the construct; batch mode then runs the query on
//! DataFusion.
//!
//! Output modes (stream mode): a windowed aggregate appends each window's results once, when
//! final, unless update mode is asked for; a GROUP BY without a window is never final, so it
//! runs in update mode. In update mode every row carries its upsert key (the GROUP BY columns;
//! of TUMBLE/HOP window bounds one suffices, of CUMULATE's the end), so the projection after the aggregate must keep them.
//! A filter after a plain GROUP BY (HAVING) or a GROUP BY over one makes it a
//! [`Node::RetractAggregate`] (a group that stops matching, or changes, must be taken back);
//! the plan then `deletes`, and the sink must be able to write deletes. Batch mode emits every
//! result once, when final: always append, never a retraction.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::{source_as_provider, ViewTable};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::AggregateFunction as DfAggregate;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use flowline_core::plan::{
    AggregateCall, AggregateFunction, AggregateSpec, AsOf, DedupSpec, InsertPlan, JoinInput,
    JoinKind, JoinSpec, JoinTime, Node, OutputMode, OverFrame, OverSpec, RankFunction, RankSpec,
    TopNSpec, WindowColumns, WindowKind, WindowSpec,
};
use flowline_core::{Error, Result};

use crate::bind::{BoundInsert, BoxFuture, TvfBinder};
use crate::parse::{PipelineDef, TemporalRef, TvfCall};

/// How a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bounded: read everything, fire every window at the end, write, exit.
    Batch,
    /// Continuous: small batches, the watermark advances as data arrives.
    Stream,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Batch => "batch",
            Mode::Stream => "stream",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "batch" => Ok(Mode::Batch),
            "stream" | "streaming" => Ok(Mode::Stream),
            other => Err(format!("unknown mode '{other}': expected batch or stream")),
        }
    }
}

/// A [`TvfBinder`] for planning: registers schema-only relations and remembers each TVF's input
/// plan for [`lower_insert`].
#[derive(Default)]
pub struct PlanningBinder {
    inputs: Mutex<HashMap<String, LogicalPlan>>,
}

impl PlanningBinder {
    pub fn input(&self, tvf: &str) -> Option<LogicalPlan> {
        self.inputs.lock().ok()?.get(tvf).cloned()
    }
}

impl TvfBinder for PlanningBinder {
    fn bind<'a>(
        &'a self,
        _ctx: &'a SessionContext,
        call: &'a TvfCall,
        input: LogicalPlan,
        schema: SchemaRef,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>>> {
        Box::pin(async move {
            self.inputs
                .lock()
                .map_err(|_| Error::Internal("planning binder poisoned".into()))?
                .insert(call.name.clone(), input);
            Ok(Arc::new(EmptyTable::new(schema)) as Arc<dyn TableProvider>)
        })
    }
}

struct Chain {
    source: String,
    nodes: Vec<Node>,
    window: Option<WindowKind>,
    aggregated: bool,
    output: OutputMode,
    /// SESSION windows: the `PARTITION BY` columns.
    session_partition: Vec<String>,
    /// Update mode: the upsert key in the chain's current output, one part per GROUP BY column
    /// (the window bounds are one part: either identifies the window), each the positions that
    /// hold it.
    key: Vec<Vec<usize>>,
    /// Update mode: why the key was lost (a projection dropped a key column). Fine if an
    /// aggregate above re-keys the rows (it takes retractions whole); an error at the sink.
    key_lost: Option<Error>,
    /// After a join: its right input.
    right: Option<JoinInput>,
}

/// Why event time ends at a regular join.
const REGULAR_JOIN_HINT: &str = "a regular join's output has no watermark (a kept row of any age can still join), so what waits for event time after it would wait for the end: bound the join in time (an interval or window join), or run with --mode batch";

impl Chain {
    /// Whether the chain's rows passed a join without time bounds (no watermark after it).
    fn after_regular_join(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n, Node::Join(j) if j.time.is_none() && j.as_of.is_none()))
    }

    fn of_table(source: String) -> Chain {
        Chain {
            source,
            nodes: vec![],
            window: None,
            aggregated: false,
            output: OutputMode::Append,
            session_partition: vec![],
            key: vec![],
            key_lost: None,
            right: None,
        }
    }
}

/// How to lower: the run's mode and the settings that shape plans.
#[derive(Debug, Clone, Copy)]
pub struct LowerOptions {
    pub mode: Mode,
    /// The output mode asked for (`--output-mode`, `SET 'execution.output-mode'`), if any.
    pub output: Option<OutputMode>,
    /// Update mode: how long (ms) a window's state outlives its end for late rows
    /// (`SET 'table.exec.emit.allow-lateness'`).
    pub allowed_lateness: i64,
    /// Unbounded state (a GROUP BY without window, a regular join, deduplication keys, OVER
    /// partitions) is dropped by this many ms of event time (`SET 'table.exec.state.ttl'`;
    /// what each operator counts from is in its spec).
    pub state_ttl: Option<i64>,
}

struct Lowering<'a> {
    def: &'a PipelineDef,
    binder: &'a PlanningBinder,
    state: &'a SessionState,
    mode: Mode,
    output: Option<OutputMode>,
    allowed_lateness: i64,
    state_ttl: Option<i64>,
    /// The rank limit of the filter being lowered (`rn = 1`), for the ranking below it.
    rank_limit: std::cell::Cell<Option<u64>>,
    /// The `FOR SYSTEM_TIME AS OF` relation being lowered as a temporal join's right input;
    /// anywhere else such a relation is an error.
    as_of_input: std::cell::Cell<Option<&'a str>>,
}

/// Lowers one bound insert to a dataflow chain, or explains what is not supported (see the
/// module documentation for the output modes).
pub fn lower_insert(
    def: &PipelineDef,
    insert: &BoundInsert,
    binder: &PlanningBinder,
    state: &SessionState,
    options: LowerOptions,
) -> Result<InsertPlan> {
    let l = Lowering {
        def,
        binder,
        state,
        mode: options.mode,
        output: options.output,
        allowed_lateness: options.allowed_lateness,
        state_ttl: options.state_ttl,
        rank_limit: std::cell::Cell::new(None),
        as_of_input: std::cell::Cell::new(None),
    };
    let chain = l.lower(&insert.plan).and_then(|chain| {
        if open_session(&chain.nodes) {
            return Err(l.unsupported(
                "a SESSION window without GROUP BY window_start, window_end",
                "a session's bounds are known only once it closes: aggregate over it with GROUP BY window_start, window_end (and its PARTITION BY columns)",
            ));
        }
        Ok(chain)
    });
    let mut chain = chain
        .and_then(|mut chain| match chain.key_lost.take() {
            Some(lost) => Err(lost),
            None => Ok(chain),
        })
        .map_err(|e| match e {
            Error::Unsupported {
                construct,
                mode,
                hint,
            } => Error::Unsupported {
                construct: format!(
                    "{construct} (INSERT INTO {} at line {})",
                    insert.sink, insert.line
                ),
                mode,
                hint,
            },
            Error::Plan(m) if !m.starts_with("line ") => Error::Plan(format!(
                "line {}: INSERT INTO {}: {m}",
                insert.line, insert.sink
            )),
            other => other,
        })?;
    crate::stateless::optimize(&mut chain.nodes)?;
    if let Some(right) = &mut chain.right {
        crate::stateless::optimize(&mut right.nodes)?;
    }
    let deletes = chain
        .nodes
        .iter()
        .any(|n| matches!(n, Node::RetractAggregate(_)));
    Ok(InsertPlan {
        deletes,
        sink: insert.sink.clone(),
        source: chain.source,
        nodes: chain.nodes,
        schema: Arc::new(insert.plan.schema().as_arrow().clone()),
        output: chain.output,
        key: chain.key.iter().map(|part| part[0]).collect(),
        right: chain.right,
    })
}

/// Whether `nodes` assign SESSION windows that no session aggregate merges after them: each row
/// still has its own window `[t, t + gap)`, not its session's bounds.
fn open_session(nodes: &[Node]) -> bool {
    let assigned = nodes.iter().position(
        |n| matches!(n, Node::WindowAssign(w) if matches!(w.kind, WindowKind::Session { .. })),
    );
    assigned.is_some_and(|at| {
        !nodes[at..].iter().any(|n| {
            matches!(n, Node::WindowAggregate(a) if a.window.is_some_and(|w| matches!(w.kind, WindowKind::Session { .. })))
        })
    })
}

/// Whether an aggregate can take retractions: every function can subtract a value, and no
/// state TTL applies. `Err((construct, hint))` otherwise.
fn check_retractable(spec: &AggregateSpec) -> std::result::Result<(), (String, String)> {
    if spec.state_ttl.is_some() {
        return Err((
            "'table.exec.state.ttl' with an aggregate that retracts (HAVING, or a GROUP BY over a GROUP BY)".into(),
            "such an aggregate keeps its groups until their rows are all retracted; remove the TTL setting, or run with --mode batch".into(),
        ));
    }
    for call in &spec.calls {
        if matches!(
            call.function,
            AggregateFunction::ApproxCountDistinct | AggregateFunction::ReservoirSample(_)
        ) {
            return Err((
                format!("{:?} in an aggregate that retracts (HAVING, or a GROUP BY over a GROUP BY)", call.function),
                "a sketch or a sample cannot take a value back: use COUNT(DISTINCT ...), or run with --mode batch".into(),
            ));
        }
    }
    Ok(())
}

impl<'a> Lowering<'a> {
    fn unsupported(&self, construct: &str, hint: &str) -> Error {
        Error::Unsupported {
            construct: construct.to_string(),
            mode: self.mode.to_string(),
            hint: hint.to_string(),
        }
    }

    fn physical(&self, expr: &Expr, input: &LogicalPlan) -> Result<Arc<dyn PhysicalExpr>> {
        if let Some(sub) = find_subquery(expr) {
            return Err(self.unsupported(
                &format!("subquery `{sub}`"),
                "rewrite it as a join, or run with --mode batch",
            ));
        }
        // Some DataFusion functions (coalesce, nvl2, arrow_cast, ...) only exist until the
        // simplifier rewrites them, so simplify first, as DataFusion's own planner does.
        let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(input.schema().clone())
            .with_config_options(self.state.config_options().clone())
            .with_query_execution_start_time(
                self.state.execution_props().query_execution_start_time,
            )
            .build();
        let simplified = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
            .simplify(expr.clone())
            .map_err(|e| Error::Plan(format!("expression `{expr}`: {e}")))?;
        self.state
            .create_physical_expr(simplified, input.schema())
            .map_err(|e| Error::Plan(format!("expression `{expr}`: {e}")))
    }

    fn lower(&self, plan: &LogicalPlan) -> Result<Chain> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table();
                let mut chain = if let Some(call) = self.def.tvfs.iter().find(|c| c.name == name) {
                    self.lower_tvf(call)?
                } else if let Some(table) = self.def.table(name) {
                    Chain::of_table(table.name.clone())
                } else {
                    let provider = source_as_provider(&scan.source)?;
                    match provider.downcast_ref::<ViewTable>() {
                        Some(view) => self.lower(view.logical_plan())?,
                        None => {
                            return Err(Error::Internal(format!(
                                "relation `{name}` has no definition"
                            )))
                        }
                    }
                };
                if scan.fetch.is_some() {
                    return Err(self.unsupported("LIMIT", "run with --mode batch"));
                }
                if let Some(projection) = &scan.projection {
                    let source_schema = scan.source.schema();
                    let exprs = projection
                        .iter()
                        .map(|&i| {
                            Arc::new(datafusion::physical_expr::expressions::Column::new(
                                source_schema.field(i).name(),
                                i,
                            )) as Arc<dyn PhysicalExpr>
                        })
                        .collect();
                    chain.nodes.push(Node::Project {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
                for filter in &scan.filters {
                    let predicate = self
                        .state
                        .create_physical_expr(filter.clone(), &scan.projected_schema)?;
                    chain.nodes.push(Node::Filter { predicate });
                }
                Ok(chain)
            }
            LogicalPlan::SubqueryAlias(a) => {
                let name = a.alias.table();
                if let Some(t) = self.def.temporal.iter().find(|t| t.name == name) {
                    if self.as_of_input.get() != Some(t.name.as_str()) {
                        return Err(Error::Plan(format!(
                            "line {}: {} FOR SYSTEM_TIME AS OF {}: the clause belongs to the right input of a JOIN (the table each row of the other input is joined with), e.g. `FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.order_time AS r ON o.currency = r.currency`",
                            t.line, t.table, t.column
                        )));
                    }
                }
                self.lower(&a.input)
            }
            LogicalPlan::Projection(p) => {
                let mut chain = self.lower(&p.input)?;
                if chain.output == OutputMode::Update {
                    match self.project_key(&chain, p) {
                        Ok(key) => chain.key = key,
                        Err(e) => {
                            chain.key = vec![];
                            chain.key_lost.get_or_insert(e);
                        }
                    }
                }
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, &p.input))
                    .collect::<Result<Vec<_>>>()?;
                chain.nodes.push(Node::Project {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                Ok(chain)
            }
            LogicalPlan::Filter(f) => {
                // `FROM a, b WHERE ...`, or a WHERE over an inner join: for an inner join the
                // WHERE is part of the join condition (so time bounds in it bound the join).
                if let LogicalPlan::Join(j) = f.input.as_ref() {
                    if j.join_type == datafusion::logical_expr::JoinType::Inner {
                        return self.lower_join(j, Some(&f.predicate));
                    }
                }
                let limit = rank_limit(&f.predicate, &f.input);
                self.rank_limit.set(limit);
                let mut chain = self.lower(&f.input)?;
                self.rank_limit.set(None);
                let below = chain
                    .nodes
                    .iter()
                    .rev()
                    .find(|n| !matches!(n, Node::Project { .. }));
                if limit.is_some() && matches!(below, Some(Node::Deduplicate(_))) {
                    // Every row a deduplication emits is number 1.
                    return Ok(chain);
                }
                if let (Some(limit), Some(Node::TopN(_))) = (limit, below) {
                    // The Top-N keeps exactly the ranks the filters ask for: the narrowest.
                    if let Some(Node::TopN(top)) = chain
                        .nodes
                        .iter_mut()
                        .rev()
                        .find(|n| !matches!(n, Node::Project { .. }))
                    {
                        top.limit = top.limit.min(limit);
                    }
                    return Ok(chain);
                }
                if chain.output == OutputMode::Update {
                    // HAVING: a group that stops matching must be taken back.
                    self.retracting(
                        &mut chain,
                        &format!(
                            "a filter after a GROUP BY in update mode (`{}`)",
                            f.predicate
                        ),
                    )?;
                }
                if let Some(limit) = limit {
                    if let Some(Node::WindowRank(rank)) = chain
                        .nodes
                        .iter_mut()
                        .rev()
                        .find(|n| !matches!(n, Node::Project { .. }))
                    {
                        rank.limit = Some(rank.limit.map_or(limit, |l| l.min(limit)));
                    }
                }
                let predicate = self.physical(&f.predicate, &f.input)?;
                chain.nodes.push(Node::Filter { predicate });
                Ok(chain)
            }
            LogicalPlan::Aggregate(a) => {
                let mut chain = self.lower(&a.input)?;
                let over_updates = chain.output == OutputMode::Update;
                // A group column that is a window bound of the window relation below, passed
                // through unchanged (possibly renamed, and through an aggregate below).
                let traced_bound = |bound: &str| {
                    a.group_expr.iter().position(|e| {
                        matches!(e, Expr::Column(c) if trace_column(&a.input, &c.name).is_some_and(|(table, column)| {
                            column == bound && self.def.tvfs.iter().any(|t| t.name == table)
                        }))
                    })
                };
                // Over an append-mode window aggregate, grouping by its window bounds is a
                // window aggregate of the same windows (Nexmark q5's maximum per window): each
                // window's rows arrive before the watermark that closes it.
                let rewindowed = match (chain.aggregated, chain.window, over_updates) {
                    (true, Some(kind), false) if !matches!(kind, WindowKind::Session { .. }) => {
                        traced_bound("window_start")
                            .zip(traced_bound("window_end"))
                            .map(|(start, end)| WindowColumns { kind, start, end })
                    }
                    _ => None,
                };
                if chain.aggregated && rewindowed.is_none() {
                    if chain.window.is_some() && a.group_expr.iter().any(|e| {
                        matches!(e, Expr::Column(c) if c.name.eq_ignore_ascii_case("window_start") || c.name.eq_ignore_ascii_case("window_end"))
                    }) {
                        return Err(self.unsupported(
                            "a window aggregate over an aggregate, not grouped by both of its window bounds",
                            "group by the first aggregate's window_start and window_end (a window aggregate of the same windows), aggregate its results without a window (a GROUP BY over a GROUP BY), or run with --mode batch",
                        ));
                    }
                    chain.window = None;
                }
                if over_updates {
                    // This aggregate must subtract the old results it aggregated.
                    self.retracting(&mut chain, "an aggregate over update-mode results")?;
                }
                let column_pos = |name: &str| {
                    a.group_expr.iter().position(
                        |e| matches!(e, Expr::Column(c) if c.name.eq_ignore_ascii_case(name)),
                    )
                };
                let window = match (
                    chain.window,
                    column_pos("window_start"),
                    column_pos("window_end"),
                ) {
                    _ if rewindowed.is_some() => rewindowed,
                    (Some(kind), Some(start), Some(end)) => Some(WindowColumns { kind, start, end }),
                    (Some(WindowKind::Session { .. }), None, None) => {
                        return Err(self.unsupported(
                            "GROUP BY over a SESSION window without window_start, window_end",
                            "group by window_start, window_end (and the PARTITION BY columns)",
                        ))
                    }
                    (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
                        return Err(self.unsupported(
                            "GROUP BY one bound of a window",
                            "group by both window_start and window_end (a window aggregate), or by neither (an aggregate over the whole input)",
                        ))
                    }
                    _ => None,
                };
                // Firing and lateness are derived from the window the TVF assigned: the grouped
                // window columns must be those columns, not values computed from them.
                for pos in window
                    .iter()
                    .filter(|_| rewindowed.is_none())
                    .flat_map(|w| [w.start, w.end])
                {
                    let Expr::Column(c) = &a.group_expr[pos] else {
                        continue;
                    };
                    let from_tvf =
                        trace_column(&a.input, &c.name).is_some_and(|(table, column)| {
                            self.def.tvfs.iter().any(|t| t.name == table) && column == c.name
                        });
                    if !from_tvf {
                        return Err(self.unsupported(
                            &format!("GROUP BY a computed `{}`", c.name),
                            "group by the window_start and window_end of the window table function as they are",
                        ));
                    }
                }
                let session_keys = match window.map(|w| w.kind) {
                    Some(WindowKind::Session { .. }) => chain
                        .session_partition
                        .iter()
                        .map(|p| {
                            column_pos(p).ok_or_else(|| {
                                self.unsupported(
                                    &format!("a SESSION window partitioned by `{p}` without `{p}` in the GROUP BY"),
                                    "group by window_start, window_end and every PARTITION BY column",
                                )
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                    _ => vec![],
                };
                if self.mode == Mode::Stream
                    && self.output == Some(OutputMode::Update)
                    && matches!(window.map(|w| w.kind), Some(WindowKind::Session { .. }))
                {
                    return Err(self.unsupported(
                        "a SESSION window in update mode",
                        "a session's bounds change as it grows, which needs retractions: use append mode (each session once, when it closes)",
                    ));
                }
                let output = match (self.mode, window, self.output) {
                    // A bounded run emits each result once, when final.
                    (Mode::Batch, _, _) => OutputMode::Append,
                    (Mode::Stream, None, Some(OutputMode::Append)) => {
                        return Err(self.unsupported(
                            "GROUP BY without a window in append mode",
                            "append mode emits a result once it is final, and an aggregate over an unbounded stream never is: use the update output mode, or group by window_start, window_end of a TUMBLE or HOP window",
                        ))
                    }
                    (Mode::Stream, None, _) => OutputMode::Update,
                    (Mode::Stream, Some(_), requested) => requested.unwrap_or_default(),
                };
                if a.group_expr
                    .iter()
                    .any(|e| matches!(e, Expr::GroupingSet(_)))
                {
                    return Err(
                        self.unsupported("GROUPING SETS / ROLLUP / CUBE", "run with --mode batch")
                    );
                }
                let group_exprs = a
                    .group_expr
                    .iter()
                    .map(|e| self.physical(e, &a.input))
                    .collect::<Result<Vec<_>>>()?;
                let calls = a
                    .aggr_expr
                    .iter()
                    .map(|e| self.aggregate_call(e, &a.input))
                    .collect::<Result<Vec<_>>>()?;
                // The upsert key: every group column; the window bounds are one part.
                chain.key = match output {
                    OutputMode::Append => vec![],
                    OutputMode::Update => (0..group_exprs.len())
                        .filter(|&i| window.is_none_or(|w| i != w.end))
                        .map(|i| match window {
                            // CUMULATE windows share their start: only the end identifies one.
                            Some(w) if i == w.start => match w.kind {
                                WindowKind::Cumulate { .. } => vec![w.end],
                                _ => vec![w.start, w.end],
                            },
                            _ => vec![i],
                        })
                        .collect(),
                };
                let spec = AggregateSpec {
                    group_exprs,
                    window,
                    output,
                    // Only update mode can correct a window after it was emitted.
                    allowed_lateness: match output {
                        OutputMode::Update if window.is_some() => self.allowed_lateness,
                        _ => 0,
                    },
                    // Windows free their state when they close; TTL is for the unbounded kind.
                    state_ttl: match output {
                        OutputMode::Update if window.is_none() => self.state_ttl,
                        _ => None,
                    },
                    session_keys,
                    calls,
                    input_schema: Arc::new(a.input.schema().as_arrow().clone()),
                    schema: Arc::new(a.schema.as_arrow().clone()),
                };
                if over_updates {
                    check_retractable(&spec)
                        .map_err(|(construct, hint)| self.unsupported(&construct, &hint))?;
                    chain.nodes.push(Node::RetractAggregate(spec));
                } else {
                    chain.nodes.push(Node::WindowAggregate(spec));
                }
                chain.aggregated = true;
                chain.key_lost = None;
                chain.output = output;
                Ok(chain)
            }
            LogicalPlan::Window(w) => self.lower_rank(w),
            LogicalPlan::Join(j) => self.lower_join(j, None),
            other => {
                let (construct, hint) = match other {
                    LogicalPlan::Join(_) => {
                        ("JOIN", "stream joins are planned; run with --mode batch")
                    }
                    LogicalPlan::Sort(_) => (
                        "ORDER BY",
                        "a stream has no end to sort by; run with --mode batch",
                    ),
                    LogicalPlan::Limit(_) => ("LIMIT", "run with --mode batch"),
                    LogicalPlan::Distinct(_) => (
                        "SELECT DISTINCT",
                        "group by window_start, window_end and the columns instead",
                    ),
                    LogicalPlan::Union(_) => ("UNION", "write one INSERT per input"),
                    LogicalPlan::Window(_) => ("OVER windows", "run with --mode batch"),
                    LogicalPlan::Values(_) => ("VALUES", "run with --mode batch"),
                    LogicalPlan::EmptyRelation(_) => {
                        ("a query without FROM", "run with --mode batch")
                    }
                    LogicalPlan::Subquery(_) => ("subqueries", "run with --mode batch"),
                    LogicalPlan::Unnest(_) => ("UNNEST", "run with --mode batch"),
                    LogicalPlan::RecursiveQuery(_) => ("recursive CTEs", "run with --mode batch"),
                    _ => ("this query shape", "run with --mode batch"),
                };
                Err(self.unsupported(construct, hint))
            }
        }
    }

    /// Makes the update-mode aggregate the chain ends with (after projections and filters)
    /// send retractions, for `construct` after it: a plain GROUP BY becomes a
    /// [`Node::RetractAggregate`]; anything else that updates is refused.
    fn retracting(&self, chain: &mut Chain, construct: &str) -> Result<()> {
        let last = chain
            .nodes
            .iter_mut()
            .rev()
            .find(|n| !matches!(n, Node::Project { .. } | Node::Filter { .. }));
        match last {
            Some(Node::RetractAggregate(_)) => Ok(()),
            Some(node @ Node::WindowAggregate(_)) => {
                let Node::WindowAggregate(spec) = node else {
                    unreachable!("matched above")
                };
                if spec.window.is_some() {
                    return Err(self.unsupported(
                        &format!("{construct}, over a window aggregate in update mode"),
                        "use append mode for the window aggregate (each window once, final), or run with --mode batch",
                    ));
                }
                check_retractable(spec)
                    .map_err(|(construct, hint)| self.unsupported(&construct, &hint))?;
                *node = Node::RetractAggregate(spec.clone());
                Ok(())
            }
            _ => Err(self.unsupported(
                construct,
                "only a GROUP BY without window can take back a result it sent: filter where the results are read, or run with --mode batch",
            )),
        }
    }

    /// The upsert key after projection `p`: where each key part of the input went (a part is
    /// kept if any of its columns is selected).
    fn project_key(
        &self,
        chain: &Chain,
        p: &datafusion::logical_expr::Projection,
    ) -> Result<Vec<Vec<usize>>> {
        let input = p.input.schema();
        let find = |k: usize| {
            p.expr.iter().position(|e| {
                let mut e = e;
                while let Expr::Alias(a) = e {
                    e = &a.expr;
                }
                matches!(e, Expr::Column(c) if input.index_of_column(c).ok() == Some(k))
            })
        };
        chain
            .key
            .iter()
            .map(|part| {
                let found: Vec<usize> = part.iter().filter_map(|&k| find(k)).collect();
                if found.is_empty() {
                    Err(self.unsupported(
                        &format!(
                            "update mode without the key column `{}` in the SELECT",
                            input.field(part[0]).name()
                        ),
                        "update mode writes each result with its key, so that a downstream upsert replaces the earlier result for that key: select every key column (the GROUP BY columns, of window_start and window_end one, window_end for CUMULATE; a deduplication's PARTITION BY columns; a Top-N's PARTITION BY columns and its row number)",
                    ))
                } else {
                    Ok(found)
                }
            })
            .collect()
    }

    /// `ROW_NUMBER() | RANK() | DENSE_RANK() OVER (PARTITION BY <window bound>, ... ORDER BY
    /// ...)`: a window Top-N (see [`Node::WindowRank`]).
    fn lower_rank(&self, w: &datafusion::logical_expr::Window) -> Result<Chain> {
        use datafusion::logical_expr::expr::WindowFunction;
        // The limit of the filter above is for this ranking, not for any below its input.
        let limit = self.rank_limit.take();
        let mut chain = self.lower(&w.input)?;
        let over = "run with --mode batch (stream mode ranks rows per window: ROW_NUMBER, RANK or DENSE_RANK OVER (PARTITION BY window_start, window_end, ... ORDER BY ...))";
        if chain.output == OutputMode::Update {
            return Err(self.unsupported(
                "a ranking over update-mode results",
                "rank the results of a window aggregate in append mode",
            ));
        }
        let is_aggregate = |e: &Expr| {
            window_function(e).is_some_and(|f| {
                matches!(
                    f.fun,
                    datafusion::logical_expr::WindowFunctionDefinition::AggregateUDF(_)
                )
            })
        };
        if w.window_expr.iter().any(is_aggregate) {
            return self.lower_over(w, chain);
        }
        let [expr] = w.window_expr.as_slice() else {
            return Err(self.unsupported("several OVER functions in one SELECT", over));
        };
        let Some(WindowFunction { fun, params }) = window_function(expr) else {
            return Err(self.unsupported(&format!("`{expr}`"), over));
        };
        let rank = match fun.name().to_ascii_lowercase().as_str() {
            "row_number" => RankFunction::RowNumber,
            "rank" => RankFunction::Rank,
            "dense_rank" => RankFunction::DenseRank,
            other => return Err(self.unsupported(&format!("the OVER function `{other}`"), over)),
        };
        if !params.args.is_empty() || params.filter.is_some() {
            return Err(self.unsupported(&format!("`{expr}`"), over));
        }
        // The window the ranking is per: a window bound of a TVF among the PARTITION BY.
        let bound = params.partition_by.iter().find_map(|p| {
            let Expr::Column(c) = p else { return None };
            let (table, column) = trace_column(&w.input, &c.name)?;
            let call = self.def.tvfs.iter().find(|t| t.name == table)?;
            match (column.as_str(), call.kind) {
                ("window_end", _) => Some((p, 0)),
                ("window_start", WindowKind::Tumble { size } | WindowKind::Hop { size, .. }) => {
                    Some((p, size))
                }
                _ => None,
            }
        });
        if let (None, RankFunction::RowNumber, Some(n)) = (bound, rank, limit) {
            let by_time = match params.order_by.as_slice() {
                [o] => matches!(
                    datafusion::logical_expr::ExprSchemable::get_type(&o.expr, w.input.schema())?,
                    arrow::datatypes::DataType::Timestamp(..)
                ),
                _ => false,
            };
            if n == 1 && by_time && !params.partition_by.is_empty() {
                return self.lower_dedup(w, params, chain);
            }
            return self.lower_top_n(w, params, n, chain);
        }
        let Some((bound, end_offset)) = bound else {
            return Err(self.unsupported(
                &format!("`{expr}` without a window in its PARTITION BY"),
                "partition by window_start, window_end of a window table function (a ranking over an unbounded stream never ends), or run with --mode batch",
            ));
        };
        let order = self.sort_exprs(&params.order_by, &w.input)?;
        let partition = params
            .partition_by
            .iter()
            .map(|p| self.physical(p, &w.input))
            .collect::<Result<Vec<_>>>()?;
        chain.nodes.push(Node::WindowRank(RankSpec {
            function: rank,
            partition,
            order,
            window_column: self.physical(bound, &w.input)?,
            end_offset,
            limit: None,
            schema: Arc::new(w.schema.as_arrow().clone()),
        }));
        Ok(chain)
    }

    /// `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY <event time> [DESC]) ... WHERE rn = 1`:
    /// deduplication (see [`Node::Deduplicate`]).
    fn lower_dedup(
        &self,
        w: &datafusion::logical_expr::Window,
        params: &datafusion::logical_expr::expr::WindowFunctionParams,
        mut chain: Chain,
    ) -> Result<Chain> {
        let hint = "deduplicate with ROW_NUMBER() OVER (PARTITION BY keys ORDER BY <event time> [ASC | DESC]) ... WHERE rn = 1";
        let [order] = params.order_by.as_slice() else {
            return Err(
                self.unsupported("a deduplication without exactly one ORDER BY column", hint)
            );
        };
        let time_type =
            datafusion::logical_expr::ExprSchemable::get_type(&order.expr, w.input.schema())?;
        if !matches!(time_type, arrow::datatypes::DataType::Timestamp(..)) {
            return Err(self.unsupported(
                &format!("a Top-1 over a whole stream ordered by `{}`", order.expr),
                &format!("{hint}; a ranking by other columns over an unbounded stream never ends: rank per window, or run with --mode batch"),
            ));
        }
        if params.partition_by.is_empty() {
            return Err(self.unsupported("a deduplication without PARTITION BY", hint));
        }
        if self.mode == Mode::Stream {
            self.check_event_time(&w.input, &order.expr, &chain, "a deduplication ordered by")?;
        }
        let keep_last = !order.asc;
        let mut key = vec![];
        for p in &params.partition_by {
            match p {
                Expr::Column(c) => key.push(vec![w.input.schema().index_of_column(c)?]),
                other => {
                    return Err(self.unsupported(
                        &format!("a deduplication partitioned by `{other}`"),
                        "partition by columns (compute keys in a view first)",
                    ))
                }
            }
        }
        if keep_last && self.mode == Mode::Stream {
            if self.output == Some(OutputMode::Append) {
                return Err(self.unsupported(
                    "keeping the last row per key in append mode",
                    "a key's last row is never final in a stream: use the update output mode (rows keyed by the PARTITION BY columns), or keep the first row (ORDER BY ts ASC)",
                ));
            }
            chain.output = OutputMode::Update;
            chain.key = key;
        }
        chain.nodes.push(Node::Deduplicate(DedupSpec {
            partition: params
                .partition_by
                .iter()
                .map(|p| self.physical(p, &w.input))
                .collect::<Result<_>>()?,
            time: self.physical(&order.expr, &w.input)?,
            keep_last,
            schema: Arc::new(w.schema.as_arrow().clone()),
            state_ttl: self.state_ttl,
        }));
        Ok(chain)
    }

    /// An `ORDER BY` as physical sort expressions over `input`.
    fn sort_exprs(
        &self,
        order_by: &[datafusion::logical_expr::SortExpr],
        input: &LogicalPlan,
    ) -> Result<Vec<datafusion::physical_expr::PhysicalSortExpr>> {
        order_by
            .iter()
            .map(|s| {
                Ok(datafusion::physical_expr::PhysicalSortExpr {
                    expr: self.physical(&s.expr, input)?,
                    options: arrow::compute::SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                })
            })
            .collect()
    }

    /// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) ... WHERE rn <= n` without a window
    /// (see [`Node::TopN`]): update mode in a stream, keyed by the partition and the row number.
    fn lower_top_n(
        &self,
        w: &datafusion::logical_expr::Window,
        params: &datafusion::logical_expr::expr::WindowFunctionParams,
        limit: u64,
        mut chain: Chain,
    ) -> Result<Chain> {
        if params.order_by.is_empty() {
            return Err(self.unsupported(
                "a Top-N without ORDER BY",
                "say which rows are the top ones: ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...)",
            ));
        }
        let mut key = vec![];
        for p in &params.partition_by {
            match p {
                Expr::Column(c) => key.push(vec![w.input.schema().index_of_column(c)?]),
                other => {
                    return Err(self.unsupported(
                        &format!("a Top-N partitioned by `{other}`"),
                        "partition by columns (compute keys in a view first)",
                    ))
                }
            }
        }
        // A Top-1 per partition is keyed by the partition alone (its row number is always 1,
        // so a query need not select it: Nexmark q9).
        if limit > 1 || key.is_empty() {
            key.push(vec![w.schema.fields().len() - 1]);
        }
        let output = if self.mode == Mode::Stream {
            if self.output == Some(OutputMode::Append) {
                return Err(self.unsupported(
                    "a Top-N over a whole stream in append mode",
                    "its ranks change as rows arrive: use the update output mode (rows keyed by the PARTITION BY columns and the row number), or rank per window",
                ));
            }
            chain.output = OutputMode::Update;
            chain.key = key;
            OutputMode::Update
        } else {
            OutputMode::Append
        };
        let order = self.sort_exprs(&params.order_by, &w.input)?;
        chain.nodes.push(Node::TopN(TopNSpec {
            partition: params
                .partition_by
                .iter()
                .map(|p| self.physical(p, &w.input))
                .collect::<Result<_>>()?,
            order,
            limit,
            output,
            schema: Arc::new(w.schema.as_arrow().clone()),
            // Update mode only: a batch run's watermark moves only at the end, so nothing would
            // expire (and its append-mode result is exact).
            state_ttl: self.state_ttl.filter(|_| output == OutputMode::Update),
        }));
        Ok(chain)
    }

    /// `agg(x) OVER (PARTITION BY ... ORDER BY <event time> RANGE | ROWS BETWEEN ... PRECEDING
    /// AND CURRENT ROW)`, one or more over the same window (see [`Node::OverAggregate`]).
    fn lower_over(&self, w: &datafusion::logical_expr::Window, mut chain: Chain) -> Result<Chain> {
        use datafusion::logical_expr::expr::WindowFunction;
        use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
        let hint = "OVER aggregates are COUNT, SUM, MIN, MAX or AVG OVER (PARTITION BY ... ORDER BY <event time> RANGE | ROWS BETWEEN ... PRECEDING AND CURRENT ROW), all with the same OVER clause; otherwise run with --mode batch";
        let mut calls = vec![];
        let mut first: Option<&datafusion::logical_expr::expr::WindowFunctionParams> = None;
        for expr in &w.window_expr {
            let Some(WindowFunction { fun, params }) = window_function(expr) else {
                return Err(self.unsupported(&format!("`{expr}`"), hint));
            };
            let call = match fun.name().to_ascii_lowercase().as_str() {
                "count" => AggregateFunction::Count,
                "sum" => AggregateFunction::Sum,
                "min" => AggregateFunction::Min,
                "max" => AggregateFunction::Max,
                "avg" | "mean" => AggregateFunction::Avg,
                other => {
                    return Err(self.unsupported(&format!("the OVER function `{other}`"), hint))
                }
            };
            if params.distinct || params.filter.is_some() || params.args.len() > 1 {
                return Err(self.unsupported(&format!("`{expr}`"), hint));
            }
            if let Some(f) = first {
                if f.partition_by != params.partition_by
                    || f.order_by != params.order_by
                    || f.window_frame != params.window_frame
                {
                    return Err(self.unsupported(
                        &format!("OVER aggregates with different OVER clauses (`{expr}`)"),
                        hint,
                    ));
                }
            }
            first = Some(params);
            let arg = match params.args.first() {
                Some(a) => self.physical(a, &w.input)?,
                None => self.physical(&datafusion::logical_expr::lit(1i64), &w.input)?,
            };
            calls.push((call, arg));
        }
        let Some(params) = first else {
            return Err(Error::Internal("a window node without functions".into()));
        };
        if chain.aggregated {
            return Err(self.unsupported("an OVER aggregate over an aggregate", hint));
        }
        // ORDER BY: the event time, ascending.
        let [order] = params.order_by.as_slice() else {
            return Err(self.unsupported(
                "an OVER aggregate without exactly one ORDER BY column",
                "order by the table's event-time column (ORDER BY ts)",
            ));
        };
        let time_type =
            datafusion::logical_expr::ExprSchemable::get_type(&order.expr, w.input.schema())?;
        if !order.asc || !matches!(time_type, arrow::datatypes::DataType::Timestamp(..)) {
            return Err(self.unsupported(
                &format!("an OVER aggregate ordered by `{order}`"),
                "order by the event-time column, ascending: rows are aggregated in time order",
            ));
        }
        if self.mode == Mode::Stream {
            self.check_event_time(
                &w.input,
                &order.expr,
                &chain,
                "an OVER aggregate ordered by",
            )?;
        }
        let frame = &params.window_frame;
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(self.unsupported(
                &format!("an OVER frame ending at {}", frame.end_bound),
                "frames end at CURRENT ROW in a stream (a frame with FOLLOWING rows would wait for the future); run with --mode batch",
            ));
        }
        let frame = match (&frame.units, &frame.start_bound) {
            (WindowFrameUnits::Range, b) if b.is_unbounded() => OverFrame::Range {
                preceding: i64::MAX,
            },
            (WindowFrameUnits::Rows, b) if b.is_unbounded() => OverFrame::Rows {
                preceding: u64::MAX,
            },
            (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => {
                OverFrame::Range { preceding: 0 }
            }
            (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => {
                OverFrame::Rows { preceding: 0 }
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => OverFrame::Range {
                preceding: interval_millis(v).ok_or_else(|| {
                    Error::Plan(format!(
                        "OVER ... RANGE BETWEEN {v} PRECEDING: expected an interval of days, hours, minutes, seconds or milliseconds"
                    ))
                })?,
            },
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => OverFrame::Rows {
                preceding: match v.cast_to(&arrow::datatypes::DataType::UInt64) {
                    Ok(datafusion::common::ScalarValue::UInt64(Some(n))) => n,
                    _ => {
                        return Err(Error::Plan(format!(
                            "OVER ... ROWS BETWEEN {v} PRECEDING: expected a row count"
                        )))
                    }
                },
            },
            (units, bound) => {
                return Err(self.unsupported(
                    &format!("an OVER frame of {units} from {bound}"),
                    "use RANGE or ROWS BETWEEN ... PRECEDING AND CURRENT ROW",
                ))
            }
        };
        let partition = params
            .partition_by
            .iter()
            .map(|p| self.physical(p, &w.input))
            .collect::<Result<Vec<_>>>()?;
        chain.nodes.push(Node::OverAggregate(OverSpec {
            partition,
            time: self.physical(&order.expr, &w.input)?,
            frame,
            calls,
            schema: Arc::new(w.schema.as_arrow().clone()),
            state_ttl: self.state_ttl,
        }));
        Ok(chain)
    }

    /// A two-input join (see [`Node::Join`]): `on` pairs and equalities between the inputs are
    /// the keys; comparisons between the inputs' event times bound an interval join; equal
    /// window bounds of two window relations make a window join; anything else filters the
    /// joined rows (inner joins only).
    fn lower_join(
        &self,
        j: &datafusion::logical_expr::Join,
        condition: Option<&Expr>,
    ) -> Result<Chain> {
        use datafusion::logical_expr::JoinType;
        if let Some(t) = temporal_ref(self.def, &j.right) {
            return self.lower_temporal_join(j, condition, t);
        }
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            other => {
                return Err(self.unsupported(
                    &format!("a {other} JOIN"),
                    "stream joins are INNER or LEFT (write a RIGHT JOIN as a LEFT JOIN with the inputs swapped); run with --mode batch",
                ))
            }
        };
        let left = self.lower(&j.left)?;
        let right = self.lower(&j.right)?;
        self.check_join_inputs(&left, &right)?;
        let on_left = |e: &Expr| on_input(e, &j.left);
        let on_right = |e: &Expr| on_input(e, &j.right);
        let (pairs, mut rest) = split_join_condition(j, condition);
        // A window join: window_start and window_end of both window relations are equal.
        let window_column = |e: &Expr, plan: &LogicalPlan, name: &str| match e {
            Expr::Column(c) => trace_column(plan, &c.name).is_some_and(|(table, column)| {
                column == name && self.def.tvfs.iter().any(|t| t.name == table)
            }),
            _ => false,
        };
        let window_pair = |name: &str| {
            pairs
                .iter()
                .find(|(l, r)| window_column(l, &j.left, name) && window_column(r, &j.right, name))
                .cloned()
        };
        let mut time = None;
        if let (Some(_), Some((l, r))) = (window_pair("window_start"), window_pair("window_end")) {
            time = Some(JoinTime {
                left: self.physical(&l, &j.left)?,
                right: self.physical(&r, &j.right)?,
                lower: 0,
                upper: 0,
                window_end: true,
            });
        } else {
            // An interval join: bounds on `left time - right time` from comparisons.
            let mut bounds: (Option<i64>, Option<i64>) = (None, None);
            let mut columns: Option<(Expr, Expr)> = None;
            let mut residual = vec![];
            let mut used = vec![];
            for e in rest {
                match time_bound(&e, &on_left, &on_right) {
                    Some((l, r, lower, upper))
                        if columns.as_ref().is_none_or(|(cl, cr)| cl == &l && cr == &r) =>
                    {
                        used.push(e.clone());
                        columns = Some((l, r));
                        if let Some(v) = lower {
                            bounds.0 = Some(bounds.0.map_or(v, |b: i64| b.max(v)));
                        }
                        if let Some(v) = upper {
                            bounds.1 = Some(bounds.1.map_or(v, |b: i64| b.min(v)));
                        }
                    }
                    _ => residual.push(e),
                }
            }
            rest = residual;
            match (columns, bounds) {
                (Some((l, r)), (Some(_), Some(_)))
                    if self.mode == Mode::Stream
                        && kind == JoinKind::Inner
                        && [(&j.left, &l, &left), (&j.right, &r, &right)]
                            .into_iter()
                            .any(|(plan, e, chain)| {
                                self.check_event_time(plan, e, chain, "").is_err()
                            }) =>
                {
                    // Bounds on columns that are not the inputs' event times (q7: a window's
                    // end from an aggregate) cannot expire state: a regular inner join whose
                    // rows they filter, as Flink plans it.
                    rest.extend(used);
                }
                (Some((l, r)), (Some(lower), Some(upper))) => {
                    if self.mode == Mode::Stream {
                        for (plan, e, chain) in [(&j.left, &l, &left), (&j.right, &r, &right)] {
                            self.check_event_time(plan, e, chain, "an interval join on")?;
                        }
                    }
                    if lower > upper {
                        return Err(Error::Plan(format!(
                            "the join condition bounds `{l} - {r}` to [{lower} ms, {upper} ms]: no row can match"
                        )));
                    }
                    time = Some(JoinTime {
                        left: self.physical(&l, &j.left)?,
                        right: self.physical(&r, &j.right)?,
                        lower,
                        upper,
                        window_end: false,
                    });
                }
                (Some((l, r)), _) if self.mode == Mode::Stream && kind == JoinKind::Left => {
                    return Err(self.unsupported(
                        &format!("a LEFT JOIN bounding `{l} - {r}` on one side only"),
                        "an interval join needs both bounds, for example `a.ts BETWEEN b.ts - INTERVAL '1' HOUR AND b.ts`, so that its state can expire",
                    ))
                }
                (Some(_), _) => {
                    // A one-sided comparison (Nexmark q4's `B.dateTime BETWEEN A.dateTime AND
                    // A.expires`) cannot expire state: a regular inner join, whose rows it
                    // filters (as Flink plans it).
                    rest.extend(used);
                }
                _ => {}
            }
        }
        if pairs.is_empty() {
            return Err(self.unsupported(
                "a JOIN without an equality between its inputs",
                "join on equal keys (a.id = b.id), or run with --mode batch",
            ));
        }
        if time.is_none() && kind == JoinKind::Left && self.mode == Mode::Stream {
            let bounded = self
                .def
                .table(&right.source)
                .is_some_and(|t| t.is_bounded());
            if !bounded {
                return Err(self.unsupported(
                    "a regular LEFT JOIN with an unbounded right input",
                    "a left row without a match could get one later, which needs a retraction: bound the join in time (an interval or window join), or join a bounded table (files, or a log with 'scan.bounded.mode' = 'latest-offset'): its rows are all known once read",
                ));
            }
        }
        if kind == JoinKind::Left && !rest.is_empty() {
            return Err(self.unsupported(
                &format!("a LEFT JOIN condition `{}`", rest[0]),
                "a LEFT JOIN's ON may hold equalities and event-time bounds between the inputs; filter the inputs before the join, or run with --mode batch",
            ));
        }
        let spec = self.join_spec(j, kind, pairs, time, None, &right.source)?;
        let window_join = spec.time.as_ref().is_some_and(|t| t.window_end);
        let mut chain = self.attach_join(j, left, right, spec, rest)?;
        if !window_join {
            chain.window = None;
        }
        chain.aggregated = false;
        Ok(chain)
    }

    /// Refuses join inputs the dataflow cannot join: SESSION window relations not merged into
    /// sessions yet, inputs that already join two, and update-mode aggregates.
    fn check_join_inputs(&self, left: &Chain, right: &Chain) -> Result<()> {
        for (side, chain) in [("left", left), ("right", right)] {
            if open_session(&chain.nodes) {
                return Err(self.unsupported(
                    &format!("a JOIN whose {side} input is a SESSION window relation"),
                    "a session's bounds are known only once it closes: aggregate the sessions first (GROUP BY window_start, window_end and the PARTITION BY columns), then join the results",
                ));
            }
            if chain.right.is_some() {
                return Err(self.unsupported(
                    "a join of more than two inputs",
                    "join two inputs per INSERT (write the first join into a sink and read it back), or run with --mode batch",
                ));
            }
            if chain.output == OutputMode::Update {
                return Err(self.unsupported(
                    &format!("a JOIN whose {side} input is an update-mode aggregate"),
                    "join append-only inputs (a window aggregate in append mode), or run with --mode batch",
                ));
            }
        }
        Ok(())
    }

    /// `left` followed by the join `spec` whose second input is `right`, then the conjuncts
    /// `rest` of the join condition as a filter.
    fn attach_join(
        &self,
        j: &datafusion::logical_expr::Join,
        left: Chain,
        right: Chain,
        spec: JoinSpec,
        rest: Vec<Expr>,
    ) -> Result<Chain> {
        let mut chain = left;
        chain.nodes.push(Node::Join(spec));
        chain.right = Some(JoinInput {
            source: right.source,
            nodes: right.nodes,
        });
        let join_plan = LogicalPlan::Join(j.clone());
        if let Some(predicate) = datafusion::logical_expr::utils::conjunction(rest) {
            chain.nodes.push(Node::Filter {
                predicate: self.physical(&predicate, &join_plan)?,
            });
        }
        Ok(chain)
    }

    /// The join node of `j` on the equalities `pairs` (left, right); a regular join (no `time`,
    /// no `as_of`) gets the state TTL.
    fn join_spec(
        &self,
        j: &datafusion::logical_expr::Join,
        kind: JoinKind,
        pairs: Vec<(Expr, Expr)>,
        time: Option<JoinTime>,
        as_of: Option<AsOf>,
        right_table: &str,
    ) -> Result<JoinSpec> {
        let (left_keys, right_keys): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Ok(JoinSpec {
            kind,
            left_keys: left_keys
                .iter()
                .map(|e| self.physical(e, &j.left))
                .collect::<Result<_>>()?,
            right_keys: right_keys
                .iter()
                .map(|e| self.physical(e, &j.right))
                .collect::<Result<_>>()?,
            state_ttl: if time.is_none() && as_of.is_none() {
                self.state_ttl
            } else {
                None
            },
            time,
            as_of,
            right_table: right_table.to_string(),
            left_schema: Arc::new(j.left.schema().as_arrow().clone()),
            right_schema: Arc::new(j.right.schema().as_arrow().clone()),
            schema: Arc::new(j.schema.as_arrow().clone()),
        })
    }

    /// `JOIN t FOR SYSTEM_TIME AS OF x`: a lookup join when `x` is a processing-time attribute,
    /// an event-time temporal join when it is the left input's event time (in every mode: the
    /// batch answer is the same versions).
    fn lower_temporal_join(
        &self,
        j: &datafusion::logical_expr::Join,
        condition: Option<&Expr>,
        t: &'a TemporalRef,
    ) -> Result<Chain> {
        use datafusion::logical_expr::JoinType;
        let construct = format!("JOIN {} FOR SYSTEM_TIME AS OF {}", t.table, t.column);
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            other => {
                return Err(Error::Plan(format!(
                    "line {}: a {other} {construct}: temporal joins are INNER or LEFT",
                    t.line
                )))
            }
        };
        let plan_error = |m: String| Error::Plan(format!("line {}: {construct}: {m}", t.line));
        // A view that keeps the last row per key by event time is that table versioned by the
        // key (Flink's versioned view): its rows are joined as the table's, without the ranking.
        let proctime = is_proctime(self.def, &j.left, &t.column);
        let view;
        let (table, primary_key, j, is_view) = match self.def.table(&t.table) {
            Some(table) => (table, table.primary_key.clone(), j, false),
            None if proctime => {
                return Err(plan_error(format!(
                    "a lookup join reads a files table as loaded; `{}` is a view (a versioned view joins only AS OF the input's event time)",
                    t.table
                )));
            }
            None => {
                let (table, key, right) = self.versioned_view(&j.right).map_err(|m| {
                    plan_error(format!(
                        "`{}` is a view; {m}. A view is a versioned table when it keeps the last row per key by event time: SELECT ... FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY key ORDER BY <event time> DESC) AS rn FROM <table with a WATERMARK>) WHERE rn = 1",
                        t.table
                    ))
                })?;
                view = datafusion::logical_expr::Join {
                    right: Arc::new(right),
                    ..j.clone()
                };
                (table, key, &view, true)
            }
        };
        let left = self.lower(&j.left)?;
        self.as_of_input.set(Some(t.name.as_str()));
        let right = self.lower(&j.right);
        self.as_of_input.set(None);
        let right = right?;
        self.check_join_inputs(&left, &right)?;
        let Some(time) = column_named(&j.left, &t.column) else {
            return Err(plan_error(format!(
                "the other input has no column `{}`",
                t.column
            )));
        };
        let (pairs, rest) = split_join_condition(j, condition);
        if pairs.is_empty() {
            return Err(plan_error(
                "a temporal join needs an equality between the input and the table's key in its ON (`o.currency = r.currency`)".into(),
            ));
        }
        let (as_of, pairs, rest) = if proctime {
            if table.connector() != Some("files") {
                return Err(self.unsupported(
                    &format!("a lookup join ({construct}) against `{}`, which is not a files table", table.name),
                    "a lookup join reads a bounded dimension table ('connector' = 'files'), loaded whole and reloaded when its files change; for a log table use an event-time temporal join (FOR SYSTEM_TIME AS OF the input's event time, against a table with a PRIMARY KEY and a WATERMARK)",
                ));
            }
            (AsOf::ProcessingTime, pairs, rest)
        } else if self.check_event_time(&j.left, &time, &left, "").is_ok() {
            let (Some(wm), false) = (&table.watermark, primary_key.is_empty()) else {
                return Err(plan_error(format!(
                    "`{}` is not a versioned table: declare its PRIMARY KEY (...) NOT ENFORCED and a WATERMARK, so that each row is a version of its key from its event time on",
                    table.name
                )));
            };
            let Some(right_time) = column_named(&j.right, &wm.column) else {
                return Err(plan_error(format!(
                    "the versioned table's event time `{}` is not among its columns here: select it, unrenamed{}",
                    wm.column,
                    if is_view { ", in the view" } else { "" }
                )));
            };
            self.check_event_time(&j.right, &right_time, &right, "the versioned table's time")?;
            // The versions are keyed by the primary key: every key column must be matched by
            // an equality; other equalities filter the version found.
            let mut keyed = vec![];
            let mut rest = rest;
            for (l, r) in pairs {
                let key_column = match &r {
                    Expr::Column(c) => trace_column(&j.right, &c.name)
                        .filter(|(tab, _)| tab == &table.name)
                        .map(|(_, col)| col)
                        .and_then(|col| primary_key.iter().position(|k| *k == col)),
                    _ => None,
                };
                match key_column {
                    Some(at) if !keyed.iter().any(|(k, _, _)| *k == at) => keyed.push((at, l, r)),
                    _ => rest.push(l.eq(r)),
                }
            }
            if keyed.len() != primary_key.len() {
                return Err(plan_error(format!(
                    "the ON must match every column of `{}`'s {} ({}) with an equality: the versions of a key are what the join looks up",
                    t.table,
                    if is_view { "PARTITION BY" } else { "PRIMARY KEY" },
                    primary_key.join(", ")
                )));
            }
            keyed.sort_by_key(|(k, _, _)| *k);
            let pairs = keyed.into_iter().map(|(_, l, r)| (l, r)).collect();
            let as_of = AsOf::EventTime {
                left: self.physical(&time, &j.left)?,
                right: self.physical(&right_time, &j.right)?,
            };
            (as_of, pairs, rest)
        } else {
            return Err(plan_error(format!(
                "`{}` is neither the input's event time (the column its table declares a WATERMARK on, unchanged) nor a PROCTIME() column: an event-time temporal join needs the former, a lookup join the latter",
                t.column
            )));
        };
        if kind == JoinKind::Left && !rest.is_empty() {
            return Err(self.unsupported(
                &format!("a LEFT {construct} with the condition `{}`", rest[0]),
                "a LEFT temporal join's ON may hold only equalities on the table's key; filter the inputs before the join, or join INNER and filter after",
            ));
        }
        let spec = self.join_spec(j, kind, pairs, None, Some(as_of), &right.source)?;
        // Joined rows keep the left row's time and window: what follows may still window.
        self.attach_join(j, left, right, spec, rest)
    }

    /// A versioned view (`ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) = 1` over a table
    /// with a WATERMARK on `ts`): the table, the key columns (the table's names), and `right`
    /// with the ranking replaced by a constant 1 (every row is a version of its key from its
    /// time on; the temporal join picks the one valid at each row's time). `Err`: why not.
    fn versioned_view(
        &self,
        right: &LogicalPlan,
    ) -> std::result::Result<(&'a flowline_core::TableDef, Vec<String>, LogicalPlan), String> {
        // Down through aliases and projections to the filter that keeps rank 1 (a filter
        // above it would drop newest versions, not versions), then on to its ranking.
        let mut plan = right;
        let mut rank_one = false;
        loop {
            match plan {
                LogicalPlan::SubqueryAlias(a) => plan = &a.input,
                LogicalPlan::Projection(p) => plan = &p.input,
                LogicalPlan::Filter(f) if !rank_one => {
                    if rank_limit(&f.predicate, &f.input) != Some(1) {
                        return Err(format!(
                            "it filters its rows after the ranking (`{}`)",
                            f.predicate
                        ));
                    }
                    rank_one = true;
                    plan = &f.input;
                }
                LogicalPlan::Window(w) if rank_one => return self.keep_last_view(right, w),
                _ => return Err("it does not keep rank 1 of a ROW_NUMBER() ranking".into()),
            }
        }
    }

    /// The rest of [`Self::versioned_view`], for its ranking `w`.
    fn keep_last_view(
        &self,
        right: &LogicalPlan,
        w: &datafusion::logical_expr::Window,
    ) -> std::result::Result<(&'a flowline_core::TableDef, Vec<String>, LogicalPlan), String> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        let [expr] = w.window_expr.as_slice() else {
            return Err("it has several OVER functions".into());
        };
        let Some(f) = window_function(expr) else {
            return Err(format!("`{expr}` is not a ranking"));
        };
        if !f.fun.name().eq_ignore_ascii_case("row_number") || !f.params.args.is_empty() {
            return Err(format!("`{expr}` is not ROW_NUMBER()"));
        }
        let [order] = f.params.order_by.as_slice() else {
            return Err("its ROW_NUMBER() is not ordered by exactly one column".into());
        };
        if order.asc {
            return Err("it keeps the first row per key (ORDER BY ... ASC), not the last".into());
        }
        let traced = |e: &Expr| match e {
            Expr::Column(c) => trace_column(&w.input, &c.name),
            _ => None,
        };
        let Some((table_name, time)) = traced(&order.expr) else {
            return Err(format!("`{}` is not a column of a table", order.expr));
        };
        let Some(table) = self.def.table(&table_name) else {
            return Err(format!("`{table_name}` is not a table"));
        };
        if table.watermark.as_ref().map(|w| &w.column) != Some(&time) {
            return Err(format!(
                "its ORDER BY `{time}` is not the event time (WATERMARK column) of `{table_name}`"
            ));
        }
        if f.params.partition_by.is_empty() {
            return Err("its ROW_NUMBER() has no PARTITION BY (the key)".into());
        }
        let mut key = vec![];
        for p in &f.params.partition_by {
            match traced(p) {
                Some((t, c)) if t == table_name => key.push(c),
                _ => {
                    return Err(format!(
                        "its PARTITION BY `{p}` is not a column of `{table_name}`"
                    ))
                }
            }
        }
        // The ranking becomes a constant 1: the same columns, so everything above still fits.
        let n = w.input.schema().fields().len();
        let mut exprs: Vec<Expr> = (0..n)
            .map(|i| {
                Expr::Column(datafusion::common::Column::from(
                    w.input.schema().qualified_field(i),
                ))
            })
            .collect();
        let rank = w.schema.field(n);
        exprs.push(
            Expr::Literal(
                datafusion::common::ScalarValue::UInt64(Some(1))
                    .cast_to(rank.data_type())
                    .map_err(|e| e.to_string())?,
                None,
            )
            .alias(rank.name()),
        );
        let constant = LogicalPlan::Projection(
            datafusion::logical_expr::Projection::try_new_with_schema(
                exprs,
                Arc::clone(&w.input),
                Arc::clone(&w.schema),
            )
            .map_err(|e| e.to_string())?,
        );
        let target = LogicalPlan::Window(w.clone());
        let rewritten = right
            .clone()
            .transform_up(|node| {
                Ok(if node == target {
                    Transformed::yes(constant.clone())
                } else {
                    Transformed::no(node)
                })
            })
            .map_err(|e| e.to_string())?;
        Ok((table, key, rewritten.data))
    }

    /// In stream mode, `e` must be the event-time column of the chain's source, unchanged;
    /// `construct` names what uses it ("an interval join on").
    fn check_event_time(
        &self,
        plan: &LogicalPlan,
        e: &Expr,
        chain: &Chain,
        construct: &str,
    ) -> Result<()> {
        let watermark = self
            .def
            .table(&chain.source)
            .and_then(|t| t.watermark.as_ref());
        let traced = match e {
            Expr::Column(c) => trace_column(plan, &c.name),
            _ => None,
        };
        if chain.after_regular_join() {
            return Err(self.unsupported(
                &format!("{construct} `{e}` after a regular join"),
                REGULAR_JOIN_HINT,
            ));
        }
        let ok = !chain.aggregated
            && matches!((watermark, &traced), (Some(wm), Some((table, column))) if table == &chain.source && column == &wm.column);
        if ok {
            Ok(())
        } else {
            Err(self.unsupported(
                &format!("{construct} `{e}`"),
                &match watermark {
                    Some(w) => format!(
                        "in stream mode this must be the column table `{}` declares its WATERMARK on (`{}`), unchanged and not after an aggregate",
                        chain.source, w.column
                    ),
                    None => format!(
                        "in stream mode this must be an event-time column: declare a WATERMARK in CREATE TABLE {}",
                        chain.source
                    ),
                },
            ))
        }
    }

    fn lower_tvf(&self, call: &TvfCall) -> Result<Chain> {
        let input = self
            .binder
            .input(&call.name)
            .ok_or_else(|| Error::Internal(format!("window `{}` was not bound", call.name)))?;
        let mut chain = self.lower(&input)?;
        if chain.window.is_some() || chain.aggregated {
            return Err(self.unsupported(
                "a window over a windowed or aggregated input",
                "run with --mode batch",
            ));
        }
        if self.mode == Mode::Stream && chain.after_regular_join() {
            return Err(self.unsupported("a window over a regular join", REGULAR_JOIN_HINT));
        }
        if self.mode == Mode::Stream {
            let source = self.def.table(&chain.source);
            // The watermark is computed on the source's column: the window must use that very
            // column, passed through views unchanged (a renamed copy is fine, a computed one not).
            let origin = trace_column(&input, &call.time_column);
            match source.and_then(|t| t.watermark.as_ref()) {
                Some(w)
                    if origin.as_ref().is_some_and(|(table, column)| {
                        table == &chain.source && column == &w.column
                    }) => {}
                Some(w) => {
                    return Err(self.unsupported(
                        &format!("a window on `{}` (line {})", call.time_column, call.line),
                        &format!(
                            "table `{}` declares its watermark on `{}`; windows must use that column unchanged (not computed in a view)",
                            chain.source, w.column
                        ),
                    ))
                }
                None => {
                    return Err(self.unsupported(
                        &format!("a window over table `{}` without a WATERMARK (line {})", chain.source, call.line),
                        &format!(
                            "declare `WATERMARK FOR {0} AS {0} - INTERVAL '5' SECOND` in CREATE TABLE {1}",
                            call.time_column, chain.source
                        ),
                    ))
                }
            }
        }
        let input_schema: &Schema = input.schema().as_arrow();
        let time_column = input_schema.index_of(&call.time_column)?;
        let mut fields: Vec<_> = input_schema.fields().iter().cloned().collect();
        for name in crate::bind::WINDOW_COLUMNS {
            fields.push(Arc::new(arrow::datatypes::Field::new(
                name,
                arrow::datatypes::DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Millisecond,
                    None,
                ),
                false,
            )));
        }
        for p in &call.partition {
            if input_schema.index_of(p).is_err() {
                return Err(Error::Plan(format!(
                    "line {}: SESSION PARTITION BY `{p}`: no such column in `{}`",
                    call.line, call.input
                )));
            }
        }
        chain.nodes.push(Node::WindowAssign(WindowSpec {
            kind: call.kind,
            time_column,
            schema: Arc::new(Schema::new(fields)),
        }));
        chain.window = Some(call.kind);
        chain.session_partition = call.partition.clone();
        Ok(chain)
    }

    fn aggregate_call(&self, expr: &Expr, input: &LogicalPlan) -> Result<AggregateCall> {
        let inner = match expr {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::AggregateFunction(DfAggregate { func, params }) = inner else {
            return Err(self.unsupported(&format!("aggregate `{expr}`"), "run with --mode batch"));
        };
        let function = match func.name().to_ascii_lowercase().as_str() {
            "count" => AggregateFunction::Count,
            "sum" => AggregateFunction::Sum,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            "avg" | "mean" => AggregateFunction::Avg,
            "approx_distinct" | "approx_count_distinct" => AggregateFunction::ApproxCountDistinct,
            "reservoir_sample" => {
                let k = match params.args.get(1) {
                    Some(Expr::Literal(k, _)) => reservoir_sample_size(k).map_err(Error::Plan)?,
                    _ => {
                        return Err(Error::Plan(format!(
                            "`{expr}`: RESERVOIR_SAMPLE(x, k) needs k as an integer literal"
                        )))
                    }
                };
                AggregateFunction::ReservoirSample(k)
            }
            other => {
                return Err(self.unsupported(
                    &format!("aggregate function `{other}`"),
                    "COUNT, COUNT(DISTINCT), SUM, MIN, MAX, AVG, APPROX_COUNT_DISTINCT and RESERVOIR_SAMPLE are supported; run with --mode batch",
                ))
            }
        };
        let arity = match function {
            AggregateFunction::ReservoirSample(_) => 2,
            _ => 1,
        };
        if !params.order_by.is_empty()
            || params.null_treatment.is_some()
            || params.args.len() > arity
        {
            return Err(self.unsupported(&format!("aggregate `{expr}`"), "run with --mode batch"));
        }
        if params.distinct && function != AggregateFunction::Count {
            return Err(self.unsupported(
                &format!("{}(DISTINCT ...)", func.name().to_ascii_uppercase()),
                "only COUNT(DISTINCT ...) is supported; run with --mode batch",
            ));
        }
        let arg = match params.args.first() {
            Some(a) => self.physical(a, input)?,
            None => self.physical(&datafusion::logical_expr::lit(1i64), input)?,
        };
        let filter = params
            .filter
            .as_ref()
            .map(|f| self.physical(f, input))
            .transpose()?;
        Ok(AggregateCall {
            function,
            arg,
            distinct: params.distinct,
            filter,
        })
    }
}

/// `l.time + a <op> r.time + b` (either way round, `BETWEEN` already split): the left and
/// right time columns and the bounds it puts on `l.time - r.time` (lower, upper), in ms.
fn time_bound(
    e: &Expr,
    on_left: &dyn Fn(&Expr) -> bool,
    on_right: &dyn Fn(&Expr) -> bool,
) -> Option<(Expr, Expr, Option<i64>, Option<i64>)> {
    use datafusion::logical_expr::Operator;
    let Expr::BinaryExpr(b) = e else { return None };
    // A column plus or minus a fixed interval.
    fn term(e: &Expr) -> Option<(Expr, i64)> {
        let mut e = e;
        while let Expr::Cast(c) = e {
            e = &c.expr;
        }
        match e {
            Expr::Column(_) => Some((e.clone(), 0)),
            Expr::BinaryExpr(b) if matches!(b.op, Operator::Plus | Operator::Minus) => {
                let (column, offset) = term(&b.left)?;
                let Expr::Literal(v, _) = b.right.as_ref() else {
                    return None;
                };
                let ms = interval_millis(v)
                    .or_else(|| interval_millis(&v.arithmetic_negate().ok()?).map(|m| -m))?;
                Some((
                    column,
                    if b.op == Operator::Plus {
                        offset + ms
                    } else {
                        offset - ms
                    },
                ))
            }
            _ => None,
        }
    }
    let (a, oa) = term(&b.left)?;
    let (c, oc) = term(&b.right)?;
    // a + oa op c + oc  ⇔  a - c op oc - oa
    let (l, r, op, k) = if on_left(&a) && on_right(&c) {
        (a, c, b.op, oc - oa)
    } else if on_right(&a) && on_left(&c) {
        // c - a op' oa - oc with the comparison turned around.
        (c, a, b.op.swap()?, oa - oc)
    } else {
        return None;
    };
    let (lower, upper) = match op {
        Operator::GtEq => (Some(k), None),
        Operator::Gt => (Some(k + 1), None),
        Operator::LtEq => (None, Some(k)),
        Operator::Lt => (None, Some(k - 1)),
        Operator::Eq => (Some(k), Some(k)),
        _ => return None,
    };
    Some((l, r, lower, upper))
}

/// Milliseconds of a non-negative interval of fixed length (no months), as OVER frames take.
fn interval_millis(v: &datafusion::common::ScalarValue) -> Option<i64> {
    use datafusion::common::ScalarValue as S;
    let ms = match v {
        S::IntervalDayTime(Some(d)) => i64::from(d.days) * 86_400_000 + i64::from(d.milliseconds),
        S::IntervalMonthDayNano(Some(d)) if d.months == 0 => {
            i64::from(d.days) * 86_400_000 + d.nanoseconds / 1_000_000
        }
        S::DurationSecond(Some(s)) => s.checked_mul(1_000)?,
        S::DurationMillisecond(Some(ms)) => *ms,
        S::DurationMicrosecond(Some(us)) => us / 1_000,
        S::DurationNanosecond(Some(ns)) => ns / 1_000_000,
        _ => return None,
    };
    (ms >= 0).then_some(ms)
}

/// The largest `k` of `RESERVOIR_SAMPLE(x, k)`.
pub const MAX_SAMPLE: usize = 100_000;

/// `k` of `RESERVOIR_SAMPLE(x, k)`: an integer literal from 1 to [`MAX_SAMPLE`].
pub fn reservoir_sample_size(
    k: &datafusion::common::ScalarValue,
) -> std::result::Result<usize, String> {
    use datafusion::common::ScalarValue as S;
    let n: Option<i128> = match k {
        S::Int8(v) => v.map(i128::from),
        S::Int16(v) => v.map(i128::from),
        S::Int32(v) => v.map(i128::from),
        S::Int64(v) => v.map(i128::from),
        S::UInt8(v) => v.map(i128::from),
        S::UInt16(v) => v.map(i128::from),
        S::UInt32(v) => v.map(i128::from),
        S::UInt64(v) => v.map(i128::from),
        _ => None,
    };
    match n {
        Some(n) if (1..=MAX_SAMPLE as i128).contains(&n) => Ok(n as usize),
        Some(n) => Err(format!(
            "RESERVOIR_SAMPLE(x, k): k must be between 1 and {MAX_SAMPLE}, found {n}"
        )),
        None => Err(format!(
            "RESERVOIR_SAMPLE(x, k): k must be an integer literal, found {k}"
        )),
    }
}

/// Whether `plan` must run on the dataflow even in batch mode, because DataFusion would give
/// another answer: it reads a SESSION window relation (window assignment gives each row its
/// own window, only the dataflow's session aggregate merges them), or a table joined
/// `FOR SYSTEM_TIME AS OF` (DataFusion would join every version), directly or through views.
pub fn needs_dataflow(def: &PipelineDef, plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    // Subqueries too: one that joins AS OF must not fall back to DataFusion either.
    let _ = plan.apply_with_subqueries(|node| {
        // A relation joined AS OF (a view DataFusion inlines under its generated name).
        if let LogicalPlan::SubqueryAlias(a) = node {
            if def.temporal.iter().any(|t| t.name == a.alias.table()) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        if let LogicalPlan::TableScan(scan) = node {
            let name = scan.table_name.table();
            let session = def
                .tvfs
                .iter()
                .any(|c| c.name == name && matches!(c.kind, WindowKind::Session { .. }));
            let in_view = source_as_provider(&scan.source)
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<ViewTable>()
                        .map(|v| needs_dataflow(def, v.logical_plan()))
                })
                .unwrap_or(false);
            if session || in_view {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The `FOR SYSTEM_TIME AS OF` clause of a join's right input, if it has one: the input is the
/// clause's table under its alias.
fn temporal_ref<'a>(def: &'a PipelineDef, right: &LogicalPlan) -> Option<&'a TemporalRef> {
    // The user's alias, then the generated relation (a view, which DataFusion inlines under
    // its name).
    let input = match right {
        LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
        other => other,
    };
    let LogicalPlan::SubqueryAlias(relation) = input else {
        return None;
    };
    let name = relation.alias.table();
    def.temporal.iter().find(|t| t.name == name)
}

/// Whether output column `name` of `plan` is a processing-time attribute: made by `PROCTIME()`
/// in a query or a table's computed column, and passed through unchanged.
fn is_proctime(def: &PipelineDef, plan: &LogicalPlan, name: &str) -> bool {
    match plan {
        LogicalPlan::Projection(p) => {
            let Some(i) = p.schema.fields().iter().position(|f| f.name() == name) else {
                return false;
            };
            let mut e = &p.expr[i];
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            match e {
                Expr::Column(c) => is_proctime(def, &p.input, &c.name),
                Expr::ScalarFunction(f) => f.name() == flowline_core::functions::PROCTIME,
                _ => false,
            }
        }
        LogicalPlan::Filter(f) => is_proctime(def, &f.input, name),
        LogicalPlan::SubqueryAlias(a) => is_proctime(def, &a.input, name),
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.table();
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(view) = provider.downcast_ref::<ViewTable>() {
                    return is_proctime(def, view.logical_plan(), name);
                }
            }
            def.table(table).is_some_and(|t| {
                t.computed
                    .iter()
                    .any(|c| c.name == name && c.expr == flowline_core::ComputedExpr::ProcTime)
            })
        }
        _ => false,
    }
}

/// Whether `e` reads columns, all of `input`.
fn on_input(e: &Expr, input: &LogicalPlan) -> bool {
    let cols = e.column_refs();
    !cols.is_empty() && cols.iter().all(|c| input.schema().has_column(c))
}

/// A join's ON (and the WHERE over it, `condition`) as equalities between its inputs
/// (left expression, right expression) and the other conjuncts (a BETWEEN split in two).
fn split_join_condition(
    j: &datafusion::logical_expr::Join,
    condition: Option<&Expr>,
) -> (Vec<(Expr, Expr)>, Vec<Expr>) {
    use datafusion::logical_expr::utils::split_conjunction;
    let on_left = |e: &Expr| on_input(e, &j.left);
    let on_right = |e: &Expr| on_input(e, &j.right);
    let mut pairs: Vec<(Expr, Expr)> = j.on.clone();
    let mut rest: Vec<Expr> = vec![];
    let mut conjuncts: Vec<Expr> = vec![];
    for e in j.filter.iter().chain(condition) {
        conjuncts.extend(split_conjunction(e).into_iter().cloned());
    }
    for e in conjuncts {
        match &e {
            Expr::BinaryExpr(b) if b.op == datafusion::logical_expr::Operator::Eq => {
                if on_left(&b.left) && on_right(&b.right) {
                    pairs.push((*b.left.clone(), *b.right.clone()));
                    continue;
                }
                if on_right(&b.left) && on_left(&b.right) {
                    pairs.push((*b.right.clone(), *b.left.clone()));
                    continue;
                }
                rest.push(e.clone());
            }
            Expr::Between(b) if !b.negated => {
                rest.push(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    b.expr.clone(),
                    datafusion::logical_expr::Operator::GtEq,
                    b.low.clone(),
                )));
                rest.push(Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    b.expr.clone(),
                    datafusion::logical_expr::Operator::LtEq,
                    b.high.clone(),
                )));
            }
            _ => rest.push(e.clone()),
        }
    }
    (pairs, rest)
}

/// Follows output column `name` of `plan` down through projections that pass a column through
/// (possibly renamed), filters, aliases and views, to the relation that produces it: returns
/// (table or window relation name, column name there), or `None` if the column is computed.
fn trace_column(plan: &LogicalPlan, name: &str) -> Option<(String, String)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let i = p.schema.fields().iter().position(|f| f.name() == name)?;
            let mut e = &p.expr[i];
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            match e {
                Expr::Column(c) => trace_column(&p.input, &c.name),
                _ => None,
            }
        }
        LogicalPlan::Filter(f) => trace_column(&f.input, name),
        LogicalPlan::SubqueryAlias(a) => trace_column(&a.input, name),
        // A GROUP BY column passed through unchanged.
        LogicalPlan::Aggregate(a) => {
            let i = a.schema.fields().iter().position(|f| f.name() == name)?;
            match a.group_expr.get(i)? {
                Expr::Column(c) => trace_column(&a.input, &c.name),
                _ => None,
            }
        }
        // Each input's columns pass through a join.
        LogicalPlan::Join(j) => [&j.left, &j.right].into_iter().find_map(|input| {
            input
                .schema()
                .fields()
                .iter()
                .any(|f| f.name() == name)
                .then(|| trace_column(input, name))?
        }),
        // The input's columns pass through an OVER.
        LogicalPlan::Window(w) => {
            w.input
                .schema()
                .fields()
                .iter()
                .any(|f| f.name() == name)
                .then_some(())?;
            trace_column(&w.input, name)
        }
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            match provider.downcast_ref::<ViewTable>() {
                Some(view) => trace_column(view.logical_plan(), name),
                None => Some((scan.table_name.table().to_string(), name.to_string())),
            }
        }
        _ => None,
    }
}

/// The window function under an expression's aliases.
fn window_function(e: &Expr) -> Option<&datafusion::logical_expr::expr::WindowFunction> {
    let mut e = e;
    while let Expr::Alias(a) = e {
        e = &a.expr;
    }
    match e {
        Expr::WindowFunction(f) => Some(f.as_ref()),
        _ => None,
    }
}

/// `n` when `predicate` keeps ranks up to `n` of the ranking directly below (`rank <= n`,
/// `rank < n + 1`, `rank = 1`, also written the other way round).
fn rank_limit(predicate: &Expr, input: &LogicalPlan) -> Option<u64> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let column = |e: &Expr| -> Option<String> {
        let mut e = e;
        while let Expr::Cast(c) = e {
            e = &c.expr;
        }
        match e {
            Expr::Column(c) => Some(c.name.clone()),
            _ => None,
        }
    };
    let literal = |e: &Expr| -> Option<i128> {
        let mut e = e;
        while let Expr::Cast(c) = e {
            e = &c.expr;
        }
        match e {
            Expr::Literal(v, _) => {
                v.cast_to(&arrow::datatypes::DataType::Int64)
                    .ok()
                    .and_then(|v| match v {
                        datafusion::common::ScalarValue::Int64(Some(n)) => Some(i128::from(n)),
                        _ => None,
                    })
            }
            _ => None,
        }
    };
    let (name, op, n) = match (column(left), literal(right), column(right), literal(left)) {
        (Some(c), Some(n), _, _) => (c, *op, n),
        (_, _, Some(c), Some(n)) => (c, op.swap()?, n),
        _ => return None,
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    (limit >= 1 && is_rank_column(input, &name)).then_some(limit as u64)
}

/// Whether output column `name` of `plan` is the OVER function's column of the window node
/// below it (through projections that pass it on, filters and aliases).
fn is_rank_column(plan: &LogicalPlan, name: &str) -> bool {
    match plan {
        LogicalPlan::Projection(p) => {
            let Some(i) = p.schema.fields().iter().position(|f| f.name() == name) else {
                return false;
            };
            let mut e = &p.expr[i];
            while let Expr::Alias(a) = e {
                e = &a.expr;
            }
            match e {
                Expr::Column(c) => is_rank_column(&p.input, &c.name),
                _ => false,
            }
        }
        LogicalPlan::Filter(f) => is_rank_column(&f.input, name),
        LogicalPlan::SubqueryAlias(a) => is_rank_column(&a.input, name),
        LogicalPlan::Window(w) => w.schema.fields().last().is_some_and(|f| f.name() == name),
        _ => false,
    }
}

fn find_subquery(expr: &Expr) -> Option<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut found = None;
    let _ = expr.apply(|e| {
        if matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ) {
            found = Some(e.to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The column of `plan`'s output named `name`, as an expression.
fn column_named(plan: &LogicalPlan, name: &str) -> Option<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .find(|c| c.name == name)
        .map(Expr::Column)
}
