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
    /// How results reach the sink.
    pub output: OutputMode,
    /// Update mode: positions in `schema` of the upsert key (the GROUP BY columns, window
    /// bounds included), which identify the row a later update replaces. Empty in append mode.
    pub key: Vec<usize>,
    /// Whether rows reaching the sink can be deleted ([`crate::Message::Retract`]): a
    /// [`Node::RetractAggregate`] in the chain. The sink must be able to write deletes.
    pub deletes: bool,
    /// A join's second input: its source and the nodes from it to the [`Node::Join`] in
    /// `nodes` (whose nodes before it are the first input's).
    pub right: Option<JoinInput>,
}

/// The right input of a join: a source and the nodes that run on it before the join.
#[derive(Debug, Clone)]
pub struct JoinInput {
    pub source: String,
    pub nodes: Vec<Node>,
}

impl InsertPlan {
    /// How many leading nodes of the join's right input equal the left input's (before its
    /// join), over the same source: a self-join such as Nexmark q5, whose both sides count the
    /// same HOP windows. Equal nodes compute equal rows from the same input, so they run once
    /// and their output feeds both the left input's next node and the right input's. (Also
    /// for nodes with a volatile function such as `random()`: both inputs then see one draw.)
    pub fn shared_prefix(&self) -> usize {
        let Some(right) = self.right.as_ref().filter(|r| r.source == self.source) else {
            return 0;
        };
        self.nodes
            .iter()
            .take_while(|n| !matches!(n, Node::Join(_)))
            .zip(&right.nodes)
            .take_while(|(l, r)| l == r)
            .count()
    }
}

/// How an aggregate's results reach its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Each result once, when it is final (a window's results when the watermark passes its
    /// end; a plain GROUP BY's at the end of a bounded input).
    #[default]
    Append,
    /// Results as they change, at most once per emit interval per group, each row carrying its
    /// key: a downstream upsert by that key ends with the final answer.
    Update,
}

impl std::fmt::Display for OutputMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputMode::Append => "append",
            OutputMode::Update => "update",
        })
    }
}

impl std::str::FromStr for OutputMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "append" => Ok(OutputMode::Append),
            "update" | "upsert" => Ok(OutputMode::Update),
            other => Err(format!(
                "unknown output mode '{other}': expected append or update"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    /// Aggregate per window (or over the whole input) and key; append mode emits a window's
    /// groups once the watermark passes its end, update mode also emits changed groups on
    /// every [`Message::EmitUpdates`](crate::Message::EmitUpdates).
    WindowAggregate(AggregateSpec),
    /// A `GROUP BY` without window in update mode **with retractions**: its input may retract
    /// rows (it aggregates an update-mode aggregate's output), and on every update tick it
    /// sends, per changed group, the old result as [`crate::Message::Retract`] and the new one
    /// as data; a group whose rows were all retracted is deleted (its old result retracted).
    /// Used where the plain update mode would be wrong: a filter after the aggregate (HAVING)
    /// or another aggregate over it.
    RetractAggregate(AggregateSpec),
    /// `ROW_NUMBER() | RANK() | DENSE_RANK() OVER (PARTITION BY <window>, ... ORDER BY ...)`:
    /// ranks the rows of each window once the watermark passes its end, keeping those within
    /// the limit (window Top-N), with the rank as a last column.
    WindowRank(RankSpec),
    /// `agg(x) OVER (PARTITION BY ... ORDER BY <event time> RANGE | ROWS BETWEEN ... PRECEDING
    /// AND CURRENT ROW)`: every row with the aggregates over its frame, emitted in event-time
    /// order once the watermark passes the row's time.
    OverAggregate(OverSpec),
    /// Joins the chain's rows (left) with the rows of [`InsertPlan::right`]: equal keys and,
    /// for interval and window joins, times within bounds, with state expired by the watermark.
    Join(JoinSpec),
    /// `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY <event time> [DESC]) ... WHERE rn = 1`
    /// without a window: deduplication, keeping the first (append) or the last (update, keyed
    /// by the partition) row of each key in event time.
    Deduplicate(DedupSpec),
    /// `ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) ... WHERE rn <= n` without a window:
    /// the top n rows of each partition over the whole input (update mode in a stream, keyed
    /// by the partition and the row number).
    TopN(TopNSpec),
}

impl Node {
    pub fn name(&self) -> &'static str {
        match self {
            Node::Filter { .. } => "filter",
            Node::Project { .. } => "project",
            Node::WindowAssign(_) => "window-assign",
            Node::WindowAggregate(_) => "window-aggregate",
            Node::RetractAggregate(_) => "retract-aggregate",
            Node::WindowRank(_) => "window-rank",
            Node::OverAggregate(_) => "over-aggregate",
            Node::Join(_) => "join",
            Node::Deduplicate(_) => "deduplicate",
            Node::TopN(_) => "top-n",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size` ms.
    Tumble { size: i64 },
    /// Windows of `size` ms starting every `slide` ms.
    Hop { size: i64, slide: i64 },
    /// Windows that start every `size` ms and grow by `step` ms up to `size`: a row at `t` is
    /// in `[s, s + k·step)` for every k with `s + k·step > t`, where `s` is `t` rounded down to
    /// `size`. Each window is identified by its end.
    Cumulate { step: i64, size: i64 },
    /// Sessions: rows less than `gap` ms apart (per partition key) share a window, from the
    /// first row's time to the last row's time + `gap`. Window assignment gives each row its
    /// own window `[t, t + gap)`; the session aggregate merges overlapping ones.
    Session { gap: i64 },
}

impl WindowKind {
    /// The largest window, in ms.
    pub fn size(self) -> i64 {
        match self {
            WindowKind::Tumble { size }
            | WindowKind::Hop { size, .. }
            | WindowKind::Cumulate { size, .. } => size,
            WindowKind::Session { gap } => gap,
        }
    }

    /// The start of the window that ends at `end`.
    pub fn start_of(self, end: i64) -> i64 {
        match self {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => end - size,
            WindowKind::Cumulate { size, .. } => (end - 1) - (end - 1).rem_euclid(size),
            // A single row's session; merged sessions carry their own start.
            WindowKind::Session { gap } => end - gap,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
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
    /// `APPROX_COUNT_DISTINCT` (DataFusion's `approx_distinct`): a HyperLogLog sketch per
    /// group, exact up to 64 distinct values, about 0.81% standard error above.
    ApproxCountDistinct,
    /// `RESERVOIR_SAMPLE(x, k)`: up to `k` non-NULL values chosen uniformly, as a list.
    ReservoirSample(usize),
}

#[derive(Debug, Clone)]
pub struct AggregateCall {
    pub function: AggregateFunction,
    pub arg: Arc<dyn PhysicalExpr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// The window of a windowed aggregate: its kind, and where `window_start` and `window_end` are
/// among the group expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowColumns {
    pub kind: WindowKind,
    pub start: usize,
    pub end: usize,
}

/// `GROUP BY [window_start, window_end,] keys...` with aggregate calls.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// Group expressions in `GROUP BY` order (including the window columns).
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// `None`: a GROUP BY without a window, over the whole input.
    pub window: Option<WindowColumns>,
    pub output: OutputMode,
    /// Update mode, windows: how long (ms) after its end a window keeps its state, so that a
    /// late row within it corrects the window (re-emitted); 0: rows after the end are late.
    pub allowed_lateness: i64,
    /// Update mode, no window: a group not updated while the watermark advanced this many ms
    /// is dropped (`SET 'table.exec.state.ttl'`); `None`: groups are kept forever.
    pub state_ttl: Option<i64>,
    /// SESSION windows: positions in `group_exprs` of the `PARTITION BY` columns (sessions are
    /// found per value of them; empty: over all rows). Empty for other windows.
    pub session_keys: Vec<usize>,
    pub calls: Vec<AggregateCall>,
    /// Schema of the rows entering the aggregate.
    pub input_schema: SchemaRef,
    /// Output: group columns, then one column per call.
    pub schema: SchemaRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankFunction {
    /// 1, 2, 3, ... in order; ties in an arbitrary but fixed order.
    RowNumber,
    /// Ties share a rank; the next rank skips (1, 1, 3).
    Rank,
    /// Ties share a rank; no gaps (1, 1, 2).
    DenseRank,
}

/// A ranking of the rows of each window (see [`Node::WindowRank`]).
#[derive(Debug, Clone)]
pub struct RankSpec {
    pub function: RankFunction,
    /// `PARTITION BY` expressions (the window column among them).
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// `ORDER BY` expressions.
    pub order: Vec<datafusion::physical_expr::PhysicalSortExpr>,
    /// A window bound column of the input, and what to add to it to get the window's end
    /// (0 for `window_end`, the size for a TUMBLE/HOP `window_start`).
    pub window_column: Arc<dyn PhysicalExpr>,
    pub end_offset: i64,
    /// Keep only ranks up to this (from a `WHERE rank <= n` on the result).
    pub limit: Option<u64>,
    /// The input's columns, then the rank (UInt64).
    pub schema: SchemaRef,
}

/// The frame of an OVER aggregate: the rows before the current one (and the current row and,
/// for RANGE, its peers: rows of the same partition with the same time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// Rows whose time is at most `preceding` ms before the current row's (`i64::MAX`:
    /// unbounded).
    Range { preceding: i64 },
    /// The `preceding` rows before the current one in time order (`u64::MAX`: unbounded).
    Rows { preceding: u64 },
}

/// An OVER aggregate (see [`Node::OverAggregate`]).
#[derive(Debug, Clone)]
pub struct OverSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The `ORDER BY` column: the source's event time, ascending.
    pub time: Arc<dyn PhysicalExpr>,
    pub frame: OverFrame,
    /// COUNT, SUM, MIN, MAX or AVG of an argument.
    pub calls: Vec<(AggregateFunction, Arc<dyn PhysicalExpr>)>,
    /// The input's columns, then one per call.
    pub schema: SchemaRef,
    /// `table.exec.state.ttl` (ms of event time): a partition's state holds for rows at most
    /// this long after its newest row; a later row starts the partition afresh.
    pub state_ttl: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    /// Every left row at least once: unmatched ones with NULL right columns, emitted when the
    /// watermark proves no right row can match any more.
    Left,
}

/// The time condition of an interval or window join: `left time - right time` within
/// `[lower, upper]` ms.
#[derive(Debug, Clone)]
pub struct JoinTime {
    pub left: Arc<dyn PhysicalExpr>,
    pub right: Arc<dyn PhysicalExpr>,
    pub lower: i64,
    pub upper: i64,
    /// A window join: the times are window ends, and a window's rows are final at end - 1.
    pub window_end: bool,
}

/// A join (see [`Node::Join`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JoinSpec {
    pub kind: JoinKind,
    /// Equal-key pairs (left expression, right expression); NULL keys never match.
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// `None`: a regular join, whose state grows with its input (or a temporal join).
    pub time: Option<JoinTime>,
    /// `JOIN t FOR SYSTEM_TIME AS OF ...`: a temporal join (then `time` is `None`).
    pub as_of: Option<AsOf>,
    /// Regular joins: a kept row is dropped once the watermark advanced this many ms past the
    /// watermark it arrived under (`SET 'table.exec.state.ttl'`); `None`: kept forever.
    pub state_ttl: Option<i64>,
    /// The right input's source table, for its rejects.
    pub right_table: String,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    /// The left columns, then the right columns.
    pub schema: SchemaRef,
}

/// The version of the right table a temporal join (`JOIN t FOR SYSTEM_TIME AS OF x`) joins.
#[derive(Debug, Clone, PartialEq)]
pub enum AsOf {
    /// `x` is a processing-time attribute (`PROCTIME()`): a *lookup join*. The right input is a
    /// bounded dimension table, loaded whole before the left rows and reloaded when it
    /// changes; each left row joins the table as it is when the row arrives. Left rows are not
    /// kept, and watermarks pass through.
    ProcessingTime,
    /// `x` is the left input's event time: each left row joins the version of its key that was
    /// valid at its time (the right row with the latest time at or before it), once the
    /// watermark of both inputs passed it. The right input is a *versioned table*: a table
    /// with a PRIMARY KEY and a WATERMARK, each row a new version of its key.
    EventTime {
        left: Arc<dyn PhysicalExpr>,
        right: Arc<dyn PhysicalExpr>,
    },
}

/// A Top-N over a whole input (see [`Node::TopN`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TopNSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    pub order: Vec<datafusion::physical_expr::PhysicalSortExpr>,
    pub limit: u64,
    /// Update: changed ranks are emitted on every update tick; append (batch): all at the end.
    pub output: OutputMode,
    /// The input's columns, then the row number.
    pub schema: SchemaRef,
    /// Update mode, `table.exec.state.ttl` (ms): a partition whose top did not change while the
    /// watermark advanced this many ms is dropped; `None`: partitions are kept forever.
    pub state_ttl: Option<i64>,
}

/// Deduplication (see [`Node::Deduplicate`]).
#[derive(Debug, Clone)]
pub struct DedupSpec {
    pub partition: Vec<Arc<dyn PhysicalExpr>>,
    /// The `ORDER BY` column: the source's event time.
    pub time: Arc<dyn PhysicalExpr>,
    /// `ORDER BY time DESC`: keep each key's latest row (update mode), else its first (append).
    pub keep_last: bool,
    /// The input's columns, then the row number (always 1).
    pub schema: SchemaRef,
    /// `table.exec.state.ttl` (ms of event time): a key's kept row counts for rows at most this
    /// long after it (keep-first: after the key's first row, so a later row is emitted again;
    /// keep-last: after its newest).
    pub state_ttl: Option<i64>,
}

/// Whether two expressions compute the same (the derived `PartialEq` cannot compare a bare
/// `Arc<dyn PhysicalExpr>` field).
fn same(a: &Arc<dyn PhysicalExpr>, b: &Arc<dyn PhysicalExpr>) -> bool {
    a.as_ref() == b.as_ref()
}

// Each impl destructures `self`, so that a new field cannot be left out of the comparison.
impl PartialEq for AggregateCall {
    fn eq(&self, o: &Self) -> bool {
        let AggregateCall {
            function,
            arg,
            distinct,
            filter,
        } = self;
        *function == o.function
            && same(arg, &o.arg)
            && *distinct == o.distinct
            && *filter == o.filter
    }
}

impl PartialEq for RankSpec {
    fn eq(&self, o: &Self) -> bool {
        let RankSpec {
            function,
            partition,
            order,
            window_column,
            end_offset,
            limit,
            schema,
        } = self;
        *function == o.function
            && *partition == o.partition
            && *order == o.order
            && same(window_column, &o.window_column)
            && *end_offset == o.end_offset
            && *limit == o.limit
            && *schema == o.schema
    }
}

impl PartialEq for OverSpec {
    fn eq(&self, o: &Self) -> bool {
        let OverSpec {
            partition,
            time,
            frame,
            calls,
            schema,
            state_ttl,
        } = self;
        *partition == o.partition
            && same(time, &o.time)
            && *frame == o.frame
            && calls.len() == o.calls.len()
            && calls
                .iter()
                .zip(&o.calls)
                .all(|((f, a), (g, b))| f == g && same(a, b))
            && *schema == o.schema
            && *state_ttl == o.state_ttl
    }
}

impl PartialEq for JoinTime {
    fn eq(&self, o: &Self) -> bool {
        let JoinTime {
            left,
            right,
            lower,
            upper,
            window_end,
        } = self;
        same(left, &o.left)
            && same(right, &o.right)
            && *lower == o.lower
            && *upper == o.upper
            && *window_end == o.window_end
    }
}

impl PartialEq for DedupSpec {
    fn eq(&self, o: &Self) -> bool {
        let DedupSpec {
            partition,
            time,
            keep_last,
            schema,
            state_ttl,
        } = self;
        *partition == o.partition
            && same(time, &o.time)
            && *keep_last == o.keep_last
            && *schema == o.schema
            && *state_ttl == o.state_ttl
    }
}
