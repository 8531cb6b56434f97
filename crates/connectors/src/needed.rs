//! What a pipeline reads of a source: which declared columns, and of a `ROW` column, which of its
//! fields. Sources skip what is not read where their format allows (Parquet leaves unread
//! columns undecoded; the Nexmark generator leaves unread `extra` padding empty).
//!
//! Invariants: a column or field counts as read unless every expression that mentions it was
//! shown not to: any use other than `col.field` (a `get_field` with a literal name) reads the
//! whole column, and a source given no [`Needed`] reads everything. Where an operator may reject
//! a source row whole (a window over the source itself: late rows), every field of every ROW
//! counts as read ([`Needed::keep_row_fields`]), so the reject shows the row as it came.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::scalar::ScalarValue;

/// How one declared column is read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ColumnUse {
    Unread,
    /// Only these fields of a `ROW` column.
    Fields(BTreeSet<String>),
    Whole,
}

/// The columns (and `ROW` fields) of a source's declared schema that a pipeline reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    columns: Vec<ColumnUse>,
    /// Every field of every ROW counts as read.
    whole_rows: bool,
}

impl Needed {
    /// Nothing of a schema of `width` columns is read yet.
    pub fn none(width: usize) -> Needed {
        Needed {
            columns: vec![ColumnUse::Unread; width],
            whole_rows: false,
        }
    }

    /// Every column of a schema of `width` columns is read.
    pub fn all(width: usize) -> Needed {
        Needed {
            columns: vec![ColumnUse::Whole; width],
            whole_rows: true,
        }
    }

    /// Column `i` is read whole.
    pub fn add_column(&mut self, i: usize) {
        *self.slot(i) = ColumnUse::Whole;
    }

    /// Field `name` of column `i` is read.
    pub fn add_field(&mut self, i: usize, name: &str) {
        match self.slot(i) {
            c @ ColumnUse::Unread => *c = ColumnUse::Fields(BTreeSet::from([name.into()])),
            ColumnUse::Fields(fields) => {
                fields.insert(name.into());
            }
            ColumnUse::Whole => {}
        }
    }

    /// Column `i`'s use. Columns past the width (a window's, added after the source's) are
    /// recorded too; a source never asks about them.
    fn slot(&mut self, i: usize) -> &mut ColumnUse {
        if i >= self.columns.len() {
            self.columns.resize(i + 1, ColumnUse::Unread);
        }
        &mut self.columns[i]
    }

    /// Whatever `expr` (over the declared schema) reads.
    pub fn add_expr(&mut self, expr: &Arc<dyn PhysicalExpr>) {
        if let Some((column, field)) = field_access(expr) {
            self.add_field(column, field);
            return;
        }
        if let Some(c) = (expr.as_ref() as &dyn Any).downcast_ref::<Column>() {
            self.add_column(c.index());
            return;
        }
        for child in expr.children() {
            self.add_expr(child);
        }
    }

    /// Rows may be rejected whole before anything drops a field: every field of every ROW
    /// counts as read (columns not read at all still do not).
    pub fn keep_row_fields(&mut self) {
        self.whole_rows = true;
    }

    /// Everything `other` reads too.
    pub fn merge(&mut self, other: &Needed) {
        self.whole_rows |= other.whole_rows;
        for (i, c) in other.columns.iter().enumerate() {
            match c {
                ColumnUse::Unread => {}
                ColumnUse::Whole => self.add_column(i),
                ColumnUse::Fields(fields) => fields.iter().for_each(|f| self.add_field(i, f)),
            }
        }
    }

    /// The uses of columns `0..width` moved to `to(i)` (dropped where `None`).
    pub(crate) fn remap(&self, width: usize, to: impl Fn(usize) -> Option<usize>) -> Needed {
        let mut out = Needed::none(0);
        out.whole_rows = self.whole_rows;
        for i in 0..width {
            let Some(j) = to(i) else { continue };
            match self.columns.get(i).unwrap_or(&ColumnUse::Whole) {
                ColumnUse::Unread => {
                    out.slot(j);
                }
                ColumnUse::Whole => out.add_column(j),
                ColumnUse::Fields(fields) => fields.iter().for_each(|f| out.add_field(j, f)),
            }
        }
        out
    }

    /// Whether column `i` is read at all (true past the recorded columns).
    pub fn reads(&self, i: usize) -> bool {
        self.columns.get(i) != Some(&ColumnUse::Unread)
    }

    /// Whether field `name` of column `i` is read.
    pub fn reads_field(&self, i: usize, name: &str) -> bool {
        if self.whole_rows {
            return true;
        }
        match self.columns.get(i) {
            Some(ColumnUse::Unread) => false,
            Some(ColumnUse::Fields(fields)) => fields.contains(name),
            Some(ColumnUse::Whole) | None => true,
        }
    }
}

/// `col.field` (DataFusion's `get_field(col, 'field')`, also with further names for deeper
/// fields): the column's index and the first field name.
fn field_access(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, &str)> {
    let f = (expr.as_ref() as &dyn Any).downcast_ref::<ScalarFunctionExpr>()?;
    if f.name() != "get_field" {
        return None;
    }
    let [base, name, ..] = f.args() else {
        return None;
    };
    let column = (base.as_ref() as &dyn Any).downcast_ref::<Column>()?;
    match (name.as_ref() as &dyn Any)
        .downcast_ref::<Literal>()?
        .value()
    {
        ScalarValue::Utf8(Some(n))
        | ScalarValue::LargeUtf8(Some(n))
        | ScalarValue::Utf8View(Some(n)) => Some((column.index(), n.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Fields, Schema};
    use datafusion::common::DFSchema;
    use datafusion::prelude::SessionContext;

    fn planned(sql: &str, schema: &Schema) -> Arc<dyn PhysicalExpr> {
        let ctx = SessionContext::new();
        let df = DFSchema::try_from(schema.clone()).unwrap();
        let expr = ctx.parse_sql_expr(sql, &df).unwrap();
        ctx.create_physical_expr(expr, &df).unwrap()
    }

    #[test]
    fn fields_of_rows_are_told_apart_from_whole_columns() {
        let row = DataType::Struct(Fields::from(vec![
            Field::new("price", DataType::Int64, true),
            Field::new("extra", DataType::Utf8, true),
        ]));
        let schema = Schema::new(vec![
            Field::new("kind", DataType::Int32, true),
            Field::new("bid", row.clone(), true),
            Field::new("person", row, true),
        ]);
        let mut needed = Needed::none(3);
        needed.add_expr(&planned(
            "CASE WHEN kind = 2 THEN bid.price * 2 END",
            &schema,
        ));
        assert!(needed.reads(0) && needed.reads(1) && !needed.reads(2));
        assert!(needed.reads_field(1, "price"));
        assert!(!needed.reads_field(1, "extra"));
        assert!(!needed.reads_field(2, "price"));

        // A use of the whole ROW reads every field, whatever else is read.
        let mut whole = Needed::none(3);
        whole.add_expr(&planned("person IS NULL", &schema));
        whole.add_expr(&planned("person.price", &schema));
        assert!(whole.reads_field(2, "extra"));
        needed.merge(&whole);
        assert!(needed.reads_field(2, "extra") && !needed.reads_field(1, "extra"));

        // Columns past the schema (a window's) are recorded; unknown ones count as read.
        needed.add_column(7);
        assert!(needed.reads(7) && !needed.reads(5) && needed.reads(9));
        assert!(Needed::all(1).reads_field(0, "x"));

        // Rows rejected whole keep every field, of every ROW.
        let mut kept = Needed::none(3);
        kept.add_field(1, "price");
        let mut other = Needed::none(3);
        other.keep_row_fields();
        kept.merge(&other);
        assert!(kept.reads_field(1, "extra") && kept.reads_field(2, "extra"));
        assert!(!kept.reads(2));
        assert!(kept.remap(3, Some).reads_field(1, "extra"));
    }
}
