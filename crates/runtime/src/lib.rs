//! The runtime: one driver for every mode, the operators it runs, the reject bin and the
//! manifest.
//!
//! Data flow of a run ([`run_pipeline`]): parse → plan each `INSERT` (lower to a chain of
//! operators, or in batch mode hand non-streamable queries to DataFusion) → open sinks → read
//! each source once (reader threads decode files, in file order, through a bounded channel) and
//! push every batch, then its watermark, through every chain fed by that source → at end of
//! input push the maximum watermark → commit sinks → append the manifest record.
//!
//! Invariants: operators are synchronous and see messages in source order; watermarks never go
//! backwards; every rejected row is written to the reject bin with its reason; sinks publish
//! only at commit, so a failed run leaves the previous output in place.

pub mod checkpoint;
pub mod codec;
mod driver;
mod fallback;
mod functions;
pub mod manifest;
pub mod operators;
mod reader;
pub mod rejects;
mod rows;
pub mod status;
mod stream;

pub use driver::{parse_emit_interval, run_pipeline, OpenedPipeline, RunOptions, RunReport};
pub use flowline_core::plan::OutputMode;
pub use flowline_sql::Mode;
pub use status::{LiveStatus, StatusSnapshot};
pub use stream::Trigger;
