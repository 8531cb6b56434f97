//! The log source: JSON and CSV records decoded to the declared schema, rejects that name the
//! partition folder and offset, startup offsets, and option errors.

mod common;

use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use common::{table, with_watermark};
use flowline_connectors::LogSource;
use flowline_core::{Error, RejectReason, TableDef};
use flowline_log::{Log, Record, TopicConfig};

fn columns() -> Vec<(&'static str, DataType)> {
    vec![
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        (
            "ts",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
        ),
    ]
}

fn source_table(options: &[(&str, &str)]) -> TableDef {
    let mut all = vec![("connector", "log"), ("topic", "t"), ("log.dir", "log")];
    all.extend_from_slice(options);
    with_watermark(table("src", &columns(), &all), "ts")
}

/// A topic `t` with 2 partitions; `values` go to partition 0, in order.
fn topic(base: &Path, values: &[&str]) {
    let log = Log::open(base.join("log")).unwrap();
    log.create_topic(
        "t",
        TopicConfig {
            partitions: 2,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let mut producer = log.topic("t").unwrap().producer().unwrap();
    for v in values {
        producer.append_to(0, None, v.as_bytes(), 0).unwrap();
    }
    producer.flush().unwrap();
}

fn records(source: &LogSource) -> Vec<Record> {
    let mut readers = source.readers().unwrap();
    readers[0].read(0, usize::MAX, usize::MAX).unwrap()
}

fn ids(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

#[test]
fn json_records_decode_and_bad_ones_are_rejected_with_partition_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    topic(
        dir.path(),
        &[
            r#"{"id": 1, "name": "a", "ts": "2026-03-16 10:00:00"}"#,
            r#"not json"#,
            r#"{"id": "x", "name": "b", "ts": "2026-03-16 10:00:01"}"#,
            r#"{"ID": 4, "name": "d", "ts": "2026-03-16 10:00:02.5"}"#,
            r#"{"id": 5, "name": "e"}"#,
        ],
    );
    let source = LogSource::open(&source_table(&[]), dir.path(), Path::new("unused")).unwrap();
    let decoded = source.decode(0, &records(&source)).unwrap();
    assert_eq!(decoded.batch.schema(), source.schema());
    assert_eq!(ids(&decoded.batch), vec![1, 4]);
    let rejects: Vec<_> = decoded
        .rejects
        .iter()
        .map(|r| (r.reason, r.line, r.raw.clone()))
        .collect();
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert_eq!(
        rejects[0],
        (RejectReason::InvalidJson, Some(1), "not json".into())
    );
    assert_eq!(rejects[1].0, RejectReason::BadValue);
    assert_eq!(rejects[1].1, Some(2));
    assert_eq!(rejects[2].0, RejectReason::MissingEventTime);
    assert_eq!(rejects[2].1, Some(4));
    let file = decoded.rejects[0].file.as_deref().unwrap();
    assert!(file.ends_with("log/t/0"), "{file}");
}

#[test]
fn csv_records_are_one_line_each_in_declared_column_order() {
    let dir = tempfile::tempdir().unwrap();
    topic(
        dir.path(),
        &[
            "1,a,2026-03-16 10:00:00",
            "2,\"b, with comma\",2026-03-16 10:00:01",
            "3,c",
            "4;d;x",
            "5,,2026-03-16 10:00:03",
        ],
    );
    let source = LogSource::open(
        &source_table(&[("format", "csv")]),
        dir.path(),
        Path::new("x"),
    )
    .unwrap();
    let decoded = source.decode(0, &records(&source)).unwrap();
    assert_eq!(ids(&decoded.batch), vec![1, 2, 5]);
    let names = decoded.batch.column(1).as_string::<i32>();
    assert_eq!(names.value(1), "b, with comma");
    // An empty CSV field of a string column is an empty string, as for files.
    assert_eq!(names.value(2), "");
    let reasons: Vec<_> = decoded.rejects.iter().map(|r| (r.reason, r.line)).collect();
    assert_eq!(
        reasons,
        vec![
            (RejectReason::MalformedCsv, Some(2)),
            (RejectReason::MalformedCsv, Some(3))
        ]
    );
}

#[test]
fn startup_offsets_follow_the_startup_mode_and_the_group() {
    let dir = tempfile::tempdir().unwrap();
    topic(
        dir.path(),
        &[
            r#"{"id": 1, "ts": "2026-03-16 10:00:00"}"#,
            r#"{"id": 2, "ts": "2026-03-16 10:00:00"}"#,
            r#"{"id": 3, "ts": "2026-03-16 10:00:00"}"#,
        ],
    );
    let ranges = [(0, 3), (0, 0)];
    let open = |options: &[(&str, &str)]| {
        LogSource::open(&source_table(options), dir.path(), Path::new("x")).unwrap()
    };
    assert_eq!(open(&[]).start_offsets(&ranges).unwrap(), vec![0, 0]);
    assert_eq!(
        open(&[("scan.startup.mode", "latest-offset")])
            .start_offsets(&ranges)
            .unwrap(),
        vec![3, 0]
    );
    let grouped = open(&[
        ("scan.startup.mode", "group-offsets"),
        ("properties.group.id", "g"),
    ]);
    // No committed offset yet: the earliest.
    assert_eq!(grouped.start_offsets(&ranges).unwrap(), vec![0, 0]);
    grouped
        .commit_group(&[(0, 2)].into_iter().collect())
        .unwrap();
    assert_eq!(grouped.start_offsets(&ranges).unwrap(), vec![2, 0]);
}

#[test]
fn bad_options_fail_before_reading_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    topic(dir.path(), &[]);
    let err = |options: &[(&str, &str)]| -> String {
        match LogSource::open(&source_table(options), dir.path(), Path::new("x")) {
            Err(e @ Error::Option { .. }) => e.to_string(),
            Err(other) => panic!("not an option error: {other}"),
            Ok(_) => panic!("accepted {options:?}"),
        }
    };
    let e = err(&[("topic", "nope")]);
    assert!(
        e.contains("nope") && e.contains("flowline log create"),
        "{e}"
    );
    let e = err(&[("scan.startup.mode", "group-offsets")]);
    assert!(e.contains("properties.group.id"), "{e}");
    let e = err(&[("scan.startup.mode", "sometime")]);
    assert!(e.contains("earliest-offset"), "{e}");
    let e = err(&[("scan.bounded.mode", "forever")]);
    assert!(e.contains("latest-offset"), "{e}");
    let e = err(&[("scan.watermark.idle-timeout", "soon")]);
    assert!(e.contains("idle-timeout"), "{e}");
    let e = err(&[("format", "avro")]);
    assert!(e.contains("'json', 'csv'"), "{e}");
    let e = err(&[("csv.field-delimiter", ";")]);
    assert!(e.contains("only applies to format 'csv'"), "{e}");
    let e = err(&[("partition-by", "id")]);
    assert!(e.contains("partition-by"), "{e}");
}
