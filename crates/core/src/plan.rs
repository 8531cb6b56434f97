//! The dataflow the SQL front end lowers a pipeline to: for each `INSERT`, one source feeding a
//! linear chain of nodes that ends in one sink. Closed enums, so every consumer handles every
//! case.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

/// One `INSERT INTO sink SELECT ...`.
#[derive(Debug, Clone)]
pub struct InsertPlan {
    pub sink: String,
    pub source: String,
    pub nodes: Vec<Node>,
    /// Schema of the rows reaching the sink.
    pub schema: SchemaRef,
}

#[derive(Debug, Clone)]
pub enum Node {
    /// Keep rows for which the predicate is true.
    Filter { predicate: Arc<dyn PhysicalExpr> },
    /// Compute a new row from each row.
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// Assign each row to its windows, adding `window_start`, `window_end`, `window_time`.
    WindowAssign(WindowSpec),
    /// Aggregate per window and key; emit a window's groups once the watermark passes its end.
    WindowAggregate(AggregateSpec),
}

impl Node {
    pub fn name(&self) -> &'static str {
        match self {
            Node::Filter { .. } => "filter",
            Node::Project { .. } => "project",
            Node::WindowAssign(_) => "window-assign",
            Node::WindowAggregate(_) => "window-aggregate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumble { size: i64 },
    /// Windows of `size` ms starting every `slide` ms.
    Hop { size: i64, slide: i64 },
}

impl WindowKind {
    pub fn size(self) -> i64 {
        match self {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WindowSpec {
    pub kind: WindowKind,
    /// Index of the event-time column in the input.
    pub time_column: usize,
    /// Output schema: the input columns followed by `window_start`, `window_end`, `window_time`.
    pub schema: SchemaRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone)]
pub struct AggregateCall {
    pub function: AggregateFunction,
    pub arg: Arc<dyn PhysicalExpr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// `GROUP BY window_start, window_end, keys...` with aggregate calls.
#[derive(Debug, Clone)]
pub struct AggregateSpec {
    /// Group expressions in `GROUP BY` order (including the window columns).
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// Positions of `window_start` and `window_end` among `group_exprs`.
    pub window_start: usize,
    pub window_end: usize,
    pub window: WindowKind,
    pub calls: Vec<AggregateCall>,
    /// Schema of the rows entering the aggregate.
    pub input_schema: SchemaRef,
    /// Output: group columns, then one column per call.
    pub schema: SchemaRef,
}
