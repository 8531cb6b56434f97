//! Sinks: atomic file publishing, partition replacement, round trips, print output.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use common::{open, read_all, table};
use flowline_connectors::{open_sink, validate_sink_options, SinkCommit};
use flowline_core::{Error, TableDef};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("day", DataType::Date32, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]))
}

fn rows(days: &[i32], cities: &[&str], n: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Date32Array::from(days.to_vec())) as ArrayRef,
            Arc::new(StringArray::from(cities.to_vec())),
            Arc::new(Int64Array::from(n.to_vec())),
        ],
    )
    .unwrap()
}

fn files_sink(format: &str, partition_by: Option<&str>) -> TableDef {
    let mut options = vec![
        ("connector", "files"),
        ("path", "out/table"),
        ("format", format),
    ];
    if let Some(p) = partition_by {
        options.push(("partition-by", p));
    }
    table("out", &[], &options)
}

fn run(def: &TableDef, base: &Path, run_id: &str, batches: &[RecordBatch]) -> SinkCommit {
    let schema = batches.first().map_or_else(schema, |b| b.schema());
    let mut sink = open_sink(def, schema, base, run_id, Box::new(std::io::sink())).unwrap();
    for b in batches {
        sink.write(b).unwrap();
    }
    sink.commit().unwrap()
}

/// Every file under `dir` (relative path → contents).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const D16: i32 = 20528; // 2026-03-16
const D17: i32 = 20529; // 2026-03-17

#[test]
fn partitioned_sink_replaces_only_the_partitions_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let root = base.join("out/table");
    let def = files_sink("csv", Some("day"));

    let commit = run(
        &def,
        base,
        "r1",
        &[
            rows(&[D16, D17], &["paris", "rome"], &[1, 2]),
            rows(&[D17], &["oslo"], &[3]),
        ],
    );
    assert_eq!(commit.rows, 3);
    let paths: Vec<_> = commit
        .files
        .iter()
        .map(|f| {
            (
                Path::new(&f.path)
                    .strip_prefix(&root)
                    .unwrap()
                    .display()
                    .to_string(),
                f.rows,
            )
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            ("day=2026-03-16/part-00000.csv".to_string(), 1),
            ("day=2026-03-17/part-00000.csv".to_string(), 2)
        ]
    );
    for f in &commit.files {
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.bytes);
    }
    let first = snapshot(&root);
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        vec![
            "day=2026-03-16/part-00000.csv",
            "day=2026-03-17/part-00000.csv"
        ]
    );
    assert_eq!(
        String::from_utf8_lossy(&first["day=2026-03-17/part-00000.csv"]),
        "city,n\nrome,2\noslo,3\n"
    );

    // A leftover from a crashed run, and a file of a partition this run does not write.
    std::fs::create_dir_all(root.join(".staging-crashed/data")).unwrap();
    std::fs::write(root.join("day=2026-03-17/stale.csv"), "city,n\nold,0\n").unwrap();

    // Second run: only 2026-03-17.
    let commit = run(&def, base, "r2", &[rows(&[D17], &["nice"], &[9])]);
    assert_eq!(commit.rows, 1);
    assert_eq!(commit.files.len(), 1);
    let second = snapshot(&root);
    assert_eq!(
        second.keys().cloned().collect::<Vec<_>>(),
        vec![
            "day=2026-03-16/part-00000.csv",
            "day=2026-03-17/part-00000.csv"
        ],
        "the written partition is replaced as a whole, staging leftovers are gone"
    );
    assert_eq!(
        second["day=2026-03-16/part-00000.csv"],
        first["day=2026-03-16/part-00000.csv"]
    );
    assert_eq!(
        String::from_utf8_lossy(&second["day=2026-03-17/part-00000.csv"]),
        "city,n\nnice,9\n"
    );

    // Running the same job again gives the same files.
    run(&def, base, "r3", &[rows(&[D17], &["nice"], &[9])]);
    assert_eq!(snapshot(&root), second);
}

#[test]
fn running_a_job_twice_gives_identical_files() {
    for format in ["csv", "json", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out/table");
        let def = files_sink(format, Some("day, city"));
        let input = [
            rows(&[D16, D17, D17], &["a/b", "c:d", "c:d"], &[1, 2, 3]),
            rows(&[D16], &["e"], &[4]),
        ];
        run(&def, dir.path(), "one", &input);
        let first = snapshot(&root);
        assert_eq!(
            first.keys().cloned().collect::<Vec<_>>(),
            vec![
                format!("day=2026-03-16/city=a%2Fb/part-00000.{format}"),
                format!("day=2026-03-16/city=e/part-00000.{format}"),
                format!("day=2026-03-17/city=c%3Ad/part-00000.{format}"),
            ]
        );
        run(&def, dir.path(), "two", &input);
        assert_eq!(snapshot(&root), first, "format {format}");
    }
}

#[test]
fn unpartitioned_sink_is_replaced_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out/table");
    let def = files_sink("csv", None);
    let commit = run(
        &def,
        dir.path(),
        "a",
        &[rows(&[D16, D17], &["x", "y"], &[1, 2])],
    );
    assert_eq!(commit.rows, 2);
    assert_eq!(commit.files.len(), 1);
    assert_eq!(
        commit.files[0].path,
        root.join("part-00000.csv").display().to_string()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("part-00000.csv")).unwrap(),
        "day,city,n\n2026-03-16,x,1\n2026-03-17,y,2\n"
    );
    // An older run wrote more files; a non-data file is left alone.
    std::fs::write(
        root.join("part-00001.csv"),
        "day,city,n\n2026-01-01,old,0\n",
    )
    .unwrap();
    std::fs::write(root.join("README"), "keep").unwrap();

    // A run that writes nothing leaves an empty table that still has its header.
    let mut sink = open_sink(&def, schema(), dir.path(), "b", Box::new(std::io::sink())).unwrap();
    let commit = sink.commit().unwrap();
    assert_eq!(commit.rows, 0);
    assert_eq!(commit.files.len(), 1);
    let snap = snapshot(&root);
    assert_eq!(
        snap.keys().cloned().collect::<Vec<_>>(),
        vec!["README", "part-00000.csv"]
    );
    assert_eq!(snap["part-00000.csv"], b"day,city,n\n");

    let source_def = table(
        "back",
        &[
            ("day", DataType::Date32),
            ("city", DataType::Utf8),
            ("n", DataType::Int64),
        ],
        &[
            ("connector", "files"),
            ("path", "out/table/part-00000.csv"),
            ("format", "csv"),
        ],
    );
    let (batch, rejects) = read_all(&open(&source_def, dir.path()), 10);
    assert_eq!(batch.num_rows(), 0);
    assert!(rejects.is_empty());

    // Parquet: an empty run still writes a file with the schema.
    let def = files_sink("parquet", None);
    run(&def, dir.path(), "c", &[]);
    let snap = snapshot(&root);
    assert_eq!(
        snap.keys().cloned().collect::<Vec<_>>(),
        vec!["README", "part-00000.parquet"]
    );
    let source_def = table(
        "back",
        &[("day", DataType::Date32), ("n", DataType::Int64)],
        &[
            ("connector", "files"),
            ("path", "out/table"),
            ("format", "parquet"),
        ],
    );
    let source = open(&source_def, dir.path());
    assert_eq!(source.files().len(), 2); // README is a file too, but it is not read here
    let mut rows_read = 0;
    source
        .read_file(1, 10, &mut |d| {
            rows_read += d.batch.num_rows();
            Ok(())
        })
        .unwrap();
    assert_eq!(rows_read, 0);
}

#[test]
fn abandoned_sink_leaves_no_staging() {
    let dir = tempfile::tempdir().unwrap();
    let def = files_sink("json", None);
    {
        let mut sink =
            open_sink(&def, schema(), dir.path(), "x", Box::new(std::io::sink())).unwrap();
        sink.write(&rows(&[D16], &["a"], &[1])).unwrap();
        assert!(dir.path().join("out/table/.staging-x").exists());
    }
    // The folders this sink created are removed again: a failed run leaves nothing behind.
    assert!(!dir.path().join("out").exists());
}

fn all_types() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        Field::new("day", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("k", DataType::Int32, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3), Some(4)])) as ArrayRef,
            Arc::new(Float64Array::from(vec![
                Some(1.5),
                Some(-2.25),
                None,
                Some(1e10),
            ])),
            Arc::new(StringArray::from(vec![
                "plain",
                "with, comma",
                "quote \" and\nnewline",
                "ünïcode",
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_773_741_600_000),
                Some(1_773_741_600_123),
                None,
                Some(0),
            ])),
            Arc::new(Date32Array::from(vec![
                Some(20529),
                None,
                Some(0),
                Some(-1),
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(1250), Some(-1), None, Some(99_999_999)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(Int32Array::from(vec![Some(1), Some(2), Some(1), None])),
        ],
    )
    .unwrap()
}

fn declared(batch: &RecordBatch) -> Vec<(&str, DataType)> {
    batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone()))
        .collect()
}

fn sorted_by_id(batch: &RecordBatch) -> RecordBatch {
    let idx = lexsort_to_indices(
        &[SortColumn {
            values: Arc::clone(batch.column(0)),
            options: None,
        }],
        None,
    )
    .unwrap();
    take_record_batch(batch, &idx).unwrap()
}

#[test]
fn round_trip_sink_to_source() {
    let input = all_types();
    for format in ["csv", "json", "parquet"] {
        for partition_by in [None, Some("k"), Some("ts,day")] {
            let dir = tempfile::tempdir().unwrap();
            let def = files_sink(format, partition_by);
            let half1 = input.slice(0, 2);
            let half2 = input.slice(2, 2);
            let commit = run(&def, dir.path(), "rt", &[half1, half2]);
            assert_eq!(commit.rows, 4);

            let columns = declared(&input);
            let source_def = table(
                "back",
                &columns,
                &[
                    ("connector", "files"),
                    ("path", "out/table"),
                    ("format", format),
                ],
            );
            let source = open(&source_def, dir.path());
            let (batch, rejects) = read_all(&source, 3);
            assert!(rejects.is_empty(), "{format} {partition_by:?}: {rejects:?}");
            assert_eq!(
                sorted_by_id(&batch),
                sorted_by_id(&input),
                "{format} partitioned by {partition_by:?}"
            );
        }
    }
}

#[test]
fn sink_option_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = |def: &TableDef| {
        open_sink(def, schema(), dir.path(), "r", Box::new(std::io::sink())).map(|_| ())
    };

    let def = table("s", &[], &[("connector", "kafka")]);
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(
        msg.contains("'kafka'") && msg.contains("'files', 'print'"),
        "{msg}"
    );
    assert!(open(&def).is_err());

    let def = files_sink("csv", Some("day,nope"));
    validate_sink_options(&def).unwrap();
    let err = open(&def).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Option { .. }));
    assert!(
        msg.contains("`nope`") && msg.contains("day, city, n"),
        "{msg}"
    );

    let mut def = files_sink("csv", None);
    def.options.insert("compression".into(), "gzip".into());
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(
        msg.contains("`compression`") && msg.contains("'partition-by'"),
        "{msg}"
    );

    let def = files_sink("avro", None);
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(msg.contains("'avro'") && msg.contains("'parquet'"), "{msg}");

    let def = table("p", &[], &[("connector", "print"), ("format", "xml")]);
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(
        msg.contains("'xml'") && msg.contains("'table', 'json'"),
        "{msg}"
    );

    // A file where a folder must go.
    std::fs::write(dir.path().join("blocker"), "x").unwrap();
    let path = dir.path().join("blocker/table");
    let def = table(
        "s",
        &[],
        &[
            ("connector", "files"),
            ("path", path.to_str().unwrap()),
            ("format", "csv"),
        ],
    );
    let err = validate_sink_options(&def).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(open(&def).is_err());
}

/// A `Write` that tests can read back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn print_sink_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let batch = rows(&[D17, D16], &["rome", "paris"], &[2, 1]);

    let out = Buffer::default();
    let def = table("p", &[], &[("connector", "print")]);
    let mut sink = open_sink(&def, schema(), dir.path(), "r", Box::new(out.clone())).unwrap();
    sink.write(&batch).unwrap();
    assert_eq!(
        out.text(),
        "+------------+-------+---+\n\
         | day        | city  | n |\n\
         +------------+-------+---+\n\
         | 2026-03-17 | rome  | 2 |\n\
         | 2026-03-16 | paris | 1 |\n\
         +------------+-------+---+\n"
    );
    let commit = sink.commit().unwrap();
    assert_eq!(commit.rows, 2);
    assert!(commit.files.is_empty());

    let out = Buffer::default();
    let def = table("p", &[], &[("connector", "print"), ("format", "json")]);
    let mut sink = open_sink(&def, schema(), dir.path(), "r", Box::new(out.clone())).unwrap();
    sink.write(&batch).unwrap();
    sink.write(&rows(&[D16], &["oslo"], &[3])).unwrap();
    assert_eq!(
        out.text(),
        "{\"day\":\"2026-03-17\",\"city\":\"rome\",\"n\":2}\n\
         {\"day\":\"2026-03-16\",\"city\":\"paris\",\"n\":1}\n\
         {\"day\":\"2026-03-16\",\"city\":\"oslo\",\"n\":3}\n"
    );
    assert_eq!(sink.commit().unwrap().rows, 3);
    // Nothing was written to the base folder.
    assert!(snapshot(dir.path()).is_empty());
}
