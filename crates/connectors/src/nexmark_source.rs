//! `'connector' = 'nexmark'`: the Nexmark generator ([`crate::nexmark`]) as a bounded source, so
//! the published Flink DDL (`CREATE TABLE nexmark (event_type INT, person ROW<..>, ...) WITH
//! ('connector' = 'nexmark', 'events.num' = ...)`) runs unchanged.
//!
//! Invariants:
//! * The declared physical columns are the generator's (`event_type`, `person`, `auction`,
//!   `bid`, by name, in any order, each castable from the generated type); anything else fails
//!   at open, naming the column.
//! * The source is bounded: `events.num` must be positive (Flink's 0, "unbounded", is refused).
//! * Events come in parts of [`PART_EVENTS`] consecutive positions; part `i` holds exactly the
//!   events a single generator emits at those positions, so parts decoded in parallel and
//!   delivered in order give the same rows as one generator.
//! * Rows go through the same conversion as files (computed columns such as Nexmark's
//!   `dateTime AS CASE ... END`, the event time check, `NOT NULL`), so a row can still be
//!   rejected, with the event number as its line.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use flowline_core::{Error, Result, TableDef};
use serde_json::json;

use crate::convert::{Converter, Failures};
use crate::nexmark::{
    nested_schema, NexmarkConfig, NexmarkGenerator, UnreadExtra, DEFAULT_BASE_TIME_MS,
};
use crate::options;
use crate::source::{BoundedSource, Decoded};

/// Events per part (the unit reader threads decode in parallel).
pub const PART_EVENTS: u64 = 1 << 20;

/// The options of a `nexmark` table: Flink's `NexmarkSourceOptions`, plus `seed`, `base-time`
/// and `out-of-order.group-size`.
pub const NEXMARK_OPTIONS: &[&str] = &[
    "connector",
    "events.num",
    "first-event.rate",
    "next-event.rate",
    "rate.shape",
    "rate.period",
    "rate.limited",
    "max-emit-speed",
    "keep-alive",
    "stop-at",
    "person.avg-size",
    "auction.avg-size",
    "bid.avg-size",
    "person.proportion",
    "auction.proportion",
    "bid.proportion",
    "bid.hot-ratio.auctions",
    "bid.hot-ratio.bidders",
    "auction.hot-ratio.sellers",
    "seed",
    "base-time",
    "out-of-order.group-size",
];

/// A `nexmark` table: a generator configuration and the conversion of its rows.
pub struct NexmarkSource {
    config: NexmarkConfig,
    converter: Converter,
    /// The pseudo path rejects name (`nexmark:<table>`).
    origin: std::path::PathBuf,
}

impl NexmarkSource {
    /// Validates the options and the declared columns; nothing is generated yet.
    pub fn open(def: &TableDef) -> Result<NexmarkSource> {
        options::check_known(def, NEXMARK_OPTIONS)?;
        options::connector(def, &["nexmark"])?;
        let config = config_from_options(def)?;
        let generated = nested_schema();
        for column in &def.columns {
            let Some(field) = generated.fields().iter().find(|f| f.name() == &column.name) else {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "column `{}` is not a Nexmark column (the generator gives event_type, \
                         person, auction and bid, as Flink's `nexmark` table)",
                        column.name
                    ),
                ));
            };
            if !arrow::compute::can_cast_types(field.data_type(), &column.data_type) {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "column `{}` is declared {}, but the generator gives {}",
                        column.name,
                        column.data_type,
                        field.data_type()
                    ),
                ));
            }
        }
        Ok(NexmarkSource {
            config,
            converter: Converter::new(def, None)?,
            origin: format!("nexmark:{}", def.name).into(),
        })
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }
}

impl BoundedSource for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.converter.output_schema())
    }

    fn parts(&self) -> usize {
        self.config.events.div_ceil(PART_EVENTS) as usize
    }

    fn read_part(
        &self,
        index: usize,
        batch_size: usize,
        needed: Option<&crate::Needed>,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        let start = index as u64 * PART_EVENTS;
        let end = (start + PART_EVENTS).min(self.config.events);
        if start >= end {
            return Err(Error::Internal(format!(
                "nexmark source has {} parts, no part {index}",
                self.parts()
            )));
        }
        let config = NexmarkConfig {
            events: end,
            ..self.config.clone()
        };
        let mut generator =
            NexmarkGenerator::at(config, start).map_err(|e| Error::Internal(e.to_string()))?;
        let declared = self.converter.schema();
        if let Some(needed) = needed {
            // What converting reads (computed columns such as `dateTime` read ROW fields too).
            let physical = self.converter.physical_needed(needed);
            let generated = nested_schema();
            // Declared ROW fields take the generated ones as conversion does (by name, else by
            // position): `extra` is left empty when no declared field that takes it is read.
            let unread = |column: &str| {
                let Ok(i) = declared.index_of(column) else {
                    return true;
                };
                let (Ok(g), DataType::Struct(fields)) = (
                    generated.field_with_name(column),
                    declared.field(i).data_type(),
                ) else {
                    return false;
                };
                let DataType::Struct(generated_fields) = g.data_type() else {
                    return false;
                };
                let (Some(extra), Some(sources)) = (
                    generated_fields.iter().position(|f| f.name() == "extra"),
                    crate::convert::row_field_sources(generated_fields, fields),
                ) else {
                    return false;
                };
                sources
                    .iter()
                    .zip(fields.iter())
                    .filter(|(&s, _)| s == extra)
                    .all(|(_, f)| !physical.reads_field(i, f.name()))
            };
            generator.leave_extra_empty(UnreadExtra {
                person: unread("person"),
                auction: unread("auction"),
                bid: unread("bid"),
            });
        }
        while let Some(batch) = generator.next_batch(batch_size) {
            let first = generator.position() - batch.num_rows() as u64;
            let rows = batch.num_rows();
            // The generator's columns, in the declared order.
            let columns = declared
                .fields()
                .iter()
                .map(|f| {
                    batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                        Error::Internal(format!("nexmark batch without `{}`", f.name()))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let decoded = self.converter.finish(
                columns,
                rows,
                Failures::default(),
                Path::new(&self.origin),
                &mut |row| {
                    let event = first + row as u64;
                    (event, format!("nexmark event {event}"))
                },
            )?;
            emit(decoded)?;
        }
        Ok(())
    }

    fn describe(&self) -> serde_json::Value {
        let c = &self.config;
        json!({
            "generator": "nexmark",
            "events": c.events,
            "first_event_rate": c.first_event_rate,
            "base_time_ms": c.base_time_ms,
            "seed": c.seed,
            "proportions": [c.person_proportion, c.auction_proportion, c.bid_proportion],
            "out_of_order_group_size": c.out_of_order_group_size,
        })
    }
}

fn config_from_options(def: &TableDef) -> Result<NexmarkConfig> {
    let bad =
        |key: &str, message: String| Error::option(&def.name, format!("option `{key}`: {message}"));
    let number = |key: &str| -> Result<Option<u64>> {
        def.option(key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(key, format!("'{v}' is not a non-negative whole number")))
            })
            .transpose()
    };
    let small = |key: &str| -> Result<Option<u32>> {
        number(key)?
            .map(|n| u32::try_from(n).map_err(|_| bad(key, format!("{n} is too large"))))
            .transpose()
    };
    let events =
        match number("events.num")? {
            Some(0) | None => return Err(bad(
                "events.num",
                "a positive number of events is required: Flowline's nexmark source is bounded \
                 (Flink's default 0 means unbounded)"
                    .into(),
            )),
            Some(n) => n,
        };
    let mut config = NexmarkConfig {
        events,
        ..NexmarkConfig::default()
    };
    if let Some(rate) = number("first-event.rate")? {
        config.first_event_rate = rate;
    }
    if let Some(next) = number("next-event.rate")? {
        if next != config.first_event_rate {
            return Err(bad(
                "next-event.rate",
                format!(
                    "{next} differs from first-event.rate {}; only a constant rate is \
                     generated (Flink's own generator times events by first-event.rate only)",
                    config.first_event_rate
                ),
            ));
        }
    }
    if let Some(shape) = def.option("rate.shape") {
        if !matches!(shape.to_ascii_uppercase().as_str(), "SQUARE" | "SINE") {
            return Err(bad(
                "rate.shape",
                format!("unknown shape '{shape}' (valid: 'SQUARE', 'SINE')"),
            ));
        }
    }
    if let Some(period) = def.option("rate.period") {
        flowline_log::parse_duration_ms(period)
            .map_err(|_| bad("rate.period", format!("'{period}' is not a duration")))?;
    }
    // Events are produced as fast as the pipeline takes them; their times follow the rate.
    if options::bool_option(def, "rate.limited", false)? {
        return Err(bad(
            "rate.limited",
            "'true' is not supported: events are generated as fast as they are consumed, \
             their event times follow first-event.rate"
                .into(),
        ));
    }
    if !options::bool_option(def, "max-emit-speed", true)? {
        return Err(bad(
            "max-emit-speed",
            "'false' is not supported: events are generated as fast as they are consumed".into(),
        ));
    }
    if options::bool_option(def, "keep-alive", false)? {
        return Err(bad(
            "keep-alive",
            "'true' is not supported: the source ends after events.num events".into(),
        ));
    }
    if let Some(stop) = def.option("stop-at") {
        if stop.trim() != "-1" {
            return Err(bad(
                "stop-at",
                format!("'{stop}' is not supported; set events.num to the number of events"),
            ));
        }
    }
    for (key, slot) in [
        ("person.avg-size", &mut config.avg_person_byte_size),
        ("auction.avg-size", &mut config.avg_auction_byte_size),
        ("bid.avg-size", &mut config.avg_bid_byte_size),
    ] {
        if let Some(v) = def.option(key) {
            *slot = parse_memory_size(v).ok_or_else(|| {
                bad(
                    key,
                    format!("'{v}' is not a size such as 200b, 1kb or 2mb (at most 4 GiB)"),
                )
            })?;
        }
    }
    for (key, slot) in [
        ("person.proportion", &mut config.person_proportion),
        ("auction.proportion", &mut config.auction_proportion),
        ("bid.proportion", &mut config.bid_proportion),
        (
            "out-of-order.group-size",
            &mut config.out_of_order_group_size,
        ),
        ("seed", &mut config.seed),
    ] {
        if let Some(n) = number(key)? {
            *slot = n;
        }
    }
    for (key, slot) in [
        ("bid.hot-ratio.auctions", &mut config.hot_auction_ratio),
        ("bid.hot-ratio.bidders", &mut config.hot_bidders_ratio),
        ("auction.hot-ratio.sellers", &mut config.hot_sellers_ratio),
    ] {
        if let Some(n) = small(key)? {
            *slot = n;
        }
    }
    config.base_time_ms = match def.option("base-time") {
        None => DEFAULT_BASE_TIME_MS,
        Some(v) => parse_base_time(v).ok_or_else(|| {
            bad(
                "base-time",
                format!(
                    "'{v}' is not milliseconds since the epoch or a UTC time such as \
                     2024-01-01 00:00:00"
                ),
            )
        })?,
    };
    config
        .validate()
        .map_err(|e| Error::option(&def.name, e.0))?;
    Ok(config)
}

/// Flink's `MemorySize` text: a number with an optional unit (b, kb, mb, gb; 1024-based).
fn parse_memory_size(text: &str) -> Option<u32> {
    let text = text.trim().to_ascii_lowercase();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let value: u64 = text[..digits].parse().ok()?;
    let unit = match text[digits..].trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        _ => return None,
    };
    u32::try_from(value.checked_mul(unit)?).ok()
}

fn parse_base_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
    .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Needed;
    use arrow::array::RecordBatch;
    use flowline_core::ColumnDef;
    use std::collections::BTreeMap;

    fn def(options: &[(&str, &str)]) -> TableDef {
        TableDef {
            name: "datagen".into(),
            columns: nested_schema()
                .fields()
                .iter()
                .map(|f| ColumnDef {
                    name: f.name().clone(),
                    data_type: f.data_type().clone(),
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

    #[test]
    fn parts_read_in_order_are_one_generator() {
        let events = 2 * PART_EVENTS + 1000;
        let n = events.to_string();
        let source = NexmarkSource::open(&def(&[
            ("connector", "nexmark"),
            ("events.num", &n),
            ("seed", "7"),
        ]))
        .unwrap();
        assert_eq!(source.parts(), 3);
        let mut reference = NexmarkGenerator::new(source.config().clone()).unwrap();
        for part in 0..source.parts() {
            source
                .read_part(part, 50_000, None, &mut |d| {
                    assert!(d.rejects.is_empty());
                    let expected = reference.next_batch(d.batch.num_rows()).unwrap();
                    assert_eq!(d.batch.columns(), expected.columns(), "part {part}");
                    Ok(())
                })
                .unwrap();
        }
        assert!(reference.next_batch(1).is_none(), "every event was read");
    }

    #[test]
    fn extra_padding_nobody_reads_is_left_empty() {
        use arrow::array::{Array, AsArray, StructArray};
        let mut table = def(&[("connector", "nexmark"), ("events.num", "3000")]);
        // Nexmark's `dateTime AS CASE ...`: it reads a field of every ROW, never `extra`.
        table.computed.push(flowline_core::ComputedColumn {
            name: "dateTime".into(),
            expr: flowline_core::ComputedExpr::Sql(
                "CASE WHEN event_type = 0 THEN person.\"dateTime\" \
                 WHEN event_type = 1 THEN auction.\"dateTime\" ELSE bid.\"dateTime\" END"
                    .into(),
            ),
            position: 4,
        });
        let source = NexmarkSource::open(&table).unwrap();
        let schema = source.schema();
        let at = |name: &str| schema.index_of(name).unwrap();
        // Reads bid.price and the whole person; auction only through `dateTime`.
        let mut needed = Needed::none(schema.fields().len());
        needed.add_field(at("bid"), "price");
        needed.add_column(at("person"));
        needed.add_column(at("dateTime"));
        let read = |needed: Option<&Needed>| {
            let mut batches = vec![];
            source
                .read_part(0, 1000, needed, &mut |d| {
                    batches.push(d.batch);
                    Ok(())
                })
                .unwrap();
            arrow::compute::concat_batches(&schema, &batches).unwrap()
        };
        let (all, some) = (read(None), read(Some(&needed)));
        let extra_bytes = |batch: &RecordBatch, column: &str| {
            let row = batch
                .column(at(column))
                .as_any()
                .downcast_ref::<StructArray>()
                .unwrap();
            row.column_by_name("extra")
                .unwrap()
                .as_string::<i32>()
                .values()
                .len()
        };
        assert!(extra_bytes(&all, "bid") > 100_000 && extra_bytes(&all, "auction") > 10_000);
        assert_eq!(extra_bytes(&some, "bid"), 0);
        assert_eq!(extra_bytes(&some, "auction"), 0);
        assert_eq!(extra_bytes(&some, "person"), extra_bytes(&all, "person"));
        // Every other value is the same: `extra` is the last value drawn for an event.
        for (i, field) in schema.fields().iter().enumerate() {
            match all.column(i).as_any().downcast_ref::<StructArray>() {
                Some(row) => {
                    let other = some
                        .column(i)
                        .as_any()
                        .downcast_ref::<StructArray>()
                        .unwrap();
                    assert_eq!(row.nulls(), other.nulls(), "{}", field.name());
                    for name in row.column_names().into_iter().filter(|n| *n != "extra") {
                        assert_eq!(
                            row.column_by_name(name),
                            other.column_by_name(name),
                            "{}.{name}",
                            field.name()
                        );
                    }
                }
                None => assert_eq!(all.column(i), some.column(i), "{}", field.name()),
            }
        }

        // Declared fields take the generated ones by position: a renamed `extra` that is read
        // is generated.
        let mut renamed = def(&[("connector", "nexmark"), ("events.num", "3000")]);
        for c in &mut renamed.columns {
            if let DataType::Struct(fields) = &c.data_type {
                let fields: Vec<_> = fields
                    .iter()
                    .map(|f| match f.name().as_str() {
                        "extra" => f.as_ref().clone().with_name("padding"),
                        _ => f.as_ref().clone(),
                    })
                    .collect();
                c.data_type = DataType::Struct(fields.into());
            }
        }
        let source = NexmarkSource::open(&renamed).unwrap();
        let bid = source.schema().index_of("bid").unwrap();
        let mut needed = Needed::none(source.schema().fields().len());
        needed.add_field(bid, "padding");
        let mut padding = 0;
        source
            .read_part(0, 1000, Some(&needed), &mut |d| {
                let row = d
                    .batch
                    .column(bid)
                    .as_any()
                    .downcast_ref::<StructArray>()
                    .unwrap();
                padding += row
                    .column_by_name("padding")
                    .unwrap()
                    .as_string::<i32>()
                    .values()
                    .len();
                Ok(())
            })
            .unwrap();
        assert!(padding > 100_000, "{padding}");
    }

    #[test]
    fn bad_options_and_columns_fail_at_open() {
        let err = |options: &[(&str, &str)]| match NexmarkSource::open(&def(options)) {
            Ok(_) => panic!("{options:?} opened"),
            Err(e) => e.to_string(),
        };
        assert!(err(&[("connector", "nexmark")]).contains("events.num"));
        let e = err(&[
            ("connector", "nexmark"),
            ("events.num", "10"),
            ("bid.proportion", "x"),
        ]);
        assert!(e.contains("bid.proportion") && e.contains("'x'"), "{e}");
        let e = err(&[
            ("connector", "nexmark"),
            ("events.num", "10"),
            ("bid.avg-size", "100mb"),
        ]);
        assert!(e.contains("bid.avg-size") && e.contains("1 MiB"), "{e}");
        let e = err(&[
            ("connector", "nexmark"),
            ("events.num", "10"),
            ("first-event.rate", "100"),
            ("next-event.rate", "200"),
        ]);
        assert!(e.contains("next-event.rate"), "{e}");
        let e = err(&[
            ("connector", "nexmark"),
            ("events.num", "10"),
            ("rate", "1"),
        ]);
        assert!(e.contains("unknown option `rate`"), "{e}");
        let mut d = def(&[("connector", "nexmark"), ("events.num", "10")]);
        d.columns[1].name = "people".into();
        let e = NexmarkSource::open(&d).err().unwrap().to_string();
        assert!(e.contains("`people` is not a Nexmark column"), "{e}");
        d.columns[1].name = "person".into();
        d.columns[0].data_type = arrow::datatypes::DataType::Struct(Default::default());
        let e = NexmarkSource::open(&d).err().unwrap().to_string();
        assert!(e.contains("`event_type` is declared"), "{e}");
    }

    #[test]
    fn memory_sizes_and_times_parse_like_flink() {
        assert_eq!(parse_memory_size("200b"), Some(200));
        assert_eq!(parse_memory_size("1 kb"), Some(1024));
        assert_eq!(parse_memory_size("300"), Some(300));
        assert_eq!(parse_memory_size("5 tb"), None);
        assert_eq!(parse_memory_size("8gb"), None);
        assert_eq!(
            parse_base_time("2024-01-01 00:00:00"),
            Some(DEFAULT_BASE_TIME_MS)
        );
        assert_eq!(
            parse_base_time("2024-01-01T00:00:01Z"),
            Some(DEFAULT_BASE_TIME_MS + 1000)
        );
        assert_eq!(parse_base_time("yesterday"), None);
    }
}
