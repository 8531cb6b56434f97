//! flowline-connectors: where rows come from (file sources) and where they go (sinks).
//!
//! # Invariants
//!
//! * **Transport × format.** A connector is a transport (`connector = 'files'`, `'print'`)
//!   combined with a format (`csv`, `json`, `parquet`, or `table`/`json` for print). Listing,
//!   Hive partitions and staging belong to the transport; decoding and encoding belong to the
//!   format. Every source format produces its text or typed columns and hands them to one shared
//!   conversion step (`convert`), so type conversion, NULL handling and reject reasons are the
//!   same for every format.
//! * **Rejects are never lost.** A row that cannot be decoded (a malformed CSV record, a line
//!   that is not a JSON object, a value that does not convert to its column's type, an empty
//!   event time, a NULL in a `NOT NULL` column) is removed from the batch and returned as a
//!   [`flowline_core::Reject`] with the table, the file, the 1-based line (or row) and the raw
//!   text. Reading never fails because of a row; only a whole input that cannot be read at all
//!   (not a Parquet file, a declared column absent from the file) is an error.
//! * **Batches are exact.** Every batch a source emits has exactly the declared schema and holds
//!   only good rows.
//! * **Two-phase sinks.** A sink publishes in two steps: [`Sink::prepare`] makes what was
//!   written since the last prepare durable but invisible and returns a [`Prepared`] (stored by
//!   the runtime in its checkpoint); [`Sink::publish`] makes it visible and is idempotent, so a
//!   newly opened sink can publish it again after a crash. [`Sink::commit`] (batch) is prepare
//!   then publish. Readers never see partial output: files are written under hidden staging
//!   names and renamed into place; log records are appended only at publish.
//! * **Run mode: atomic partition replace.** In [`SinkMode::Run`] (batch), file sinks write into
//!   a private staging folder (`<path>/.staging-<run_id>/`) and publish only at commit: each
//!   written Hive partition folder replaces the folder of the same name, partitions not written
//!   by the run are left untouched, and an unpartitioned table's `part-*` files are replaced as a
//!   whole. File names are deterministic (`part-00000.<ext>`), so running a job twice leaves the
//!   same files with the same contents.
//! * **Epochs mode: exactly-once append.** In [`SinkMode::Epochs`] (stream), output is cut into
//!   checkpoint epochs and appended. File sinks stage in `<path>/.staging-<job>/` and publish an
//!   epoch's files as `part-<epoch:010>-0.<ext>` (in their partition folder) by rename; a file of
//!   another epoch is never deleted or replaced, and an empty epoch publishes nothing. The log
//!   sink stages an epoch's encoded records in a file in the job's staging folder and notes the
//!   base offset and record count per partition; publish appends exactly the records a partition
//!   does not have yet (all, the suffix left by a crash in the middle of a publish, or none) and
//!   fails if another writer changed the partition. [`open_sink`] publishes the `resume` epoch
//!   (the last completed checkpoint) first, then removes all other staged output of the job; the
//!   runtime replays later epochs under the same numbers, so nothing is published twice.
//! * **Log sink** (`connector = 'log'`, `log_sink.rs`): one record per row, JSON (as the files
//!   sink's JSON lines) or CSV (no header); `key.fields` give the key (one field: its text; several:
//!   a JSON array) and the partition (Kafka's hash); rows without key go to
//!   `row index within the epoch % partitions`, so replays land identically. The sink holds
//!   every partition's writer (file lock) for its whole life.

mod computed;
mod convert;
mod hive;
mod json_row;
mod log_sink;
pub mod log_source;
mod needed;
pub mod nexmark;
pub mod nexmark_source;
mod options;
pub use options::log_dir;
pub mod serving;
pub mod sink;
pub mod source;

pub use json_row::json_kind;
pub use log_source::{LogSource, Startup};
pub use needed::Needed;
pub use nexmark_source::NexmarkSource;
pub use sink::{
    open_sink, validate_sink_options, Prepared, PreparedFile, PreparedPartition, Sink, SinkCommit,
    SinkContext, SinkMode, TimeRange, WrittenFile,
};
pub use source::{BoundedSource, Decoded, FileSource, SourceFile};
