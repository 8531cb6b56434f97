//! The FreshMart order generator of `flowline serve` projects (`[[generator]]` in
//! flowline.toml): appends orders to a topic of the embedded log in real time, as a shop would.
//!
//! Each order is a JSON record `{order_id, store_id, customer_id, card_id, amount, event_time}`
//! keyed by `store_id`. Event times are the wall clock minus up to 1.5 s (arrival disorder).
//! Every 100 orders start with a burst of five orders on one stolen card (a velocity-check
//! hit), and every `bad_every`-th order has an unreadable amount (a reject). A new topic can be
//! seeded with `history` orders spread over the past `history_days` days.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowline_log::{Log, TopicConfig};
use serde::Deserialize;

use crate::serve::{Producers, Server};

/// `[[generator]]` of flowline.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    /// Only `freshmart-orders`.
    pub kind: String,
    pub topic: String,
    /// Orders per second.
    #[serde(default = "default_rate")]
    pub rate: u64,
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Every this many orders, one is malformed (0: none).
    #[serde(default = "default_bad_every")]
    pub bad_every: u64,
    #[serde(default = "default_stores")]
    pub stores: u64,
    /// Orders of the past `history_days` days appended when the topic is created, so that
    /// batch pipelines have history from the first run.
    #[serde(default)]
    pub history: u64,
    #[serde(default = "default_history_days")]
    pub history_days: u64,
}

fn default_history_days() -> u64 {
    3
}

fn default_rate() -> u64 {
    50
}
fn default_partitions() -> u32 {
    2
}
fn default_bad_every() -> u64 {
    997
}
fn default_stores() -> u64 {
    8
}

impl GeneratorSpec {
    pub fn check(&self) -> Result<()> {
        if self.kind != "freshmart-orders" {
            bail!(
                "generator kind '{}' is not known (only \"freshmart-orders\")",
                self.kind
            );
        }
        if self.rate == 0 || self.partitions == 0 || self.stores == 0 {
            bail!(
                "generator for topic {}: rate, partitions and stores must be at least 1",
                self.topic
            );
        }
        Ok(())
    }

    /// Creates the topic if it is missing (before pipelines that read it are opened).
    pub fn create_topic(&self, log_dir: &Path) -> Result<()> {
        let log = Log::open(log_dir)?;
        if log.topic(&self.topic).is_err() {
            log.create_topic(
                &self.topic,
                TopicConfig {
                    partitions: self.partitions,
                    ..TopicConfig::default()
                },
            )
            .with_context(|| format!("cannot create topic {}", self.topic))?;
            if self.history > 0 {
                let topic = log.topic(&self.topic)?;
                let mut producer = topic.producer()?;
                let now = chrono::Utc::now().timestamp_millis();
                let span = (self.history_days.max(1) * 86_400_000) as i64;
                for i in 0..self.history {
                    let at = now - span + (i as i64 * span / self.history as i64);
                    let (key, value) = order(i, at, self);
                    producer.append(Some(key.as_bytes()), value.as_bytes(), at)?;
                }
                producer.flush()?;
            }
        }
        Ok(())
    }

    /// Appends orders until `stop`, continuing after the orders already in the topic.
    /// The producer is shared with the server (replays of corrected rejects append too): it is
    /// locked only while a tick's orders are appended.
    pub fn run(&self, log_dir: &Path, producers: &Producers, stop: &AtomicBool) -> Result<()> {
        let topic = Log::open(log_dir)?.topic(&self.topic)?;
        let producer = producers.get(&topic)?;
        let lock = || {
            producer
                .lock()
                .map_err(|_| anyhow::anyhow!("producer of {} poisoned", self.topic))
        };
        // Order numbers go on after the topic's record count: replayed corrections are
        // records too, so a restart may skip numbers but never repeats one.
        let mut next: u64 = lock()?.end_offsets().iter().sum();
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let due = started.elapsed().as_millis() as u64 * self.rate / 1000;
            let now = chrono::Utc::now().timestamp_millis();
            {
                let mut producer = lock()?;
                while sent < due {
                    let (key, value) = order(next, now, self);
                    producer.append(Some(key.as_bytes()), value.as_bytes(), now)?;
                    next += 1;
                    sent += 1;
                }
                producer.flush()?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        lock()?.flush()?;
        Ok(())
    }
}

/// A small deterministic hash for the order's fields.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Order `i` at wall-clock time `now_ms`: (key, JSON value).
pub fn order(i: u64, now_ms: i64, spec: &GeneratorSpec) -> (String, String) {
    let h = mix(i);
    let store = format!("store-{}", h % spec.stores);
    let stolen = i % 100 < 5;
    let card = if stolen {
        format!("card-stolen-{}", i / 100)
    } else {
        format!("card-{}", mix(h) % 100_000)
    };
    let cents = if stolen {
        30_000 + h % 60_000
    } else {
        500 + h % 19_500
    };
    let event_time = chrono::DateTime::from_timestamp_millis(now_ms - (h % 1500) as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    let amount = if spec.bad_every > 0 && i % spec.bad_every == spec.bad_every - 1 {
        "\"n/a\"".to_string()
    } else {
        format!("{}.{:02}", cents / 100, cents % 100)
    };
    let value = format!(
        "{{\"order_id\":{i},\"store_id\":\"{store}\",\"customer_id\":\"c-{}\",\"card_id\":\"{card}\",\"amount\":{amount},\"event_time\":\"{event_time}\"}}",
        mix(h ^ 7) % 5000
    );
    (store, value)
}

/// Starts a generator thread.
pub fn start(
    spec: GeneratorSpec,
    log_dir: std::path::PathBuf,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("generator-{}", spec.topic))
        .spawn(move || {
            if let Err(e) = spec.run(&log_dir, &server.producers, &stop) {
                eprintln!("generator for topic {}: {e:#}", spec.topic);
            }
        })
        .context("cannot start a generator thread")
}
