//! Tables as declared by `CREATE TABLE ... WITH (...)`.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// A declared column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
}

/// `WATERMARK FOR column AS column - INTERVAL ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkDef {
    pub column: String,
    /// The declared out-of-orderness, in milliseconds.
    pub delay_ms: i64,
}

/// A table from `CREATE TABLE`: its columns (empty for a sink whose schema comes from the
/// query), its watermark, and its `WITH` options (keys lower-cased).
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    pub options: BTreeMap<String, String>,
    /// 1-based line of the `CREATE TABLE` in the pipeline file, for error messages.
    pub line: u64,
}

impl TableDef {
    pub fn schema(&self) -> SchemaRef {
        std::sync::Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    pub fn connector(&self) -> Option<&str> {
        self.option("connector")
    }
}
