//! Computed columns (`name AS <expression>` and `name AS PROCTIME()` in `CREATE TABLE`): planned
//! once when a source opens, evaluated on every decoded batch, before the event time is read, so
//! a watermark may be declared on a computed column (Nexmark's `dateTime AS CASE ... END`).
//!
//! Invariants: expressions see the physical columns only (as in Flink, a computed column cannot
//! use another computed column); a row whose expression fails becomes a `bad-value` reject naming
//! the column and the error, every other row of its batch is kept; `PROCTIME()` is the wall
//! clock when the batch was decoded (`TIMESTAMP_LTZ(3)`), so it differs between runs by nature.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use flowline_core::{ComputedExpr, Error, RejectReason, Result, TableDef};

use crate::convert::Failures;
use crate::needed::Needed;

enum Kind {
    Expr(Arc<dyn PhysicalExpr>),
    ProcTime,
}

struct Column {
    name: String,
    kind: Kind,
    /// The type of its values (for the NULL of a row whose expression fails).
    data_type: DataType,
}

/// The computed columns of one table and the schema of its rows with them.
pub(crate) struct ComputedColumns {
    columns: Vec<Column>,
    /// For each output column: `Ok(i)` physical column `i`, `Err(j)` computed column `j`.
    layout: Vec<std::result::Result<usize, usize>>,
    output: SchemaRef,
}

impl ComputedColumns {
    /// Plans `def`'s computed columns against its physical schema; `None` when it has none.
    /// A bad expression (unknown column, function or type) is an error naming the column.
    pub(crate) fn plan(def: &TableDef) -> Result<Option<ComputedColumns>> {
        if def.computed.is_empty() {
            return Ok(None);
        }
        let physical = def.schema();
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        let ctx = SessionContext::new_with_config(config);
        flowline_core::functions::register_flink_functions(&ctx);
        let df_schema = DFSchema::try_from(physical.as_ref().clone())?;
        let mut columns = vec![];
        let mut fields: Vec<(usize, Field)> = vec![];
        for c in &def.computed {
            let problem =
                |m: String| Error::option(&def.name, format!("computed column `{}`: {m}", c.name));
            let (kind, field) = match &c.expr {
                ComputedExpr::ProcTime => (
                    Kind::ProcTime,
                    Field::new(
                        &c.name,
                        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                        false,
                    ),
                ),
                ComputedExpr::Sql(sql) => {
                    let expr = ctx
                        .parse_sql_expr(sql, &df_schema)
                        .map_err(|e| problem(format!("`{sql}`: {}", Error::from(e))))?;
                    let physical_expr = ctx
                        .create_physical_expr(expr, &df_schema)
                        .map_err(|e| problem(format!("`{sql}`: {}", Error::from(e))))?;
                    let data_type = physical_expr
                        .data_type(&physical)
                        .map_err(|e| problem(Error::from(e).to_string()))?;
                    let nullable = physical_expr.nullable(&physical).unwrap_or(true);
                    (
                        Kind::Expr(physical_expr),
                        Field::new(&c.name, data_type, nullable),
                    )
                }
            };
            columns.push(Column {
                name: c.name.clone(),
                kind,
                data_type: field.data_type().clone(),
            });
            fields.push((c.position, field));
        }
        let total = physical.fields().len() + columns.len();
        let mut layout = Vec::with_capacity(total);
        let mut out_fields = Vec::with_capacity(total);
        let (mut p, mut k) = (0, 0);
        for position in 0..total {
            if k < fields.len() && fields[k].0 == position {
                layout.push(Err(k));
                out_fields.push(fields[k].1.clone());
                k += 1;
            } else if p < physical.fields().len() {
                layout.push(Ok(p));
                out_fields.push(physical.field(p).clone());
                p += 1;
            } else {
                // Positions come from the parser in order; anything else is a bug.
                return Err(Error::Internal(format!(
                    "table `{}`: computed column positions out of order",
                    def.name
                )));
            }
        }
        Ok(Some(ComputedColumns {
            columns,
            layout,
            output: Arc::new(Schema::new(out_fields)),
        }))
    }

    /// What converting a batch reads of the physical columns when the pipeline reads `needed`
    /// of the declared ones: those, and whatever the computed columns' expressions read.
    pub(crate) fn physical_needed(&self, needed: &Needed) -> Needed {
        let mut physical = needed.remap(self.layout.len(), |i| self.layout[i].ok());
        for column in &self.columns {
            if let Kind::Expr(e) = &column.kind {
                physical.add_expr(e);
            }
        }
        physical
    }

    /// Every column, physical and computed, in declared order.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.output
    }

    /// Adds the computed columns to the converted physical `columns` of `rows` rows. A row whose
    /// expression fails is recorded in `failures` (its computed value is NULL).
    pub(crate) fn apply(
        &self,
        physical: &SchemaRef,
        columns: Vec<ArrayRef>,
        rows: usize,
        failures: &mut Failures,
    ) -> Result<Vec<ArrayRef>> {
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        let input = RecordBatch::try_new_with_options(Arc::clone(physical), columns, &options)?;
        let mut computed = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let array = match &column.kind {
                Kind::ProcTime => {
                    let now = chrono::Utc::now().timestamp_millis();
                    Arc::new(TimestampMillisecondArray::from_value(now, rows).with_timezone("UTC"))
                        as ArrayRef
                }
                Kind::Expr(expr) => match evaluate(expr, &input) {
                    Ok(a) => a,
                    // Find the rows that fail, one at a time; the others keep their values.
                    Err(_) => {
                        let mut parts = Vec::with_capacity(rows);
                        for row in 0..rows {
                            match evaluate(expr, &input.slice(row, 1)) {
                                Ok(a) => parts.push(a),
                                Err(e) => {
                                    failures.set(
                                        row,
                                        RejectReason::BadValue,
                                        format!("computed column `{}`: {e}", column.name),
                                    );
                                    parts.push(new_null_array(&column.data_type, 1));
                                }
                            }
                        }
                        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                        arrow::compute::concat(&refs)?
                    }
                },
            };
            computed.push(array);
        }
        Ok(self
            .layout
            .iter()
            .map(|slot| match slot {
                Ok(i) => Arc::clone(input.column(*i)),
                Err(j) => Arc::clone(&computed[*j]),
            })
            .collect())
    }
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}
