//! Synchronous operators over Arrow record batches. Each implements
//! [`flowline_core::Operator`]; [`build`] instantiates one from a plan node.

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
