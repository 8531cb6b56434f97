//! Rewrites of the filter and projection runs of a lowered chain, so stateless rows move less:
//!
//! * **Pruning.** A projection whose outputs the next filters and projection do not all use
//!   drops the unused ones (a view's `SELECT bid.extra AS extra` that the query never reads). The
//!   source then learns that the column or `ROW` field is unread (`Needed`), and nothing copies it.
//! * **Projecting before filtering.** `filter p → project e`, where `e` only names columns and
//!   `ROW` fields (at least one field), becomes `project e, p → filter on p → project e`: naming a column costs
//!   nothing, and the filter then copies the few projected columns instead of every input column
//!   (every field of every `ROW`).
//!
//! Invariants: the chain's output (its last node's schema and values) is unchanged, and only
//! runs of filters and projections are rewritten, so every other node sees the same columns at
//! the same indices. Only a projection followed by filters and then another projection is
//! pruned, never one that feeds a window or any other operator: those reject late rows with
//! every column of their input, and the reject shows the row as the query saw it.
//!
//! Parquet sources do not decode columns a pipeline never reads (see `Needed`), so a bad value
//! in a view column the query drops no longer rejects its row there; CSV and JSON convert every
//! column, so their rejects never depend on the query.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use flowline_core::plan::Node;
use flowline_core::Result;

/// Applies both rewrites to `nodes`.
pub(crate) fn optimize(nodes: &mut Vec<Node>) -> Result<()> {
    prune_projections(nodes)?;
    project_before_filter(nodes);
    Ok(())
}

/// Drops the outputs of each projection that the filters after it and the next projection do
/// not use, from the last projection backwards (so a pruned projection can prune the one before
/// it).
fn prune_projections(nodes: &mut [Node]) -> Result<()> {
    for at in (0..nodes.len()).rev() {
        let Node::Project { exprs, .. } = &nodes[at] else {
            continue;
        };
        let width = exprs.len();
        // The filters up to the next projection, which must exist: anything else may use any
        // column (and the chain's output keeps every column).
        let Some(next) = nodes[at + 1..]
            .iter()
            .position(|n| !matches!(n, Node::Filter { .. }))
            .map(|i| at + 1 + i)
        else {
            continue;
        };
        if !matches!(nodes[next], Node::Project { .. }) {
            continue;
        }
        let mut used = BTreeSet::new();
        for node in &nodes[at + 1..=next] {
            for e in node_exprs(node) {
                used.extend(collect_columns(e).iter().map(Column::index));
            }
        }
        if used.len() == width {
            continue;
        }
        // Old index -> new index of each kept output.
        let kept: Vec<usize> = used.into_iter().filter(|&i| i < width).collect();
        let mut new_index = vec![None; width];
        for (new, &old) in kept.iter().enumerate() {
            new_index[old] = Some(new);
        }
        if let Node::Project { exprs, schema } = &mut nodes[at] {
            *exprs = kept.iter().map(|&i| Arc::clone(&exprs[i])).collect();
            let fields: Vec<Field> = kept.iter().map(|&i| schema.field(i).clone()).collect();
            *schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        }
        for node in &mut nodes[at + 1..=next] {
            for e in node_exprs_mut(node) {
                *e = renumber(e, &new_index)?;
            }
        }
    }
    Ok(())
}

/// `filter p → project e` (with `e` only columns and `ROW` fields) becomes `project e, p →
/// filter on p → project e`.
fn project_before_filter(nodes: &mut Vec<Node>) {
    let mut at = 0;
    while at + 1 < nodes.len() {
        let fits = matches!(
            (&nodes[at], &nodes[at + 1]),
            (Node::Filter { .. }, Node::Project { exprs, .. })
                if exprs.iter().all(names_a_value) && exprs.iter().any(is_field_access)
        );
        if !fits {
            at += 1;
            continue;
        }
        let Node::Filter { predicate } = nodes[at].clone() else {
            unreachable!("matched above")
        };
        let Node::Project { exprs, schema } = nodes[at + 1].clone() else {
            unreachable!("matched above")
        };
        let n = exprs.len();
        let mut with_mask = exprs;
        with_mask.push(predicate);
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
        fields.push(Field::new("__filter", DataType::Boolean, true));
        let masked = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let columns: Vec<Arc<dyn PhysicalExpr>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        nodes.splice(
            at..at + 2,
            [
                Node::Project {
                    exprs: with_mask,
                    schema: masked,
                },
                Node::Filter {
                    predicate: Arc::new(Column::new("__filter", n)),
                },
                Node::Project {
                    exprs: columns,
                    schema,
                },
            ],
        );
        at += 3;
    }
}

/// `col.field`: a filter before it would copy every field of the ROW.
fn is_field_access(expr: &Arc<dyn PhysicalExpr>) -> bool {
    (expr.as_ref() as &dyn Any)
        .downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|f| f.name() == "get_field")
}

/// A column, a literal, or a field of a column: cheap to evaluate on rows the filter then drops
/// (a field of a ROW is its child array, shared; a literal is one value repeated).
fn names_a_value(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let any = expr.as_ref() as &dyn Any;
    if any.is::<Column>() || any.is::<Literal>() {
        return true;
    }
    any.downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|f| f.name() == "get_field" && f.args().iter().all(names_a_value))
}

fn node_exprs(node: &Node) -> Vec<&Arc<dyn PhysicalExpr>> {
    match node {
        Node::Filter { predicate } => vec![predicate],
        Node::Project { exprs, .. } => exprs.iter().collect(),
        _ => vec![],
    }
}

fn node_exprs_mut(node: &mut Node) -> Vec<&mut Arc<dyn PhysicalExpr>> {
    match node {
        Node::Filter { predicate } => vec![predicate],
        Node::Project { exprs, .. } => exprs.iter_mut().collect(),
        _ => vec![],
    }
}

/// `expr` with each column `i` renumbered `new_index[i]` (every column it names is kept).
fn renumber(
    expr: &Arc<dyn PhysicalExpr>,
    new_index: &[Option<usize>],
) -> Result<Arc<dyn PhysicalExpr>> {
    let renumbered = Arc::clone(expr).transform_up(|e| {
        let Some(c) = (e.as_ref() as &dyn Any).downcast_ref::<Column>() else {
            return Ok(Transformed::no(e));
        };
        let i = new_index
            .get(c.index())
            .copied()
            .flatten()
            .expect("a used column is kept");
        Ok(Transformed::yes(Arc::new(Column::new(c.name(), i)) as _))
    })?;
    Ok(renumbered.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray, StructArray};
    use arrow::datatypes::Fields;
    use datafusion::common::DFSchema;
    use datafusion::prelude::SessionContext;

    fn expr(sql: &str, schema: &Schema) -> Arc<dyn PhysicalExpr> {
        let ctx = SessionContext::new();
        let df = DFSchema::try_from(schema.clone()).unwrap();
        let e = ctx.parse_sql_expr(sql, &df).unwrap();
        ctx.create_physical_expr(e, &df).unwrap()
    }

    fn project(sqls: &[&str], names: &[&str], input: &Schema) -> Node {
        let exprs: Vec<_> = sqls.iter().map(|s| expr(s, input)).collect();
        let fields: Vec<Field> = exprs
            .iter()
            .zip(names)
            .map(|(e, n)| Field::new(*n, e.data_type(input).unwrap(), true))
            .collect();
        Node::Project {
            exprs,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn output_schema(node: &Node) -> Schema {
        match node {
            Node::Project { schema, .. } => schema.as_ref().clone(),
            _ => unreachable!(),
        }
    }

    /// Runs filter and projection nodes over `batch`, as the operators do.
    fn run(nodes: &[Node], batch: RecordBatch) -> RecordBatch {
        nodes.iter().fold(batch, |b, node| match node {
            Node::Filter { predicate } => {
                let mask = predicate
                    .evaluate(&b)
                    .unwrap()
                    .into_array(b.num_rows())
                    .unwrap();
                let mask = mask
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .unwrap();
                arrow::compute::filter_record_batch(&b, mask).unwrap()
            }
            Node::Project { exprs, schema } => {
                let columns = exprs
                    .iter()
                    .map(|e| e.evaluate(&b).unwrap().into_array(b.num_rows()).unwrap())
                    .collect();
                RecordBatch::try_new(Arc::clone(schema), columns).unwrap()
            }
            _ => unreachable!(),
        })
    }

    #[test]
    fn unused_outputs_are_pruned_and_filters_move_after_projections() {
        // A Nexmark-like source: kind, and a ROW with a price and a padding string.
        let row = Fields::from(vec![
            Field::new("price", DataType::Int64, true),
            Field::new("extra", DataType::Utf8, true),
        ]);
        let source = Schema::new(vec![
            Field::new("kind", DataType::Int64, true),
            Field::new("bid", DataType::Struct(row.clone()), true),
        ]);
        let bids = StructArray::new(
            row,
            vec![
                Arc::new(Int64Array::from(vec![10, 20, 30, 40])),
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
            ],
            None,
        );
        let batch = RecordBatch::try_new(
            Arc::new(source.clone()),
            vec![Arc::new(Int64Array::from(vec![2, 1, 2, 2])), Arc::new(bids)],
        )
        .unwrap();
        // The view: filter kind = 2, project price and extra; the query: filter price > 10,
        // project price * 2.
        let view = project(&["bid.price", "bid.extra"], &["price", "extra"], &source);
        let view_schema = output_schema(&view);
        let nodes = vec![
            Node::Filter {
                predicate: expr("kind = 2", &source),
            },
            view,
            Node::Filter {
                predicate: expr("price > 10", &view_schema),
            },
            project(&["price * 2"], &["doubled"], &view_schema),
        ];
        let expected = run(&nodes, batch.clone());
        let mut optimized = nodes.clone();
        optimize(&mut optimized).unwrap();
        let text: Vec<String> = optimized
            .iter()
            .map(|n| match n {
                Node::Filter { predicate } => format!("filter {predicate}"),
                Node::Project { exprs, .. } => format!(
                    "project {}",
                    exprs
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            text,
            [
                "project get_field(bid@1, price), kind@0 = 2",
                "filter __filter@1",
                "project price@0",
                "filter price@0 > 10",
                "project price@0 * 2",
            ]
        );
        assert_eq!(run(&optimized, batch), expected);
        assert_eq!(expected.num_rows(), 2);
    }

    #[test]
    fn projections_that_compute_or_feed_other_nodes_are_kept() {
        let source = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]);
        // The last projection (the chain's output) keeps every column, and a computing
        // projection stays after its filter.
        let nodes = vec![
            Node::Filter {
                predicate: expr("a > 1", &source),
            },
            project(&["a + b", "b"], &["s", "b"], &source),
        ];
        let mut optimized = nodes.clone();
        optimize(&mut optimized).unwrap();
        assert_eq!(optimized.len(), 2);
        assert!(matches!(&optimized[1], Node::Project { exprs, .. } if exprs.len() == 2));
    }
}
