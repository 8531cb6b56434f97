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

/// A computed column: `name AS <expression>` in `CREATE TABLE`. Sources compute it from the
/// physical columns of every row they decode, so the event time may be one.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedColumn {
    pub name: String,
    pub expr: ComputedExpr,
    /// Its index among all the table's columns (physical and computed), in declared order.
    pub position: usize,
}

/// What a computed column holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ComputedExpr {
    /// A SQL expression over the physical columns, as written.
    Sql(String),
    /// `PROCTIME()`: the wall-clock time the row was read, `TIMESTAMP_LTZ(3)`.
    ProcTime,
}

/// A table from `CREATE TABLE`: its columns (empty for a sink whose schema comes from the
/// query), its watermark, and its `WITH` options (keys lower-cased).
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    /// The physical columns: what a source decodes. [`TableDef::computed`] columns come on top.
    pub columns: Vec<ColumnDef>,
    pub computed: Vec<ComputedColumn>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    pub options: BTreeMap<String, String>,
    /// 1-based line of the `CREATE TABLE` in the pipeline file, for error messages.
    pub line: u64,
}

impl TableDef {
    /// The schema of the physical columns (without computed columns).
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

    /// Whether reading the table ends: files, the Nexmark generator, or a log read up to the offsets at start
    /// (`'scan.bounded.mode' = 'latest-offset'`).
    pub fn is_bounded(&self) -> bool {
        match self.connector() {
            Some("files" | "nexmark") => true,
            Some("log") => self.option("scan.bounded.mode") == Some("latest-offset"),
            _ => false,
        }
    }
}
