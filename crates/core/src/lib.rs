//! Flowline's shared vocabulary: the messages that flow between operators, the plan the SQL
//! front end lowers to, the operator contract, table definitions, rejects and errors.
//!
//! Invariants kept by every crate:
//! * Control travels in-band with data ([`Message`]): an operator sees data, watermarks and the
//!   end of input in the order the source produced them.
//! * Watermarks never go backwards; a bounded input ends with [`Watermark::MAX`], so batch is a
//!   stream that ends.
//! * Nothing is silently dropped: a row that cannot be processed becomes a [`Reject`].

pub mod error;
pub mod functions;
pub mod message;
pub mod plan;
pub mod reject;
pub mod table;

pub use error::{Error, Fault, Result};
pub use message::{Message, Operator, Output, Watermark};
pub use reject::{Reject, RejectReason};
pub use table::{ColumnDef, ComputedColumn, ComputedExpr, TableDef, WatermarkDef};
