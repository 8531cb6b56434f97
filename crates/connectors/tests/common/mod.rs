//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::DataType;
use flowline_connectors::FileSource;
use flowline_core::{ColumnDef, Reject, TableDef, WatermarkDef};

pub fn table(name: &str, columns: &[(&str, DataType)], options: &[(&str, &str)]) -> TableDef {
    TableDef {
        name: name.into(),
        columns: columns
            .iter()
            .map(|(n, t)| ColumnDef {
                name: n.to_string(),
                data_type: t.clone(),
                nullable: true,
            })
            .collect(),
        computed: vec![],
        watermark: None,
        primary_key: vec![],
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        line: 1,
    }
}

pub fn with_watermark(mut def: TableDef, column: &str) -> TableDef {
    def.watermark = Some(WatermarkDef {
        column: column.into(),
        delay_ms: 1000,
    });
    def
}

/// Reads every file of `source`, returning the good rows as one batch and all rejects.
pub fn read_all(source: &FileSource, batch_size: usize) -> (RecordBatch, Vec<Reject>) {
    let mut batches = Vec::new();
    let mut rejects = Vec::new();
    for i in 0..source.files().len() {
        source
            .read_file(i, batch_size, &mut |d| {
                assert_eq!(d.batch.schema(), source.schema());
                assert!(d.batch.num_rows() <= batch_size);
                batches.push(d.batch);
                rejects.extend(d.rejects);
                Ok(())
            })
            .unwrap();
    }
    (concat_batches(&source.schema(), &batches).unwrap(), rejects)
}

pub fn open(def: &TableDef, base: &Path) -> FileSource {
    FileSource::open(def, base).unwrap()
}

pub fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, text).unwrap();
}
