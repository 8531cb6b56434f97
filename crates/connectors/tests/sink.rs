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
use flowline_connectors::{
    open_sink, validate_sink_options, Prepared, PreparedFile, SinkCommit, SinkContext, SinkMode,
};
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

/// A batch (run mode) context.
fn run_ctx(base: &Path, run_id: &str) -> SinkContext {
    SinkContext {
        base_dir: base.to_path_buf(),
        log_dir: base.join("log"),
        mode: SinkMode::Run {
            run_id: run_id.into(),
            job: "test".into(),
        },
        slice: None,
    }
}

fn run(def: &TableDef, base: &Path, run_id: &str, batches: &[RecordBatch]) -> SinkCommit {
    let schema = batches.first().map_or_else(schema, |b| b.schema());
    let mut sink = open_sink(
        def,
        schema,
        &run_ctx(base, run_id),
        Box::new(std::io::sink()),
    )
    .unwrap();
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
    let mut sink = open_sink(
        &def,
        schema(),
        &run_ctx(dir.path(), "b"),
        Box::new(std::io::sink()),
    )
    .unwrap();
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
        let mut sink = open_sink(
            &def,
            schema(),
            &run_ctx(dir.path(), "x"),
            Box::new(std::io::sink()),
        )
        .unwrap();
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
        open_sink(
            def,
            schema(),
            &run_ctx(dir.path(), "r"),
            Box::new(std::io::sink()),
        )
        .map(|_| ())
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
    let mut sink = open_sink(
        &def,
        schema(),
        &run_ctx(dir.path(), "r"),
        Box::new(out.clone()),
    )
    .unwrap();
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
    let mut sink = open_sink(
        &def,
        schema(),
        &run_ctx(dir.path(), "r"),
        Box::new(out.clone()),
    )
    .unwrap();
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

// ------------------------------------------------------------------ epochs (exactly-once)

/// A stream (epochs mode) context for job `job`.
fn epochs_ctx(base: &Path, job: &str, resume: Option<Prepared>) -> SinkContext {
    SinkContext {
        base_dir: base.to_path_buf(),
        log_dir: base.join("log"),
        mode: SinkMode::Epochs {
            job: job.into(),
            staging: base.join("state/staging"),
            resume,
        },
        slice: None,
    }
}

fn open_epochs(
    def: &TableDef,
    base: &Path,
    resume: Option<Prepared>,
) -> Box<dyn flowline_connectors::Sink> {
    open_sink(
        def,
        schema(),
        &epochs_ctx(base, "job", resume),
        Box::new(std::io::sink()),
    )
    .unwrap()
}

/// The files a reader of `dir` sees: no hidden (staging) names.
fn visible(dir: &Path) -> BTreeMap<String, String> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, _)| !k.split('/').any(|part| part.starts_with('.')))
        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
        .collect()
}

fn staged_files(root: &Path) -> Vec<String> {
    let staging = root.join(".staging-job");
    if !staging.exists() {
        return Vec::new();
    }
    snapshot(&staging).into_keys().collect()
}

#[test]
fn epochs_files_publish_each_epoch_exactly_once_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let root = base.join("out/table");
    let def = files_sink("csv", None);

    // Epoch 1: prepared files are invisible until published.
    let mut sink = open_epochs(&def, base, None);
    sink.write(&rows(&[D16, D17], &["a", "b"], &[1, 2]))
        .unwrap();
    assert!(visible(&root).is_empty(), "nothing visible while writing");
    let p1 = sink.prepare(1).unwrap();
    let Prepared::Files { epoch: 1, files } = &p1 else {
        panic!("{p1:?}")
    };
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].target, "part-0000000001-0.csv");
    assert_eq!(files[0].rows, 2);
    assert!(files[0].staged.starts_with(".staging-job/"), "{files:?}");
    assert!(visible(&root).is_empty(), "nothing visible after prepare");
    let commit = sink.publish(&p1).unwrap();
    assert_eq!(commit.rows, 2);
    assert_eq!(
        commit.files[0].path,
        root.join("part-0000000001-0.csv").display().to_string()
    );
    assert_eq!(
        std::fs::metadata(&commit.files[0].path).unwrap().len(),
        commit.files[0].bytes
    );
    let after_1 = visible(&root);
    assert_eq!(
        after_1,
        BTreeMap::from([(
            "part-0000000001-0.csv".to_string(),
            "day,city,n\n2026-03-16,a,1\n2026-03-17,b,2\n".to_string()
        )])
    );

    // Epoch 2 prepared (and checkpointed by the runtime), then a crash before its publish;
    // epoch 3 was being written.
    sink.write(&rows(&[D17], &["c"], &[3])).unwrap();
    let p2 = sink.prepare(2).unwrap();
    assert_eq!(p2.epoch(), 2);
    assert_eq!(p2.rows(), 1);
    sink.write(&rows(&[D17], &["lost"], &[4])).unwrap();
    drop(sink);
    assert_eq!(
        visible(&root),
        after_1,
        "epoch 2 is not visible before its publish"
    );
    assert_eq!(
        staged_files(&root).len(),
        2,
        "epoch 2 prepared, epoch 3 unprepared"
    );

    // The checkpoint survives in JSON.
    let json = serde_json::to_string(&p2).unwrap();
    let p2: Prepared = serde_json::from_str(&json).unwrap();

    // Restart: epoch 2 is published, epoch 3's leftover is removed.
    let sink = open_epochs(&def, base, Some(p2.clone()));
    let after_2 = visible(&root);
    assert_eq!(after_2.len(), 2);
    assert_eq!(
        after_2["part-0000000001-0.csv"],
        after_1["part-0000000001-0.csv"]
    );
    assert_eq!(
        after_2["part-0000000002-0.csv"],
        "day,city,n\n2026-03-17,c,3\n"
    );
    assert!(staged_files(&root).is_empty(), "{:?}", staged_files(&root));
    drop(sink);

    // A second crash before the next checkpoint: the same resume is published again, idempotently.
    let mut sink = open_epochs(&def, base, Some(p2.clone()));
    assert_eq!(visible(&root), after_2);
    // Publishing it once more on the open sink changes nothing either.
    let again = sink.publish(&p2).unwrap();
    assert_eq!(again.rows, 1);
    assert_eq!(visible(&root), after_2);

    // The runtime replays from epoch 3: an empty epoch publishes nothing.
    let empty = sink.prepare(3).unwrap();
    assert_eq!(
        empty,
        Prepared::Files {
            epoch: 3,
            files: vec![]
        }
    );
    assert_eq!(sink.publish(&empty).unwrap(), SinkCommit::default());
    sink.write(&rows(&[D16], &["d"], &[5])).unwrap();
    let p4 = sink.prepare(4).unwrap();
    sink.publish(&p4).unwrap();
    let end = visible(&root);
    assert_eq!(
        end.keys().cloned().collect::<Vec<_>>(),
        vec![
            "part-0000000001-0.csv",
            "part-0000000002-0.csv",
            "part-0000000004-0.csv"
        ]
    );

    // A reader of the folder sees every row exactly once.
    let source_def = table(
        "back",
        &[
            ("day", DataType::Date32),
            ("city", DataType::Utf8),
            ("n", DataType::Int64),
        ],
        &[
            ("connector", "files"),
            ("path", "out/table"),
            ("format", "csv"),
        ],
    );
    let (batch, rejects) = read_all(&open(&source_def, base), 10);
    assert!(rejects.is_empty());
    let n = batch
        .column(2)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let mut n: Vec<i64> = n.iter().map(Option::unwrap).collect();
    n.sort();
    assert_eq!(n, vec![1, 2, 3, 5]);
}

#[test]
fn epochs_partitioned_files_survive_a_crash_in_the_middle_of_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let root = base.join("out/table");
    let def = files_sink("json", Some("day"));

    let mut sink = open_epochs(&def, base, None);
    sink.write(&rows(&[D16, D17], &["a", "b"], &[1, 2]))
        .unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    let after_1 = visible(&root);
    assert_eq!(
        after_1.keys().cloned().collect::<Vec<_>>(),
        vec![
            "day=2026-03-16/part-0000000001-0.json",
            "day=2026-03-17/part-0000000001-0.json"
        ]
    );

    // Epoch 2 writes both partitions; the crash comes after the first file was renamed.
    sink.write(&rows(&[D17, D16, D17], &["c", "d", "e"], &[3, 4, 5]))
        .unwrap();
    let p2 = sink.prepare(2).unwrap();
    let Prepared::Files { files, .. } = &p2 else {
        panic!("{p2:?}")
    };
    let targets: Vec<(&str, u64)> = files.iter().map(|f| (f.target.as_str(), f.rows)).collect();
    assert_eq!(
        targets,
        vec![
            ("day=2026-03-16/part-0000000002-0.json", 1),
            ("day=2026-03-17/part-0000000002-0.json", 2)
        ]
    );
    let first: &PreparedFile = &files[0];
    std::fs::rename(root.join(&first.staged), root.join(&first.target)).unwrap();
    // Epoch 3 was being written into a new partition.
    sink.write(&rows(&[20530], &["lost"], &[6])).unwrap();
    drop(sink);

    let sink = open_epochs(&def, base, Some(p2.clone()));
    drop(sink);
    let sink = open_epochs(&def, base, Some(p2.clone()));
    drop(sink);
    let after_2 = visible(&root);
    assert_eq!(
        after_2.keys().cloned().collect::<Vec<_>>(),
        vec![
            "day=2026-03-16/part-0000000001-0.json",
            "day=2026-03-16/part-0000000002-0.json",
            "day=2026-03-17/part-0000000001-0.json",
            "day=2026-03-17/part-0000000002-0.json"
        ],
        "epoch 3's partition never appears"
    );
    for (k, v) in &after_1 {
        assert_eq!(&after_2[k], v, "files of other epochs are untouched");
    }
    assert_eq!(
        after_2["day=2026-03-16/part-0000000002-0.json"],
        "{\"city\":\"d\",\"n\":4}\n"
    );
    assert_eq!(
        after_2["day=2026-03-17/part-0000000002-0.json"],
        "{\"city\":\"c\",\"n\":3}\n{\"city\":\"e\",\"n\":5}\n"
    );
    assert!(staged_files(&root).is_empty());
    assert!(!root.join("day=2026-03-18").exists());
}

#[test]
fn epochs_files_never_replace_output_of_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let root = base.join("out/table");
    let def = files_sink("csv", None);
    let mut sink = open_epochs(&def, base, None);
    sink.write(&rows(&[D16], &["a"], &[1])).unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    drop(sink);
    let before = visible(&root);

    // The job's checkpoints are lost: it starts over at epoch 1 over the old output.
    let mut sink = open_epochs(&def, base, None);
    sink.write(&rows(&[D17], &["b"], &[2])).unwrap();
    let msg = sink.prepare(1).unwrap_err().to_string();
    assert!(
        msg.contains("part-0000000001-0.csv") && msg.contains("already exists"),
        "{msg}"
    );
    drop(sink);
    assert_eq!(visible(&root), before);

    // A checkpoint of another kind of sink is refused.
    let wrong = Prepared::Print { epoch: 1, rows: 0 };
    let err = open_sink(
        &def,
        schema(),
        &epochs_ctx(base, "job", Some(wrong)),
        Box::new(std::io::sink()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("files sink"), "{err}");

    // A lost staged file of an unpublished epoch is an error, not silence.
    let lost = Prepared::Files {
        epoch: 9,
        files: vec![PreparedFile {
            staged: ".staging-job/e0000000009-0.csv".into(),
            target: "part-0000000009-0.csv".into(),
            rows: 1,
        }],
    };
    let err = open_sink(
        &def,
        schema(),
        &epochs_ctx(base, "job", Some(lost)),
        Box::new(std::io::sink()),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("epoch 9"), "{err}");
}

/// A crash after new data was staged but before the next checkpoint: the resumed (older)
/// checkpoint's staged names are not confused with the newer staged files.
#[test]
fn epochs_files_resume_an_already_published_checkpoint_after_more_writes() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let root = base.join("out/table");
    let def = files_sink("csv", Some("city"));
    let mut sink = open_epochs(&def, base, None);
    sink.write(&rows(&[D16], &["a"], &[1])).unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    drop(sink);

    // Restarted from checkpoint 1 (already published): epoch 2 is written and prepared, but
    // the crash comes before checkpoint 2 completes.
    let mut sink = open_epochs(&def, base, Some(p1.clone()));
    sink.write(&rows(&[D17], &["a"], &[2])).unwrap();
    sink.prepare(2).unwrap();
    drop(sink);
    let before = visible(&root);

    let sink = open_epochs(&def, base, Some(p1));
    drop(sink);
    assert_eq!(visible(&root), before);
    assert_eq!(
        before.keys().cloned().collect::<Vec<_>>(),
        vec!["city=a/part-0000000001-0.csv"]
    );
    assert!(staged_files(&root).is_empty());
    // A sink dropped with nothing staged leaves no staging folder behind.
    assert_eq!(snapshot(&root).len(), 1);
    assert!(!root.join(".staging-job").exists());
}
