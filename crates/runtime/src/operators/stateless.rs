//! Filter and projection: DataFusion physical expressions evaluated per batch.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use flowline_core::{Error, Message, Operator, Output, Result};

pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Filter { predicate }
    }
}

impl Filter {
    /// The rows of `batch` for which the predicate is true (a NULL predicate keeps nothing, as
    /// in SQL).
    fn keep(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let mask = self
            .predicate
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let mask = mask
            .as_boolean_opt()
            .ok_or_else(|| Error::Plan(format!("filter `{}` is not a boolean", self.predicate)))?;
        Ok(filter_record_batch(batch, mask)?)
    }
}

impl Operator for Filter {
    /// A retracted row is passed on if it matched: it was passed on when it was sent.
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => {
                let kept = self.keep(&batch)?;
                if kept.num_rows() > 0 {
                    out.emit(Message::Data(kept));
                }
            }
            Message::Retract(batch) => {
                let kept = self.keep(&batch)?;
                if kept.num_rows() > 0 {
                    out.emit(Message::Retract(kept));
                }
            }
            other => out.emit(other),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "filter"
    }
}

pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Project { exprs, schema }
    }
}

impl Project {
    fn project(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(e, f)| {
                let a = e.evaluate(batch)?.into_array(n)?;
                if a.data_type() == f.data_type() {
                    Ok(a)
                } else {
                    Ok(arrow::compute::cast(&a, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            crate::rows::relax_nullability(&self.schema, &columns),
            columns,
            &options,
        )?)
    }
}

impl Operator for Project {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => out.emit(Message::Data(self.project(&batch)?)),
            Message::Retract(batch) => out.emit(Message::Retract(self.project(&batch)?)),
            other => out.emit(other),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "project"
    }
}
