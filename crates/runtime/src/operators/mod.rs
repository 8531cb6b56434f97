//! Synchronous operators over Arrow record batches. Each implements
//! [`flowline_core::Operator`]; [`build`] instantiates one from a plan node.
//!
//! * `stateless.rs`: filter, project (both pass retractions through).
//! * `window.rs`: window assignment (TUMBLE, HOP, CUMULATE, SESSION).
//! * `aggregate.rs`: aggregate per window or over all input, append or update; `sketch.rs`
//!   its HyperLogLog and reservoir sample; `session.rs` the SESSION aggregate; `retract.rs`
//!   the plain GROUP BY with retractions (under a HAVING or another aggregate).
//! * `rank.rs`: window Top-N; `top_n.rs`: whole-stream Top-N (update mode); `dedup.rs`:
//!   deduplication; `over.rs`: OVER aggregates (these two wait in `time_buffer.rs`).
//! * `join.rs`: interval, window and regular joins; `temporal.rs`: lookup and event-time
//!   temporal joins (`FOR SYSTEM_TIME AS OF`).

mod aggregate;
mod dedup;
mod join;
mod over;
mod rank;
mod retract;
mod session;
pub(crate) mod sketch;
mod stateless;
mod temporal;
mod time_buffer;
mod top_n;
pub(crate) mod window;

use flowline_core::plan::{AggregateSpec, AsOf, Node, WindowKind};
use flowline_core::{Operator, Result};

pub use aggregate::WindowAggregate;
pub use dedup::Deduplicate;
pub use join::StreamJoin;
pub use over::OverAggregate;
pub use rank::WindowRank;
pub use retract::RetractAggregate;
pub use session::SessionAggregate;
pub use stateless::{Filter, Project};
pub use temporal::{LookupJoin, TemporalJoin};
pub use top_n::TopN;
pub use window::{assign_windows, WindowAssign};

/// Instantiates the operator for a plan node. `table` names the pipeline's source, for rejects.
pub fn build(node: &Node, table: &str) -> Result<Box<dyn Operator>> {
    Ok(match node {
        Node::Filter { predicate } => Box::new(Filter::new(predicate.clone())),
        Node::Project { exprs, schema } => Box::new(Project::new(exprs.clone(), schema.clone())),
        Node::WindowAssign(spec) => Box::new(WindowAssign::new(spec.clone(), table)),
        Node::WindowAggregate(spec) if is_session(spec) => {
            Box::new(SessionAggregate::new(spec.clone(), table)?)
        }
        Node::WindowAggregate(spec) => Box::new(WindowAggregate::new(spec.clone(), table)?),
        Node::RetractAggregate(spec) => Box::new(RetractAggregate::new(spec.clone())?),
        Node::WindowRank(spec) => Box::new(WindowRank::new(spec.clone(), table)?),
        Node::OverAggregate(spec) => Box::new(OverAggregate::new(spec.clone(), table)?),
        Node::Join(spec) => match spec.as_of {
            Some(AsOf::ProcessingTime) => Box::new(LookupJoin::new(spec.clone())?),
            Some(AsOf::EventTime { .. }) => Box::new(TemporalJoin::new(spec.clone(), table)?),
            None => Box::new(StreamJoin::new(spec.clone(), table)?),
        },
        Node::Deduplicate(spec) => Box::new(Deduplicate::new(spec.clone(), table)?),
        Node::TopN(spec) => Box::new(TopN::new(spec.clone())?),
    })
}

/// Whether the aggregate is over SESSION windows (run by [`SessionAggregate`]).
pub fn is_session(spec: &AggregateSpec) -> bool {
    spec.window
        .is_some_and(|w| matches!(w.kind, WindowKind::Session { .. }))
}
