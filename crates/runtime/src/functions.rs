//! SQL functions Flowline adds to DataFusion's: `RESERVOIR_SAMPLE(x, k)`, an aggregate that
//! returns up to `k` values of `x` chosen uniformly at random (non-NULL values; fewer than `k`
//! values: all of them), as an array. The dataflow's aggregate runs it itself (see
//! [`operators`](crate::operators)); this DataFusion implementation plans it, and runs it when a
//! batch query runs on DataFusion.
//!
//! The randomness is seeded with a constant, so a run over the same input in the same order
//! picks the same sample; merged partial samples are uniform over the union.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use arrow::datatypes::{DataType, Field, FieldRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::{exec_err, plan_err, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::prelude::SessionContext;

use crate::operators::sketch::Reservoir;

/// The seed of every sample's randomness.
pub(crate) const SAMPLE_SEED: u64 = 0x5a3b_1e5d;

/// The session every pipeline is planned and (in batch fallback) run in: Flowline's dialect
/// settings and functions.
pub fn session() -> SessionContext {
    let ctx = flowline_sql::new_session();
    ctx.register_udaf(AggregateUDF::from(ReservoirSample::new()));
    ctx
}

/// The list type a sample of `item` values has.
pub(crate) fn sample_type(item: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item.clone(), true)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ReservoirSample {
    signature: Signature,
}

impl ReservoirSample {
    fn new() -> Self {
        ReservoirSample {
            signature: Signature::any(2, Volatility::Volatile),
        }
    }
}

/// `k` of `reservoir_sample(x, k)`, checked as the planner does.
fn sample_size(k: &ScalarValue) -> datafusion::common::Result<usize> {
    flowline_sql::reservoir_sample_size(k).or_else(|e| plan_err!("{e}"))
}

impl AggregateUDFImpl for ReservoirSample {
    fn name(&self) -> &str {
        "reservoir_sample"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        match arg_types {
            [item, _] => Ok(sample_type(item)),
            _ => plan_err!("RESERVOIR_SAMPLE takes two arguments: a value and the sample size"),
        }
    }

    fn accumulator(
        &self,
        args: AccumulatorArgs<'_>,
    ) -> datafusion::common::Result<Box<dyn Accumulator>> {
        let k = match args
            .exprs
            .get(1)
            .and_then(|e| (e.as_ref() as &dyn std::any::Any).downcast_ref::<Literal>())
        {
            Some(literal) => sample_size(literal.value())?,
            None => return plan_err!("RESERVOIR_SAMPLE(x, k): k must be a literal"),
        };
        let item = args.exprs[0].data_type(args.schema)?;
        Ok(Box::new(SampleAccumulator {
            converter: RowConverter::new(vec![SortField::new(item.clone())])?,
            item,
            reservoir: Reservoir::new(k, SAMPLE_SEED),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> datafusion::common::Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[reservoir]", args.name),
            DataType::Binary,
            true,
        ))])
    }
}

#[derive(Debug)]
struct SampleAccumulator {
    item: DataType,
    converter: RowConverter,
    reservoir: Reservoir,
}

impl Accumulator for SampleAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> datafusion::common::Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        let rows = self
            .converter
            .convert_columns(std::slice::from_ref(values))?;
        for i in 0..values.len() {
            if values.is_valid(i) {
                self.reservoir.offer(rows.row(i).as_ref());
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> datafusion::common::Result<ScalarValue> {
        let parser = self.converter.parser();
        let rows = self.reservoir.values().iter().map(|v| parser.parse(v));
        let mut columns = self.converter.convert_rows(rows)?;
        let values = columns
            .pop()
            .unwrap_or_else(|| arrow::array::new_empty_array(&self.item));
        Ok(ScalarValue::List(Arc::new(
            arrow::array::ListArray::try_new(
                Arc::new(Field::new("item", self.item.clone(), true)),
                arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                values,
                None,
            )?,
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.reservoir.heap_bytes()
    }

    fn state(&mut self) -> datafusion::common::Result<Vec<ScalarValue>> {
        let mut bytes = vec![];
        self.reservoir.write(&mut bytes);
        Ok(vec![ScalarValue::Binary(Some(bytes))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> datafusion::common::Result<()> {
        let Some(states) = states.first() else {
            return Ok(());
        };
        let states: &BinaryArray = states.as_binary();
        for bytes in states.iter().flatten() {
            match Reservoir::read(bytes) {
                Ok((other, _)) => self.reservoir.merge(other),
                Err(e) => return exec_err!("RESERVOIR_SAMPLE state: {e}"),
            }
        }
        Ok(())
    }
}
