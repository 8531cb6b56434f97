//! The log sink: keys and partitions, encoding, exactly-once publishing across crashes, errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::TimestampMillisecondArray;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use common::table;
use flowline_connectors::{
    open_sink, validate_sink_options, Prepared, Sink, SinkContext, SinkMode,
};
use flowline_core::{Error, TableDef};
use flowline_log::{partition_for_key, Log, Topic, TopicConfig};

const PARTITIONS: u32 = 3;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("customer", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Rows `ids`, customer `c<id % 4>` (NULL for id 13), amount `id * 1.5`, ts 2026-03-17 10:00 + id s.
fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (*i != 13).then(|| format!("c{}", i % 4)))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ids.iter().map(|i| *i as f64 * 1.5).collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMillisecondArray::from(
                ids.iter()
                    .map(|i| 1_773_741_600_000 + i * 1000)
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// The JSON a row of [`rows`] encodes to (as the files sink's JSON lines).
fn json(id: i64) -> String {
    let customer = if id == 13 {
        String::new()
    } else {
        format!("\"customer\":\"c{}\",", id % 4)
    };
    let amount = serde_json::to_string(&(id as f64 * 1.5)).unwrap();
    format!(
        "{{\"id\":{id},{customer}\"amount\":{amount},\"ts\":\"2026-03-17T10:{:02}:{:02}\"}}",
        id / 60,
        id % 60
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
    topic: Topic,
}

fn setup(partitions: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let log = Log::open(base.join("log")).unwrap();
    let topic = log
        .create_topic(
            "orders",
            TopicConfig {
                partitions,
                ..TopicConfig::default()
            },
        )
        .unwrap();
    Setup {
        _dir: dir,
        base,
        topic,
    }
}

fn log_table(options: &[(&str, &str)]) -> TableDef {
    let mut all = vec![("connector", "log"), ("topic", "orders")];
    all.extend_from_slice(options);
    table("out", &[], &all)
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

fn epochs_ctx(base: &Path, resume: Option<Prepared>) -> SinkContext {
    SinkContext {
        base_dir: base.to_path_buf(),
        log_dir: base.join("log"),
        mode: SinkMode::Epochs {
            job: "job".into(),
            staging: base.join("state/staging/out"),
            resume,
        },
        slice: None,
    }
}

fn open(def: &TableDef, ctx: &SinkContext) -> Box<dyn Sink> {
    open_sink(def, schema(), ctx, Box::new(std::io::sink())).unwrap()
}

/// Every record of every partition: partition → [(key, value)].
fn contents(topic: &Topic) -> BTreeMap<u32, Vec<(Option<String>, String)>> {
    let mut out = BTreeMap::new();
    for p in 0..topic.partitions() {
        let records = topic
            .reader(p)
            .unwrap()
            .read(0, 1_000_000, 1 << 30)
            .unwrap();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
        }
        out.insert(
            p,
            records
                .into_iter()
                .map(|r| {
                    (
                        r.key.map(|k| String::from_utf8(k).unwrap()),
                        String::from_utf8(r.value).unwrap(),
                    )
                })
                .collect(),
        );
    }
    out
}

/// What the sink appends for rows `ids` keyed by `customer`, partition by partition, in order.
/// `first_row` is the row index within the epoch of the first id (for rows without key).
fn expected_by_customer(
    ids: std::ops::Range<i64>,
    first_row: u64,
) -> BTreeMap<u32, Vec<(Option<String>, String)>> {
    let mut out: BTreeMap<u32, Vec<_>> = (0..PARTITIONS).map(|p| (p, Vec::new())).collect();
    for (n, id) in ids.enumerate() {
        let key = (id != 13).then(|| format!("c{}", id % 4));
        let p = match &key {
            Some(k) => partition_for_key(k.as_bytes(), PARTITIONS),
            None => ((first_row + n as u64) % PARTITIONS as u64) as u32,
        };
        out.get_mut(&p).unwrap().push((key, json(id)));
    }
    out
}

fn concat(
    mut a: BTreeMap<u32, Vec<(Option<String>, String)>>,
    b: BTreeMap<u32, Vec<(Option<String>, String)>>,
) -> BTreeMap<u32, Vec<(Option<String>, String)>> {
    for (p, records) in b {
        a.entry(p).or_default().extend(records);
    }
    a
}

fn staged(base: &Path) -> Vec<String> {
    let dir = base.join("state/staging/out/log-out");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn keyed_rows_go_to_the_hashed_partition_as_json() {
    let s = setup(PARTITIONS);
    let def = log_table(&[("key.fields", "customer")]);
    let mut sink = open(&def, &run_ctx(&s.base));
    sink.write(&rows(0..10)).unwrap();
    sink.write(&rows(10..16)).unwrap();
    // Nothing is appended before the commit.
    assert!(contents(&s.topic).values().all(Vec::is_empty));
    let commit = sink.commit().unwrap();
    assert_eq!(commit.rows, 16);
    assert!(commit.files.is_empty());
    drop(sink);

    let got = contents(&s.topic);
    // Row 13 (NULL customer) has no key: it is row index 13 of the epoch → partition 13 % 3.
    assert_eq!(got, expected_by_customer(0..16, 0));
    // Spot-check the encoding, and that keys land where Topic::partition_for_key says.
    let c1 = s.topic.partition_for_key(b"c1");
    assert!(got[&c1].contains(&(
        Some("c1".to_string()),
        "{\"id\":1,\"customer\":\"c1\",\"amount\":1.5,\"ts\":\"2026-03-17T10:00:01\"}".to_string()
    )));
    assert!(got[&1].contains(&(
        None,
        "{\"id\":13,\"amount\":19.5,\"ts\":\"2026-03-17T10:00:13\"}".to_string()
    )));
    let total: usize = got.values().map(Vec::len).sum();
    assert_eq!(total, 16);
    // The temporary staging of the run is gone.
    let prefix = format!("flowline-log-sink-{}-r1-out-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn several_key_fields_make_a_json_array_key_and_csv_values() {
    let s = setup(PARTITIONS);
    let def = log_table(&[("key.fields", "customer; id"), ("format", "csv")]);
    let mut sink = open(&def, &run_ctx(&s.base));
    sink.write(&rows(1..3)).unwrap();
    sink.commit().unwrap();
    drop(sink);
    let got = contents(&s.topic);
    let mut expected: BTreeMap<u32, Vec<(Option<String>, String)>> =
        (0..PARTITIONS).map(|p| (p, Vec::new())).collect();
    for (key, value) in [
        ("[\"c1\",1]", "1,c1,1.5,2026-03-17T10:00:01"),
        ("[\"c2\",2]", "2,c2,3.0,2026-03-17T10:00:02"),
    ] {
        expected
            .get_mut(&partition_for_key(key.as_bytes(), PARTITIONS))
            .unwrap()
            .push((Some(key.to_string()), value.to_string()));
    }
    assert_eq!(got, expected);
}

#[test]
fn rows_without_key_spread_by_row_index_within_the_epoch() {
    let s = setup(PARTITIONS);
    let def = log_table(&[]);
    let mut sink = open(&def, &epochs_ctx(&s.base, None));
    sink.write(&rows(0..2)).unwrap();
    sink.write(&rows(2..4)).unwrap();
    let p1 = sink.prepare(1).unwrap();
    sink.publish(&p1).unwrap();
    // The next epoch starts at partition 0 again: a replay lands the same way.
    sink.write(&rows(4..5)).unwrap();
    let p2 = sink.prepare(2).unwrap();
    sink.publish(&p2).unwrap();
    let got = contents(&s.topic);
    let ids = |p: u32| -> Vec<String> { got[&p].iter().map(|(_, v)| v.clone()).collect() };
    assert_eq!(ids(0), vec![json(0), json(3), json(4)]);
    assert_eq!(ids(1), vec![json(1)]);
    assert_eq!(ids(2), vec![json(2)]);
    assert!(got.values().flatten().all(|(k, _)| k.is_none()));
}

#[test]
fn crash_between_prepare_and_publish_appends_exactly_once() {
    let s = setup(PARTITIONS);
    let def = log_table(&[("key.fields", "customer")]);

    let mut sink = open(&def, &epochs_ctx(&s.base, None));
    sink.write(&rows(0..8)).unwrap();
    let p1 = sink.prepare(1).unwrap();
    assert_eq!(p1.epoch(), 1);
    assert_eq!(p1.rows(), 8);
    assert!(
        contents(&s.topic).values().all(Vec::is_empty),
        "prepare appends nothing"
    );
    sink.publish(&p1).unwrap();
    let after_1 = expected_by_customer(0..8, 0);
    assert_eq!(contents(&s.topic), after_1);

    // Epoch 2 prepared (its checkpoint completes), then a crash before the publish, while
    // epoch 3 was being written.
    sink.write(&rows(8..20)).unwrap();
    let p2 = sink.prepare(2).unwrap();
    let Prepared::Log {
        topic, partitions, ..
    } = &p2
    else {
        panic!("{p2:?}")
    };
    assert_eq!(topic, "orders");
    for part in partitions {
        assert_eq!(part.base_offset, after_1[&part.partition].len() as u64);
    }
    sink.write(&rows(20..30)).unwrap();
    drop(sink);
    assert_eq!(contents(&s.topic), after_1);
    assert_eq!(
        staged(&s.base),
        vec!["epoch-0000000002.records", "pending.records"]
    );

    // The checkpoint goes through JSON.
    let p2: Prepared = serde_json::from_str(&serde_json::to_string(&p2).unwrap()).unwrap();
    let after_2 = concat(after_1, expected_by_customer(8..20, 0));
    let sink = open(&def, &epochs_ctx(&s.base, Some(p2.clone())));
    assert_eq!(contents(&s.topic), after_2);
    assert!(staged(&s.base).is_empty(), "{:?}", staged(&s.base));
    drop(sink);

    // Resumed again (a crash before the next checkpoint): nothing is appended twice.
    let mut sink = open(&def, &epochs_ctx(&s.base, Some(p2.clone())));
    assert_eq!(contents(&s.topic), after_2);
    assert_eq!(sink.publish(&p2).unwrap().rows, 12);
    assert_eq!(contents(&s.topic), after_2);

    // The replayed epoch 3 is appended once.
    sink.write(&rows(20..30)).unwrap();
    let p3 = sink.prepare(3).unwrap();
    sink.publish(&p3).unwrap();
    assert_eq!(
        contents(&s.topic),
        concat(after_2, expected_by_customer(20..30, 0))
    );
    // An empty epoch.
    let empty = sink.prepare(4).unwrap();
    assert_eq!(empty.rows(), 0);
    assert_eq!(sink.publish(&empty).unwrap().rows, 0);
}

#[test]
fn crash_in_the_middle_of_a_publish_appends_only_the_missing_records() {
    let s = setup(PARTITIONS);
    let def = log_table(&[("key.fields", "customer")]);
    let mut sink = open(&def, &epochs_ctx(&s.base, None));
    sink.write(&rows(0..16)).unwrap();
    let p1 = sink.prepare(1).unwrap();
    drop(sink);

    // The crashed publish had appended part of the epoch: all of one partition, the first
    // record of another, nothing of the third.
    let expected = expected_by_customer(0..16, 0);
    let sizes: Vec<usize> = expected.values().map(Vec::len).collect();
    assert!(sizes.iter().all(|&n| n >= 2), "{sizes:?}");
    for (p, prefix) in [(0u32, sizes[0]), (1, 1), (2, 0)] {
        let mut writer = s.topic.writer(p).unwrap();
        for (key, value) in &expected[&p][..prefix] {
            writer
                .append(key.as_deref().map(str::as_bytes), value.as_bytes(), 0)
                .unwrap();
        }
    }

    let sink = open(&def, &epochs_ctx(&s.base, Some(p1.clone())));
    drop(sink);
    let got = contents(&s.topic);
    assert_eq!(got, expected);
    let sink = open(&def, &epochs_ctx(&s.base, Some(p1)));
    drop(sink);
    assert_eq!(contents(&s.topic), got);
}

#[test]
fn another_writer_between_prepare_and_publish_is_an_error() {
    let s = setup(PARTITIONS);
    let def = log_table(&[]);
    let mut sink = open(&def, &epochs_ctx(&s.base, None));
    sink.write(&rows(0..3)).unwrap();
    let p1 = sink.prepare(1).unwrap();
    drop(sink);
    let mut writer = s.topic.writer(1).unwrap();
    for _ in 0..2 {
        writer.append(None, b"{}", 0).unwrap();
    }
    drop(writer);
    let err = open_sink(
        &def,
        schema(),
        &epochs_ctx(&s.base, Some(p1)),
        Box::new(std::io::sink()),
    )
    .map(|_| ())
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("partition 1")
            && msg.contains("ends at offset 2")
            && msg.contains("Another writer"),
        "{msg}"
    );
    // Nothing of the epoch was appended anywhere.
    let got = contents(&s.topic);
    assert!(got[&0].is_empty() && got[&2].is_empty(), "{got:?}");
}

#[test]
fn the_sink_holds_the_writers_of_the_topic() {
    let s = setup(PARTITIONS);
    let def = log_table(&[]);
    let _sink = open(&def, &run_ctx(&s.base));
    let msg = s.topic.writer(2).map(|_| ()).unwrap_err().to_string();
    assert!(msg.contains("already has a writer"), "{msg}");
    let msg = open_sink(&def, schema(), &run_ctx(&s.base), Box::new(std::io::sink()))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("already has a writer"), "{msg}");
}

#[test]
fn log_sink_option_errors() {
    let s = setup(1);
    let open_err = |def: &TableDef, ctx: &SinkContext| {
        open_sink(def, schema(), ctx, Box::new(std::io::sink()))
            .map(|_| ())
            .unwrap_err()
    };

    // Unknown topic: the message names it and how to create it.
    let def = table("out", &[], &[("connector", "log"), ("topic", "nope")]);
    validate_sink_options(&def).unwrap();
    let err = open_err(&def, &run_ctx(&s.base));
    assert!(matches!(err, Error::Option { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("table `out`")
            && msg.contains("`nope`")
            && msg.contains("flowline log create nope")
            && msg.contains("orders"),
        "{msg}"
    );
    // No log folder at all (log.dir): also named, and nothing is created.
    let def = log_table(&[("log.dir", "elsewhere")]);
    let msg = open_err(&def, &run_ctx(&s.base)).to_string();
    assert!(
        msg.contains("flowline log create orders") && msg.contains("elsewhere"),
        "{msg}"
    );
    assert!(!s.base.join("elsewhere").exists());
    // log.dir pointing at the log works.
    let def = log_table(&[("log.dir", "log")]);
    let ctx = SinkContext {
        log_dir: s.base.join("not-the-log"),
        ..run_ctx(&s.base)
    };
    drop(open(&def, &ctx));

    // A topic name the log cannot have.
    let def = table("out", &[], &[("connector", "log"), ("topic", "a/b")]);
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(msg.contains("'a/b'") && msg.contains("`topic`"), "{msg}");

    // Missing topic.
    let def = table("out", &[], &[("connector", "log")]);
    let msg = validate_sink_options(&def).unwrap_err().to_string();
    assert!(msg.contains("missing required option `topic`"), "{msg}");

    // key.fields: unknown columns (declared columns at validation, the schema at open), empty
    // names, duplicates.
    let def = log_table(&[("key.fields", "customer;nope")]);
    validate_sink_options(&def).unwrap();
    let err = open_err(&def, &run_ctx(&s.base));
    assert!(matches!(err, Error::Option { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`key.fields`")
            && msg.contains("`nope`")
            && msg.contains("id, customer, amount, ts"),
        "{msg}"
    );
    let declared = table(
        "out",
        &[("id", DataType::Int64)],
        &[
            ("connector", "log"),
            ("topic", "orders"),
            ("key.fields", "idd"),
        ],
    );
    let msg = validate_sink_options(&declared).unwrap_err().to_string();
    assert!(
        msg.contains("`idd`") && msg.contains("columns: id"),
        "{msg}"
    );
    let msg = validate_sink_options(&log_table(&[("key.fields", "id;;customer")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`key.fields`") && msg.contains("';' or ','"),
        "{msg}"
    );
    let msg = validate_sink_options(&log_table(&[("key.fields", "id,ID")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("twice"), "{msg}");

    // Format.
    let msg = validate_sink_options(&log_table(&[("format", "avro")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("'avro'") && msg.contains("'json', 'csv'") && msg.contains("'log'"),
        "{msg}"
    );
    // Unknown option.
    let msg = validate_sink_options(&log_table(&[("partition-by", "id")]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`partition-by`") && msg.contains("'key.fields'"),
        "{msg}"
    );
    // The connector list names log.
    let msg = validate_sink_options(&table("out", &[], &[("connector", "kafka")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'files', 'print', 'log'"), "{msg}");

    // A checkpoint of another topic is refused.
    let wrong = Prepared::Log {
        epoch: 4,
        topic: "other".into(),
        staged: None,
        partitions: vec![],
    };
    let msg = open_err(&log_table(&[]), &epochs_ctx(&s.base, Some(wrong))).to_string();
    assert!(msg.contains("`other`") && msg.contains("`orders`"), "{msg}");
}
