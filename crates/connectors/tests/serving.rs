//! Serving tables (`connector = 'table'`): batch runs replace, stream epochs upsert and delete
//! exactly once across reopen, append tables keep earlier generations, versions are built
//! beside each other and swapped atomically, and wrong uses are clear errors.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use common::table;
use flowline_connectors::serving::{self, ReadError, ServingTable, CHANGE_TYPE};
use flowline_connectors::{open_sink, Prepared, Sink, SinkContext, SinkMode};
use flowline_core::TableDef;

fn served(primary_key: &[&str], extra: &[(&str, &str)]) -> TableDef {
    let mut options = vec![("connector", "table"), ("path", "serving/totals")];
    options.extend_from_slice(extra);
    let mut def = table(
        "totals",
        &[("user_id", DataType::Utf8), ("n", DataType::Int64)],
        &options,
    );
    def.primary_key = primary_key.iter().map(|k| k.to_string()).collect();
    def
}

/// The sink's input: the table's columns plus the runtime's `_change_type`.
fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new(CHANGE_TYPE, DataType::Utf8, false),
    ]))
}

/// Rows `(user, n, change)`.
fn changes(rows: &[(&str, i64, &str)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn run_ctx(base: &Path) -> SinkContext {
    SinkContext {
        base_dir: base.to_path_buf(),
        log_dir: base.join("log"),
        mode: SinkMode::Run {
            run_id: "r1".into(),
            job: "test".into(),
        },
        slice: None,
    }
}

fn job_ctx(base: &Path, job: &str, resume: Option<Prepared>) -> SinkContext {
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

fn open(def: &TableDef, ctx: &SinkContext) -> Box<dyn Sink> {
    open_sink(def, input_schema(), ctx, Box::new(std::io::sink())).unwrap()
}

/// The error of a sink that must not open.
fn refused(def: &TableDef, ctx: &SinkContext) -> String {
    match open_sink(def, input_schema(), ctx, Box::new(std::io::sink())) {
        Ok(_) => panic!("the sink opened"),
        Err(e) => e.to_string(),
    }
}

/// The current version's rows as `(user, n)`, in stored order.
fn contents(base: &Path, version: Option<&str>) -> Vec<(String, i64)> {
    let Some((schema, batches)) = ServingTable::at(base.join("serving/totals"))
        .read(version)
        .unwrap()
    else {
        return vec![];
    };
    assert_eq!(schema.field(0).name(), "user_id");
    assert_eq!(schema.fields().len(), 2, "_change_type is not stored");
    let mut out = vec![];
    for b in batches {
        let users = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((users.value(i).to_string(), n.value(i)));
        }
    }
    out
}

fn pairs(rows: &[(&str, i64)]) -> Vec<(String, i64)> {
    rows.iter().map(|(u, n)| (u.to_string(), *n)).collect()
}

#[test]
fn a_batch_run_upserts_by_key_and_replaces_the_previous_run() {
    let tmp = tempfile::tempdir().unwrap();
    let def = served(&["user_id"], &[]);
    let mut sink = open(&def, &run_ctx(tmp.path()));
    sink.write(&changes(&[
        ("b", 1, "upsert"),
        ("a", 1, "upsert"),
        ("b", 2, "upsert"),
    ]))
    .unwrap();
    // Nothing is visible before the commit.
    assert_eq!(contents(tmp.path(), None), vec![]);
    let commit = sink.commit().unwrap();
    assert_eq!(commit.rows, 3);
    // Key order; the last write of a key wins.
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 1), ("b", 2)]));
    drop(sink);

    let mut sink = open(&def, &run_ctx(tmp.path()));
    sink.write(&changes(&[("c", 7, "upsert")])).unwrap();
    sink.commit().unwrap();
    assert_eq!(contents(tmp.path(), None), pairs(&[("c", 7)]), "replaced");
    let info = ServingTable::at(tmp.path().join("serving/totals"))
        .info(None)
        .unwrap()
        .unwrap();
    assert_eq!(info.version, "v1");
    assert_eq!(info.key, vec!["user_id".to_string()]);
    assert_eq!(info.rows, 1);
    assert!(info.updated_ms > 0);
}

#[test]
fn stream_epochs_publish_once_even_when_published_again_after_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let def = served(&["user_id"], &[]);
    let mut sink = open(&def, &job_ctx(tmp.path(), "job", None));
    sink.write(&changes(&[("a", 1, "upsert"), ("b", 1, "upsert")]))
        .unwrap();
    let p1 = sink.prepare(1).unwrap();
    assert_eq!(p1, Prepared::Table { epoch: 1, rows: 2 });
    // Prepared is durable but invisible.
    assert_eq!(contents(tmp.path(), None), vec![]);
    sink.publish(&p1).unwrap();
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 1), ("b", 1)]));

    sink.write(&changes(&[("a", 1, "delete"), ("b", 5, "upsert")]))
        .unwrap();
    let p2 = sink.prepare(2).unwrap();
    // Epoch 3 is staged but its checkpoint never completes: a crash.
    sink.write(&changes(&[("z", 9, "upsert")])).unwrap();
    sink.prepare(3).unwrap();
    drop(sink);

    // Restart from checkpoint 2: its epoch is published on open, epoch 3 is dropped.
    let mut sink = open(&def, &job_ctx(tmp.path(), "job", Some(p2.clone())));
    assert_eq!(contents(tmp.path(), None), pairs(&[("b", 5)]));
    // Publishing epoch 2 again (a crash after publish, before the next checkpoint) changes
    // nothing, and neither does an older epoch.
    sink.publish(&p2).unwrap();
    sink.publish(&p1).unwrap();
    assert_eq!(contents(tmp.path(), None), pairs(&[("b", 5)]));
    // The replayed epoch 3 publishes once.
    sink.write(&changes(&[("z", 9, "upsert")])).unwrap();
    let p3 = sink.prepare(3).unwrap();
    sink.publish(&p3).unwrap();
    sink.publish(&p3).unwrap();
    assert_eq!(contents(tmp.path(), None), pairs(&[("b", 5), ("z", 9)]));
    let info = ServingTable::at(tmp.path().join("serving/totals"))
        .info(None)
        .unwrap()
        .unwrap();
    assert_eq!(info.published_epoch, 3);
    assert_eq!(info.writer.as_deref(), Some("job"));
}

#[test]
fn an_append_table_keeps_publish_order_and_earlier_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let def = served(&[], &[]);
    let mut sink = open(&def, &job_ctx(tmp.path(), "job", None));
    sink.write(&changes(&[("b", 1, "upsert"), ("a", 1, "upsert")]))
        .unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    sink.write(&changes(&[("a", 2, "upsert")])).unwrap();
    let p2 = sink.prepare(2).unwrap();
    sink.publish(&p2).unwrap();
    drop(sink);
    // A restart from checkpoint 1 replays epoch 2 under the same number: no duplicate.
    let mut sink = open(&def, &job_ctx(tmp.path(), "job", Some(p1)));
    sink.write(&changes(&[("a", 2, "upsert")])).unwrap();
    let p2 = sink.prepare(2).unwrap();
    sink.publish(&p2).unwrap();
    assert_eq!(
        contents(tmp.path(), None),
        pairs(&[("b", 1), ("a", 1), ("a", 2)])
    );
    drop(sink);
    // A job started over (no checkpoint) appends after what is there: epoch numbers restart
    // but the generation does not.
    let mut sink = open(&def, &job_ctx(tmp.path(), "job", None));
    sink.write(&changes(&[("c", 3, "upsert")])).unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    assert_eq!(
        contents(tmp.path(), None),
        pairs(&[("b", 1), ("a", 1), ("a", 2), ("c", 3)])
    );
    // A delete needs a key.
    let err = sink
        .write(&changes(&[("c", 3, "delete")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no PRIMARY KEY"), "{err}");
}

#[test]
fn a_new_version_is_built_beside_the_current_one_and_swapped_in() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = served(&["user_id"], &[]);
    let mut sink = open(&v1, &run_ctx(tmp.path()));
    sink.write(&changes(&[("a", 1, "upsert")])).unwrap();
    sink.commit().unwrap();
    drop(sink);

    let v2 = served(&["user_id"], &[("version", "v2")]);
    let mut sink = open(&v2, &job_ctx(tmp.path(), "job-v2", None));
    sink.write(&changes(&[("a", 10, "upsert"), ("b", 20, "upsert")]))
        .unwrap();
    let p = sink.prepare(1).unwrap();
    sink.publish(&p).unwrap();
    let table = ServingTable::at(tmp.path().join("serving/totals"));
    assert_eq!(table.versions().unwrap(), vec!["v1", "v2"]);
    // Readers still see v1; v2 can be read by name.
    assert_eq!(table.current().unwrap().as_deref(), Some("v1"));
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 1)]));
    assert_eq!(
        contents(tmp.path(), Some("v2")),
        pairs(&[("a", 10), ("b", 20)])
    );
    table.swap("v2").unwrap();
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 10), ("b", 20)]));
    let err = table.swap("v9").unwrap_err().to_string();
    assert!(err.contains("no version 'v9'"), "{err}");
}

/// A pipeline's serving tables swap together: a version one of them lacks swaps none, a reader
/// resolving their versions never sees them apart while swaps run, and a swap that stopped after
/// its first table is completed by `finish_swap`.
#[test]
fn a_pipelines_tables_swap_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [tmp.path().join("serving/a"), tmp.path().join("serving/b")];
    for dir in &dirs {
        std::fs::create_dir_all(dir).unwrap();
        for v in ["v1", "v2"] {
            std::fs::write(dir.join(format!("{v}.redb")), b"").unwrap();
        }
    }
    let (a, b) = (ServingTable::at(&dirs[0]), ServingTable::at(&dirs[1]));
    let intent = tmp.path().join("state/swapping");
    serving::swap_together(&[&a, &b], "v1", &intent).unwrap();
    assert!(!intent.exists(), "a finished swap leaves no record");

    // v3 exists for a only: nothing is swapped.
    std::fs::write(dirs[0].join("v3.redb"), b"").unwrap();
    let err = serving::swap_together(&[&a, &b], "v3", &intent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no version 'v3'"), "{err}");
    let both = |v: &str| vec![Some(v.to_string()), Some(v.to_string())];
    assert_eq!(serving::current_versions(&[&a, &b]).unwrap(), both("v1"));
    assert!(!intent.exists());

    // Readers see both tables on one version while swaps go back and forth.
    std::thread::scope(|s| {
        let swaps = s.spawn(|| {
            for i in 0..100 {
                let v = if i % 2 == 0 { "v2" } else { "v1" };
                serving::swap_together(&[&a, &b], v, &intent).unwrap();
            }
        });
        let mut reads = 0;
        while !swaps.is_finished() || reads == 0 {
            let seen = serving::current_versions(&[&a, &b]).unwrap();
            assert_eq!(
                seen[0], seen[1],
                "tables seen on different versions after {reads} reads"
            );
            reads += 1;
        }
        swaps.join().unwrap();
    });
    assert_eq!(serving::current_versions(&[&a, &b]).unwrap(), both("v1"));

    // The swap to v2 fails at b (its CURRENT cannot be replaced), after a was swapped.
    std::fs::remove_file(dirs[1].join("CURRENT")).unwrap();
    std::fs::create_dir_all(dirs[1].join("CURRENT/blocked")).unwrap();
    let err = serving::swap_together(&[&a, &b], "v2", &intent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("completed when the pipeline is opened again"),
        "{err}"
    );
    assert_eq!(a.current().unwrap().as_deref(), Some("v2"));
    assert!(intent.exists(), "the unfinished swap is recorded");
    // Once b can be written again, opening the pipeline completes the swap.
    std::fs::remove_dir_all(dirs[1].join("CURRENT")).unwrap();
    assert_eq!(
        serving::finish_swap(&[&a, &b], &intent).unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(serving::current_versions(&[&a, &b]).unwrap(), both("v2"));
    assert!(!intent.exists());
    assert_eq!(
        serving::finish_swap(&[&a, &b], &intent).unwrap(),
        None,
        "nothing left to finish"
    );
}

#[test]
fn a_key_lookup_reads_one_row() {
    let tmp = tempfile::tempdir().unwrap();
    let def = served(&["user_id"], &[]);
    let mut sink = open(&def, &run_ctx(tmp.path()));
    sink.write(&changes(&[("a", 1, "upsert"), ("b", 2, "upsert")]))
        .unwrap();
    sink.commit().unwrap();
    // The writer is gone: readers open the store themselves and keep it open while reading.
    drop(sink);
    let table = ServingTable::at(tmp.path().join("serving/totals"));
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 1), ("b", 2)]));
    let rows = table.lookup(None, &["b"]).unwrap().unwrap();
    assert_eq!(
        (rows.version.as_str(), rows.key.clone()),
        ("v1", vec!["user_id".to_string()])
    );
    let batches = rows.batches;
    assert_eq!(batches[0].num_rows(), 1);
    let n = batches[0]
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(n.value(0), 2);
    let missing = table.lookup(None, &["zz"]).unwrap().unwrap();
    assert_eq!(missing.batches[0].num_rows(), 0);
    // A key that does not fit is the request's fault, not the store's.
    let err = table.lookup(None, &["a", "b"]).unwrap_err();
    assert!(matches!(err, ReadError::Request(_)), "{err:?}");
    assert!(err.to_string().contains("the key is (user_id)"), "{err}");
}

#[test]
fn wrong_uses_are_errors_that_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let def = served(&["user_id"], &[]);
    let mut sink = open(&def, &job_ctx(tmp.path(), "job-a", None));
    sink.write(&changes(&[("a", 1, "upsert")])).unwrap();
    let p = sink.prepare(1).unwrap();
    sink.publish(&p).unwrap();
    drop(sink);
    // Another pipeline writing the same version.
    let err = refused(&def, &job_ctx(tmp.path(), "job-b", None));
    assert!(err.contains("is written by pipeline `job-a`"), "{err}");
    // A batch run of another pipeline would replace the stream's table: refused at open, and
    // the table keeps its rows. A batch run of the writer itself (corrections) is allowed.
    let batch_of = |job: &str| SinkContext {
        mode: SinkMode::Run {
            run_id: "r9".into(),
            job: job.into(),
        },
        ..run_ctx(tmp.path())
    };
    let err = refused(&def, &batch_of("nightly"));
    assert!(
        err.contains("is written by pipeline `job-a`; pipeline `nightly` cannot write it too"),
        "{err}"
    );
    assert_eq!(contents(tmp.path(), None), pairs(&[("a", 1)]));
    drop(open(&def, &batch_of("job-a")));
    // The other way round: a batch pipeline's table refuses a stream job of another pipeline.
    let other = served(&["user_id"], &[("path", "serving/other")]);
    let mut sink = open(&other, &batch_of("nightly"));
    sink.write(&changes(&[("a", 1, "upsert")])).unwrap();
    sink.commit().unwrap();
    drop(sink);
    let err = refused(&other, &job_ctx(tmp.path(), "job-a", None));
    assert!(err.contains("is written by pipeline `nightly`"), "{err}");
    // Other columns over existing rows.
    let wider = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("m", DataType::Int64, true),
        Field::new(CHANGE_TYPE, DataType::Utf8, false),
    ]));
    let err = open_sink(
        &def,
        wider,
        &job_ctx(tmp.path(), "job-a", None),
        Box::new(std::io::sink()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("holds columns (user_id Utf8, n Int64)"),
        "{err}"
    );
    // Options.
    let bad = served(&["user_id"], &[("version", "../v2")]);
    let err = refused(&bad, &run_ctx(tmp.path()));
    assert!(err.contains("invalid version '../v2'"), "{err}");
    let bad = served(&["user_id"], &[("format", "json")]);
    let err = refused(&bad, &run_ctx(tmp.path()));
    assert!(err.contains("unknown option `format`"), "{err}");
    let bad = served(&["id"], &[]);
    let err = refused(&bad, &run_ctx(tmp.path()));
    assert!(err.contains("PRIMARY KEY column `id`"), "{err}");
}
