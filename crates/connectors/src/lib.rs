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
//! * **Atomic partition replace.** File sinks write into a private staging folder
//!   (`<path>/.staging-<run_id>/`) and publish only at [`Sink::commit`]: each written Hive
//!   partition folder replaces the folder of the same name, partitions not written by the run
//!   are left untouched, and an unpartitioned table's `part-*` files are replaced as a whole.
//!   File names are deterministic (`part-00000.<ext>`), so running a job twice leaves the same
//!   files with the same contents.

mod convert;
mod hive;
mod options;
pub use options::log_dir;
pub mod sink;
pub mod source;

pub use sink::{open_sink, validate_sink_options, Sink, SinkCommit, WrittenFile};
pub use source::{json_kind, Decoded, FileSource, SourceFile};
