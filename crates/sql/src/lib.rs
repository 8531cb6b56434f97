//! The SQL front end: Flink-dialect pipeline text → table definitions and DataFusion plans →
//! Flowline's dataflow ([`flowline_core::plan`]).
//!
//! * [`parse`] splits a pipeline file into statements and parses what DataFusion's parser
//!   does not know: `CREATE TABLE` with `WATERMARK FOR`, `PRIMARY KEY ... NOT ENFORCED` and
//!   `WITH (...)` options, `SET 'k' = 'v'`, and window table functions
//!   (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL ...))`), which it replaces by references
//!   to generated relations. Everything else is handed to DataFusion unchanged.
//! * [`bind`] plans views and `INSERT` queries with DataFusion.
//! * [`lower`] turns a DataFusion logical plan into a Flowline chain, or says which construct
//!   the streaming dataflow does not support yet.
//!
//! Invariant: every syntax error carries the line and column in the pipeline file.

pub mod bind;
mod group_window;
pub mod lower;
pub mod parse;
mod stateless;
mod types;

pub use bind::{bind, new_session, BoundInsert, TvfBinder, WINDOW_COLUMNS};
pub use lower::{
    lower_insert, needs_dataflow, reservoir_sample_size, LowerOptions, Mode, PlanningBinder,
    MAX_SAMPLE,
};
pub use parse::{PipelineDef, Statement, TemporalRef, TvfCall};
pub use types::{interval_ms, parse_type};
