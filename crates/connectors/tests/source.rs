//! File sources: listing, partitions, CSV / JSON / Parquet decoding and rejects.

mod common;

use std::fs::File;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{
    DataType, Date32Type, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit,
    TimestampMillisecondType,
};
use common::{open, read_all, table, with_watermark, write};
use flowline_connectors::{FileSource, SourceFile};
use flowline_core::{Error, RejectReason};
use parquet::arrow::ArrowWriter;

fn ts_ms() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Milliseconds since the epoch of a UTC date-time written as `2026-03-17T10:00:00`.
fn ms(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

#[test]
fn csv_good_rows_and_every_kind_of_reject() {
    let dir = tempfile::tempdir().unwrap();
    let text = "id,amount,ts,name\n\
                1,12.50,2026-03-17 10:00:00,alice\n\
                2,abc,2026-03-17 10:01:00,bob\n\
                3,1.00,not-a-time,carol\n\
                4,2.00,2026-03-17 10:02:00\n\
                5,3.00,,dave\n\
                6, 4.25 ,2026-03-17T10:03:00.123Z,\"erin, jr\"\n";
    write(&dir.path().join("orders.csv"), text);
    let def = with_watermark(
        table(
            "orders",
            &[
                ("id", DataType::Int32),
                ("amount", DataType::Decimal128(10, 2)),
                ("ts", ts_ms()),
                ("name", DataType::Utf8),
            ],
            &[
                ("connector", "files"),
                ("path", "orders.csv"),
                ("format", "csv"),
            ],
        ),
        "ts",
    );
    let source = open(&def, dir.path());
    assert_eq!(source.name(), "orders");
    assert_eq!(source.files().len(), 1);
    let (batch, rejects) = read_all(&source, 100);

    assert_eq!(batch.num_rows(), 2);
    assert_eq!(
        batch.column(0).as_primitive::<Int32Type>(),
        &Int32Array::from(vec![1, 6])
    );
    assert_eq!(
        batch.column(1).as_any().downcast_ref::<Decimal128Array>(),
        Some(
            &Decimal128Array::from(vec![1250, 425])
                .with_precision_and_scale(10, 2)
                .unwrap()
        )
    );
    assert_eq!(
        batch.column(2).as_primitive::<TimestampMillisecondType>(),
        &TimestampMillisecondArray::from(vec![
            ms("2026-03-17T10:00:00"),
            ms("2026-03-17T10:03:00.123")
        ])
    );
    assert_eq!(
        batch.column(3).as_string::<i32>(),
        &StringArray::from(vec!["alice", "erin, jr"])
    );

    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.reason, r.line.unwrap(), r.raw.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (RejectReason::BadValue, 3, "2,abc,2026-03-17 10:01:00,bob"),
            (RejectReason::BadTimestamp, 4, "3,1.00,not-a-time,carol"),
            (RejectReason::MalformedCsv, 5, "4,2.00,2026-03-17 10:02:00"),
            (RejectReason::MissingEventTime, 6, "5,3.00,,dave"),
        ]
    );
    assert_eq!(
        rejects[0].detail,
        "column `amount`: cannot convert 'abc' to Decimal128(10, 2)"
    );
    assert!(rejects[1].detail.contains("`ts`"), "{}", rejects[1].detail);
    assert!(rejects[1].detail.contains("not-a-time"));
    assert_eq!(rejects[2].detail, "expected 4 fields, found 3");
    for r in &rejects {
        assert_eq!(r.table, "orders");
        assert_eq!(
            r.file.as_deref(),
            Some(dir.path().join("orders.csv").to_str().unwrap())
        );
        assert_eq!(r.window, None);
        assert_eq!(r.watermark, None);
    }
}

#[test]
fn csv_batches_respect_batch_size_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("n\n");
    for i in 0..10 {
        text.push_str(&format!("{i}\n"));
    }
    text.push_str("x\n");
    write(&dir.path().join("n.csv"), &text);
    let def = table(
        "t",
        &[("n", DataType::Int64)],
        &[("connector", "files"), ("path", "n.csv"), ("format", "csv")],
    );
    let source = open(&def, dir.path());
    let mut sizes = Vec::new();
    source
        .read_file(0, 4, &mut |d| {
            sizes.push((d.batch.num_rows(), d.rejects.len()));
            Ok(())
        })
        .unwrap();
    assert_eq!(sizes, vec![(4, 0), (4, 0), (2, 1)]);
    let (batch, rejects) = read_all(&source, 4);
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>(),
        &Int64Array::from((0..10).collect::<Vec<i64>>())
    );
    assert_eq!(rejects[0].line, Some(12));

    // emit's error stops the read.
    let mut calls = 0;
    let err = source
        .read_file(0, 4, &mut |_| {
            calls += 1;
            Err(Error::Internal("stop".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Internal(m) if m == "stop"));
    assert_eq!(calls, 1);
}

#[test]
fn csv_without_header_with_semicolons_and_null_literal() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("in.csv"),
        "1;a;true\n2;NULL;0\n3;;NULL\n4;d\n",
    );
    let def = table(
        "t",
        &[
            ("id", DataType::Int64),
            ("s", DataType::Utf8),
            ("b", DataType::Boolean),
        ],
        &[
            ("connector", "files"),
            ("path", "in.csv"),
            ("format", "csv"),
            ("csv.header", "false"),
            ("csv.field-delimiter", ";"),
            ("csv.null-literal", "NULL"),
        ],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 10);
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>(),
        &Int64Array::from(vec![1, 2, 3])
    );
    assert_eq!(
        batch.column(1).as_string::<i32>(),
        &StringArray::from(vec![Some("a"), None, Some("")])
    );
    assert_eq!(
        batch.column(2).as_boolean(),
        &BooleanArray::from(vec![Some(true), Some(false), None])
    );
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].reason, RejectReason::MalformedCsv);
    assert_eq!(rejects[0].line, Some(4));
    assert_eq!(rejects[0].raw, "4;d");
    assert_eq!(rejects[0].detail, "expected 3 fields, found 2");
}

#[test]
fn csv_empty_string_field_is_null_only_when_null_literal_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("in.csv"), "s,n\n,\nx,1\n");
    let mut def = table(
        "t",
        &[("s", DataType::Utf8), ("n", DataType::Int32)],
        &[
            ("connector", "files"),
            ("path", "in.csv"),
            ("format", "csv"),
        ],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 10);
    assert!(rejects.is_empty());
    assert_eq!(
        batch.column(0).as_string::<i32>(),
        &StringArray::from(vec![Some(""), Some("x")])
    );
    assert_eq!(
        batch.column(1).as_primitive::<Int32Type>(),
        &Int32Array::from(vec![None, Some(1)])
    );

    def.options.insert("csv.null-literal".into(), String::new());
    let (batch, _) = read_all(&open(&def, dir.path()), 10);
    assert_eq!(
        batch.column(0).as_string::<i32>(),
        &StringArray::from(vec![None, Some("x")])
    );
}

#[test]
fn csv_quoted_newlines_keep_line_numbers_right() {
    for newline in ["\n", "\r\n"] {
        let dir = tempfile::tempdir().unwrap();
        let lines = [
            "id,note",
            "1,\"first",
            "second\"",
            "x,after",
            "3,\"plain\"",
            "y,\"multi",
            "line\"",
            "",
            "z,last",
            "",
        ];
        write(&dir.path().join("q.csv"), &lines.join(newline));
        let def = table(
            "t",
            &[("id", DataType::Int32), ("note", DataType::Utf8)],
            &[
                ("connector", "files"),
                ("path", "q.csv"),
                ("format", "csv"),
                ("csv.quote-character", "\""),
            ],
        );
        let (batch, rejects) = read_all(&open(&def, dir.path()), 2);
        assert_eq!(
            batch.column(0).as_primitive::<Int32Type>(),
            &Int32Array::from(vec![1, 3])
        );
        assert_eq!(
            batch.column(1).as_string::<i32>().value(0),
            format!("first{newline}second")
        );
        let got: Vec<_> = rejects
            .iter()
            .map(|r| (r.line.unwrap(), r.raw.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, "x,after".to_string()),
                (6, format!("y,\"multi{newline}line\"")),
                (9, "z,last".to_string()),
            ],
            "newline {newline:?}"
        );
    }
}

#[test]
fn csv_header_is_matched_by_name_and_missing_column_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("a.csv"),
        "\u{feff}Id,NAME,Extra\n7,ann,z\n",
    );
    let def = table(
        "people",
        &[("id", DataType::Int32), ("name", DataType::Utf8)],
        &[("connector", "files"), ("path", "a.csv"), ("format", "csv")],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 10);
    assert!(rejects.is_empty());
    assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 7);
    assert_eq!(batch.column(1).as_string::<i32>().value(0), "ann");

    let def = table(
        "people",
        &[("id", DataType::Int32), ("age", DataType::Int32)],
        &[("connector", "files"), ("path", "a.csv"), ("format", "csv")],
    );
    let source = open(&def, dir.path());
    let err = source
        .read_file(0, 10, &mut |_| panic!("no data"))
        .unwrap_err();
    let Error::Input { path, message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &dir.path().join("a.csv"));
    assert!(message.contains("`age`"), "{message}");
}

#[test]
fn json_lines_decode_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"id": 1, "name": "a", "ok": true, "ts": "2026-03-17 10:00:00", "tags": ["x", 1]}"#,
        r#"{"id": "oops", "name": "b"}"#,
        r#"not json"#,
        r#""#,
        r#"[1, 2]"#,
        r#"{"ID": 4, "Name": null, "price": 2.5, "meta": {"k": "v"}}"#,
        r#"{"id": {"n": 5}}"#,
        r#"  "#,
        r#"{"id": 6, "ts": "bad time", "ok": "FALSE"}"#,
        r#"{"id": 7, "ok": 0, "price": "", "extra": 1}"#,
    ];
    write(&dir.path().join("in.jsonl"), &lines.join("\n"));
    let def = table(
        "ev",
        &[
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("ok", DataType::Boolean),
            ("ts", ts_ms()),
            ("price", DataType::Float64),
            ("tags", DataType::Utf8),
            ("meta", DataType::Utf8),
        ],
        &[
            ("connector", "files"),
            ("path", "in.jsonl"),
            ("format", "json"),
        ],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 3);
    assert_eq!(
        batch.column(0).as_primitive::<Int64Type>(),
        &Int64Array::from(vec![1, 4, 7])
    );
    assert_eq!(
        batch.column(1).as_string::<i32>(),
        &StringArray::from(vec![Some("a"), None, None])
    );
    assert_eq!(
        batch.column(2).as_boolean(),
        &BooleanArray::from(vec![Some(true), None, Some(false)])
    );
    assert_eq!(
        batch.column(3).as_primitive::<TimestampMillisecondType>(),
        &TimestampMillisecondArray::from(vec![Some(ms("2026-03-17T10:00:00")), None, None])
    );
    assert_eq!(
        batch.column(4).as_primitive::<Float64Type>(),
        &Float64Array::from(vec![None, Some(2.5), None])
    );
    assert_eq!(
        batch.column(5).as_string::<i32>(),
        &StringArray::from(vec![Some(r#"["x",1]"#), None, None])
    );
    assert_eq!(
        batch.column(6).as_string::<i32>(),
        &StringArray::from(vec![None, Some(r#"{"k":"v"}"#), None])
    );

    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.reason, r.line.unwrap(), r.raw.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (RejectReason::BadValue, 2, lines[1]),
            (RejectReason::InvalidJson, 3, lines[2]),
            (RejectReason::InvalidJson, 5, lines[4]),
            (RejectReason::BadValue, 7, lines[6]),
            (RejectReason::BadTimestamp, 9, lines[8]),
        ]
    );
    assert_eq!(
        rejects[0].detail,
        "column `id`: cannot convert 'oops' to Int64"
    );
    assert!(
        rejects[1].detail.contains("expected ident") || rejects[1].detail.contains("expected"),
        "{}",
        rejects[1].detail
    );
    assert_eq!(rejects[2].detail, "expected a JSON object, found an array");
    assert!(rejects[3].detail.contains("`id`"), "{}", rejects[3].detail);
}

fn write_parquet(path: &std::path::Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn parquet_input() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("code", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("ignored", DataType::Float64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            Arc::new(StringArray::from(vec![
                Some("10"),
                Some("x"),
                None,
                Some("40"),
                Some("50"),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_000_000),
                    Some(2_000_000),
                    Some(3_000_000),
                    None,
                    Some(5_000_000),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(vec![0.0; 5])),
        ],
    )
    .unwrap()
}

#[test]
fn parquet_projects_casts_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(&dir.path().join("data/p.parquet"), &parquet_input());
    let def = with_watermark(
        table(
            "p",
            &[
                ("ts", ts_ms()),
                ("ID", DataType::Int64),
                ("code", DataType::Int32),
            ],
            &[
                ("connector", "files"),
                ("path", "data"),
                ("format", "parquet"),
            ],
        ),
        "ts",
    );
    let source = open(&def, dir.path());
    let mut batch_rows = Vec::new();
    source
        .read_file(0, 2, &mut |d| {
            batch_rows.push(d.batch.num_rows() + d.rejects.len());
            Ok(())
        })
        .unwrap();
    assert_eq!(batch_rows, vec![2, 2, 1]);

    let (batch, rejects) = read_all(&source, 2);
    assert_eq!(
        batch.column(0).as_primitive::<TimestampMillisecondType>(),
        &TimestampMillisecondArray::from(vec![1000, 3000, 5000])
    );
    assert_eq!(
        batch.column(1).as_primitive::<Int64Type>(),
        &Int64Array::from(vec![1, 3, 5])
    );
    assert_eq!(
        batch.column(2).as_primitive::<Int32Type>(),
        &Int32Array::from(vec![Some(10), None, Some(50)])
    );
    let got: Vec<_> = rejects
        .iter()
        .map(|r| (r.reason, r.line.unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (RejectReason::BadValue, 2),
            (RejectReason::MissingEventTime, 4)
        ]
    );
    assert_eq!(
        rejects[0].detail,
        "column `code`: cannot convert 'x' to Int32"
    );
    let raw: serde_json::Value = serde_json::from_str(&rejects[0].raw).unwrap();
    assert_eq!(raw["id"], 2);
    assert_eq!(raw["code"], "x");
}

#[test]
fn parquet_same_types_pass_through_and_missing_column_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = parquet_input();
    write_parquet(&dir.path().join("p.parquet"), &input);
    let def = table(
        "p",
        &[("code", DataType::Utf8), ("id", DataType::Int32)],
        &[
            ("connector", "files"),
            ("path", "p.parquet"),
            ("format", "parquet"),
        ],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 1024);
    assert!(rejects.is_empty());
    assert_eq!(batch.column(0), input.column(1));
    assert_eq!(batch.column(1), input.column(0));

    let def = table(
        "p",
        &[("id", DataType::Int32), ("nope", DataType::Utf8)],
        &[
            ("connector", "files"),
            ("path", "p.parquet"),
            ("format", "parquet"),
        ],
    );
    let err = open(&def, dir.path())
        .read_file(0, 10, &mut |_| panic!("no data before the error"))
        .unwrap_err();
    let Error::Input { path, message } = &err else {
        panic!("{err:?}")
    };
    assert!(path.ends_with("p.parquet"));
    assert!(message.contains("`nope`"), "{message}");

    // Not a Parquet file at all.
    write(&dir.path().join("bad/x.parquet"), "hello");
    let def = table(
        "p",
        &[("id", DataType::Int32)],
        &[
            ("connector", "files"),
            ("path", "bad"),
            ("format", "parquet"),
        ],
    );
    let err = open(&def, dir.path())
        .read_file(0, 10, &mut |_| Ok(()))
        .unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
}

#[test]
fn listing_skips_hidden_files_sorts_and_reads_hive_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("logs");
    write(&root.join("date=2026-03-17/hour=10%3A00/b.csv"), "v\n3\n");
    write(&root.join("date=2026-03-17/hour=10%3A00/a.csv"), "v\n2\n");
    write(&root.join("date=2026-03-16/hour=09%3A00/z.csv"), "v\n1\n");
    write(&root.join("_SUCCESS"), "");
    write(&root.join(".staging-abc/date=2026-03-18/x.csv"), "v\n9\n");
    write(&root.join("date=2026-03-17/_temporary/y.csv"), "v\n9\n");
    write(&root.join("date=2026-03-17/.part.crc"), "junk");
    let def = table(
        "logs",
        &[
            ("date", DataType::Date32),
            ("hour", DataType::Utf8),
            ("v", DataType::Int32),
        ],
        &[("connector", "files"), ("path", "logs"), ("format", "csv")],
    );
    let source = open(&def, dir.path());
    let files: Vec<_> = source
        .files()
        .iter()
        .map(|f| f.path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert_eq!(
        files,
        vec![
            "date=2026-03-16/hour=09%3A00/z.csv",
            "date=2026-03-17/hour=10%3A00/a.csv",
            "date=2026-03-17/hour=10%3A00/b.csv",
        ]
    );
    let f: &SourceFile = &source.files()[1];
    assert_eq!(
        f.partitions,
        vec![
            ("date".to_string(), "2026-03-17".to_string()),
            ("hour".to_string(), "10:00".to_string())
        ]
    );
    assert_eq!(f.size, 4);
    assert!(f.modified.ends_with('Z'), "{}", f.modified);
    assert!(chrono::DateTime::parse_from_rfc3339(&f.modified).is_ok());

    let (batch, rejects) = read_all(&source, 10);
    assert!(rejects.is_empty());
    let day = |s: &str| {
        Date32Type::from_naive_date(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    };
    assert_eq!(
        batch.column(0).as_primitive::<Date32Type>(),
        &Date32Array::from(vec![
            day("2026-03-16"),
            day("2026-03-17"),
            day("2026-03-17")
        ])
    );
    assert_eq!(
        batch.column(1).as_string::<i32>(),
        &StringArray::from(vec!["09:00", "10:00", "10:00"])
    );
    assert_eq!(
        batch.column(2).as_primitive::<Int32Type>(),
        &Int32Array::from(vec![1, 2, 3])
    );
}

#[test]
fn partition_values_fill_parquet_and_json_columns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("t");
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int32, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    write_parquet(&root.join("day=2026-03-17/n=5/p.parquet"), &batch);
    write_parquet(
        &root.join("day=not-a-date/n=__HIVE_DEFAULT_PARTITION__/p.parquet"),
        &batch,
    );
    let def = table(
        "t",
        &[
            ("day", DataType::Date32),
            ("v", DataType::Int32),
            ("n", DataType::Int64),
        ],
        &[("connector", "files"), ("path", "t"), ("format", "parquet")],
    );
    let (out, rejects) = read_all(&open(&def, dir.path()), 10);
    assert_eq!(out.num_rows(), 2);
    assert_eq!(out.column(0).as_primitive::<Date32Type>().value(0), 20529);
    assert_eq!(
        out.column(2).as_primitive::<Int64Type>(),
        &Int64Array::from(vec![5, 5])
    );
    // The folder value that is not a date rejects every row of its file.
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0].reason, RejectReason::BadTimestamp);
    assert_eq!(rejects[0].line, Some(1));

    let jroot = dir.path().join("j");
    write(
        &jroot.join("k=a%2Fb/x.json"),
        "{\"v\": 1}\n{\"v\": 2, \"k\": \"own\"}\n",
    );
    let def = table(
        "j",
        &[
            ("k", DataType::Utf8),
            ("v", DataType::Int32),
            ("none", DataType::Utf8),
        ],
        &[("connector", "files"), ("path", "j"), ("format", "json")],
    );
    let (out, rejects) = read_all(&open(&def, dir.path()), 10);
    assert!(rejects.is_empty());
    assert_eq!(
        out.column(0).as_string::<i32>(),
        &StringArray::from(vec!["a/b", "own"])
    );
    assert_eq!(out.column(2).null_count(), 2);
}

#[test]
fn empty_folder_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let def = table(
        "t",
        &[("v", DataType::Int32)],
        &[("connector", "files"), ("path", "empty"), ("format", "csv")],
    );
    let source = open(&def, dir.path());
    assert!(source.files().is_empty());

    write(&dir.path().join("e/a.csv"), "");
    write(&dir.path().join("e/b.json"), "\n\n");
    for format in ["csv", "json"] {
        let def = table(
            "t",
            &[("v", DataType::Int32)],
            &[("connector", "files"), ("path", "e"), ("format", format)],
        );
        let (batch, rejects) = read_all(&open(&def, dir.path()), 10);
        assert_eq!(batch.num_rows(), 0);
        assert!(rejects.is_empty());
    }
}

fn open_err(options: &[(&str, &str)]) -> Error {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("x.csv"), "v\n1\n");
    let def = table("src", &[("v", DataType::Int32)], options);
    match FileSource::open(&def, dir.path()) {
        Ok(_) => panic!("expected an error for {options:?}"),
        Err(e) => e,
    }
}

#[test]
fn option_errors_name_the_problem() {
    let base = [("connector", "files"), ("path", "x.csv"), ("format", "csv")];

    let mut o = base.to_vec();
    o.push(("csv.delimiter", ";"));
    let err = open_err(&o);
    let msg = err.to_string();
    assert!(matches!(err, Error::Option { ref table, .. } if table == "src"));
    assert!(msg.contains("`csv.delimiter`"), "{msg}");
    assert!(msg.contains("'csv.field-delimiter'"), "{msg}");

    let msg = open_err(&[("connector", "files"), ("path", "x.csv"), ("format", "xml")]).to_string();
    assert!(msg.contains("'xml'"), "{msg}");
    assert!(msg.contains("'csv', 'json', 'parquet'"), "{msg}");

    let msg = open_err(&[("connector", "files"), ("path", "x.csv")]).to_string();
    assert!(msg.contains("`format`"), "{msg}");

    let msg = open_err(&[("connector", "files"), ("format", "csv")]).to_string();
    assert!(msg.contains("`path`"), "{msg}");

    let msg = open_err(&[("connector", "kafka"), ("path", "x.csv"), ("format", "csv")]).to_string();
    assert!(msg.contains("'kafka'") && msg.contains("'files'"), "{msg}");

    let msg = open_err(&[
        ("connector", "files"),
        ("path", "x.csv"),
        ("format", "json"),
        ("csv.header", "false"),
    ])
    .to_string();
    assert!(
        msg.contains("`csv.header`") && msg.contains("'json'"),
        "{msg}"
    );

    let mut o = base.to_vec();
    o.push(("csv.field-delimiter", "::"));
    let msg = open_err(&o).to_string();
    assert!(msg.contains("`csv.field-delimiter`"), "{msg}");

    let mut o = base.to_vec();
    o.push(("csv.header", "yes"));
    let msg = open_err(&o).to_string();
    assert!(
        msg.contains("`csv.header`") && msg.contains("'true'"),
        "{msg}"
    );

    let mut o = base.to_vec();
    o.push(("timestamp-format", "%Q"));
    let msg = open_err(&o).to_string();
    assert!(
        msg.contains("`timestamp-format`") && msg.contains("'%Q'"),
        "{msg}"
    );

    let err = open_err(&[
        ("connector", "files"),
        ("path", "missing"),
        ("format", "csv"),
    ]);
    let Error::Io { path, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(path.ends_with("missing"));
}

#[test]
fn timestamp_format_option() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("t.csv"),
        "ts,d\n17/03/2026 10:30,17/03/2026 00:00\n2026-03-17 10:30:00,17/03/2026 00:00\n",
    );
    let def = table(
        "t",
        &[("ts", ts_ms()), ("d", DataType::Date32)],
        &[
            ("connector", "files"),
            ("path", "t.csv"),
            ("format", "csv"),
            ("timestamp-format", "%d/%m/%Y %H:%M"),
        ],
    );
    let (batch, rejects) = read_all(&open(&def, dir.path()), 10);
    assert_eq!(
        batch.column(0).as_primitive::<TimestampMillisecondType>(),
        &TimestampMillisecondArray::from(vec![ms("2026-03-17T10:30:00")])
    );
    assert_eq!(batch.column(1).as_primitive::<Date32Type>().value(0), 20529);
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].reason, RejectReason::BadTimestamp);
    assert_eq!(rejects[0].line, Some(3));
}

#[test]
fn file_source_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FileSource>();
}
