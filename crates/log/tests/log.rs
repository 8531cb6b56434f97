//! The embedded log through its public API: round trips over segment rolls, reopen, key
//! partitioning, torn tails, corruption, retention, concurrent readers, writer exclusion,
//! consumer groups, fsync policies, and a property test of crash recovery.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowline_log::{format, now_ms, FsyncPolicy, Log, Record, Topic, TopicConfig};
use proptest::prelude::*;

fn config(partitions: u32, segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        partitions,
        segment_bytes,
        fsync: FsyncPolicy::Never,
        ..TopicConfig::default()
    }
}

fn new_topic(config: TopicConfig) -> (tempfile::TempDir, Log, Topic) {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log")).unwrap();
    let topic = log.create_topic("events", config).unwrap();
    (tmp, log, topic)
}

/// The segment files of a partition, oldest first.
fn segments(log: &Log, partition: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(log.root().join("events").join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
    files.sort();
    files
}

fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn read_all(topic: &Topic, partition: u32) -> Vec<Record> {
    topic
        .reader(partition)
        .unwrap()
        .read(0, usize::MAX, usize::MAX)
        .unwrap()
}

/// A 100-byte frame: 29 bytes of frame header, no key, 71 bytes of value.
fn value100(i: u64) -> Vec<u8> {
    format!("{i:071}").into_bytes()
}

fn expected(i: u64) -> Record {
    Record {
        offset: i,
        timestamp: 1_000 + i as i64,
        key: (!i.is_multiple_of(3)).then(|| format!("key-{}", i % 5).into_bytes()),
        value: format!("value number {i} {}", "x".repeat((i % 17) as usize)).into_bytes(),
    }
}

fn append_expected(writer: &mut flowline_log::PartitionWriter, range: std::ops::Range<u64>) {
    for i in range {
        let r = expected(i);
        assert_eq!(
            writer
                .append(r.key.as_deref(), &r.value, r.timestamp)
                .unwrap(),
            i
        );
    }
}

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let (_tmp, log, topic) = new_topic(config(1, 256));
    let mut writer = topic.writer(0).unwrap();
    append_expected(&mut writer, 0..100);
    assert_eq!(writer.next_offset(), 100);
    drop(writer);

    // Rolled many times; each file is named by the offset of its first record, and no segment
    // was grown past the segment size by a record that could go to a new one.
    let files = segments(&log, 0);
    assert!(files.len() >= 10, "{} segments", files.len());
    assert_eq!(base_of(&files[0]), 0);
    for f in &files {
        assert!(fs::metadata(f).unwrap().len() <= 256, "{}", f.display());
    }
    let all = read_all(&topic, 0);
    assert_eq!(all, (0..100).map(expected).collect::<Vec<_>>());
    // Each segment holds whole records, and the next one starts at the offset after its last.
    let mut records = all.iter();
    let mut next_base = 0;
    for f in &files {
        assert_eq!(base_of(f), next_base);
        let mut size = fs::metadata(f).unwrap().len();
        while size > 0 {
            let r = records.next().unwrap();
            size -= format::encoded_len(r.key.as_deref(), &r.value) as u64;
            next_base = r.offset + 1;
        }
    }
    assert!(records.next().is_none());

    // Small reads continue where the last one stopped; reads from any offset start there.
    let mut reader = topic.reader(0).unwrap();
    let mut next = 0;
    let mut chunked = Vec::new();
    loop {
        let batch = reader.read(next, 7, usize::MAX).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        next = batch.last().unwrap().offset + 1;
        chunked.extend(batch);
    }
    assert_eq!(chunked, all);
    for from in [99, 37, 0, 64, 1, 50] {
        let got = reader.read(from, 3, usize::MAX).unwrap();
        assert_eq!(
            got,
            (from..(from + 3).min(100))
                .map(expected)
                .collect::<Vec<_>>()
        );
    }
    // A byte budget still returns one record, and stops after it is reached.
    assert_eq!(reader.read(10, 100, 1).unwrap().len(), 1);
    assert_eq!(reader.read(100, 10, usize::MAX).unwrap(), vec![]);
    let err = reader.read(101, 10, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("offset 101 is beyond the end (100)"), "{err}");
    assert_eq!(reader.offsets().unwrap(), (0, 100));

    // Reopen: a new handle sees the same records; a new writer continues at 100.
    let log2 = Log::open(log.root()).unwrap();
    let topic2 = log2.topic("events").unwrap();
    assert_eq!(topic2.config(), topic.config());
    assert_eq!(topic2.offsets(0).unwrap(), (0, 100));
    assert_eq!(read_all(&topic2, 0), all);
    let mut writer = topic2.writer(0).unwrap();
    assert!(writer.recovery().is_none());
    append_expected(&mut writer, 100..120);
    assert_eq!(
        read_all(&topic2, 0),
        (0..120).map(expected).collect::<Vec<_>>()
    );
    // The reader kept from before sees the new records too.
    assert_eq!(reader.read(100, 100, usize::MAX).unwrap().len(), 20);
}

#[test]
fn segment_bases_follow_the_records() {
    let (_tmp, log, topic) = new_topic(config(1, 1000));
    let mut writer = topic.writer(0).unwrap();
    for i in 0..35 {
        writer.append(None, &value100(i), 0).unwrap();
    }
    let bases: Vec<u64> = segments(&log, 0).iter().map(|p| base_of(p)).collect();
    assert_eq!(bases, vec![0, 10, 20, 30]);
    let sizes: Vec<u64> = segments(&log, 0)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(sizes, vec![1000, 1000, 1000, 500]);
}

#[test]
fn producer_offsets_are_dense_per_partition_and_survive_reopen() {
    let (_tmp, log, topic) = new_topic(config(4, 300));
    let mut producer = topic.producer().unwrap();
    let mut sent: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for i in 0..200u64 {
        let key = format!("user-{}", i % 13);
        let value = format!("event {i}").into_bytes();
        let key = (!i.is_multiple_of(4)).then_some(key.as_bytes());
        let (p, offset) = producer.append(key, &value, i as i64).unwrap();
        sent.entry(p).or_default().push((offset, value));
    }
    producer.flush().unwrap();
    drop(producer);
    for p in 0..4 {
        let records = read_all(&topic, p);
        let want = sent.get(&p).cloned().unwrap_or_default();
        assert_eq!(records.len(), want.len());
        for (n, (r, (offset, value))) in records.iter().zip(&want).enumerate() {
            assert_eq!((r.offset, *offset), (n as u64, n as u64));
            assert_eq!(&r.value, value);
        }
    }
    // Reopened, every partition continues at its end.
    let topic = Log::open(log.root()).unwrap().topic("events").unwrap();
    let mut producer = topic.producer().unwrap();
    let ends = producer.end_offsets();
    for p in 0..4 {
        assert_eq!(ends[p as usize], sent.get(&p).map_or(0, Vec::len) as u64);
        let offset = producer.append_to(p, None, b"more", 0).unwrap();
        assert_eq!(offset, ends[p as usize]);
    }
    assert!(producer.append_to(4, None, b"x", 0).is_err());
}

#[test]
fn keys_go_to_stable_partitions() {
    // Pinned: a change of the hash would move keys between partitions of existing topics.
    let pinned: [(&str, u32, u32); 8] = [
        ("store-1", 0, 2),
        ("store-2", 1, 2),
        ("store-3", 1, 1),
        ("alice", 5, 0),
        ("bob", 6, 0),
        ("", 1, 0),
        ("order-42", 0, 0),
        ("🦀", 7, 1),
    ];
    for (key, p8, p3) in pinned {
        assert_eq!(
            flowline_log::partition_for_key(key.as_bytes(), 8),
            p8,
            "{key}"
        );
        assert_eq!(
            flowline_log::partition_for_key(key.as_bytes(), 3),
            p3,
            "{key}"
        );
    }
    let (_tmp, _log, topic) = new_topic(config(8, 1 << 20));
    let mut producer = topic.producer().unwrap();
    for (key, p8, _) in pinned {
        assert_eq!(topic.partition_for_key(key.as_bytes()), p8);
        for _ in 0..3 {
            assert_eq!(
                producer.append(Some(key.as_bytes()), b"v", 0).unwrap().0,
                p8
            );
        }
    }
    // Without key: round-robin.
    let ps: Vec<u32> = (0..10)
        .map(|_| producer.append(None, b"v", 0).unwrap().0)
        .collect();
    assert_eq!(ps, vec![0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
}

/// Appends 10 records to a 1-partition topic with 3 segments, returns the last segment.
fn ten_records(topic: &Topic, log: &Log) -> PathBuf {
    let mut writer = topic.writer(0).unwrap();
    append_expected(&mut writer, 0..10);
    drop(writer);
    segments(log, 0).pop().unwrap()
}

fn check_recovered_to_nine(topic: &Topic, cut_at_least: u64) {
    // Readers never return the damaged record.
    assert_eq!(read_all(topic, 0), (0..9).map(expected).collect::<Vec<_>>());
    assert_eq!(topic.offsets(0).unwrap(), (0, 9));
    // A writer cuts it and continues at offset 9.
    let mut writer = topic.writer(0).unwrap();
    let recovery = writer.recovery().cloned().expect("a recovery");
    assert!(recovery.truncated_bytes >= cut_at_least, "{recovery:?}");
    assert_eq!(writer.next_offset(), 9);
    assert_eq!(writer.append(None, b"after recovery", 5).unwrap(), 9);
    drop(writer);
    let all = read_all(topic, 0);
    assert_eq!(all.len(), 10);
    assert_eq!(all[..9], (0..9).map(expected).collect::<Vec<_>>()[..]);
    assert_eq!(
        (all[9].offset, &all[9].value[..]),
        (9, &b"after recovery"[..])
    );
    // And a second writer finds nothing to cut.
    assert!(topic.writer(0).unwrap().recovery().is_none());
}

#[test]
fn torn_tail_is_truncated_to_the_last_good_record() {
    let (_tmp, log, topic) = new_topic(config(1, 400));
    let last = ten_records(&topic, &log);
    let len = fs::metadata(&last).unwrap().len();
    let last_len = format::encoded_len(expected(9).key.as_deref(), &expected(9).value) as u64;
    // Cut in the middle of the last record.
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - last_len / 2).unwrap();
    drop(f);
    check_recovered_to_nine(&topic, last_len - last_len / 2);
    assert_eq!(
        fs::metadata(&last).unwrap().len(),
        len - last_len + format::encoded_len(None, b"after recovery") as u64
    );
}

#[test]
fn flipped_byte_in_the_last_record_is_truncated() {
    let (_tmp, log, topic) = new_topic(config(1, 400));
    let last = ten_records(&topic, &log);
    let mut bytes = fs::read(&last).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x01; // in the value of record 9
    fs::write(&last, &bytes).unwrap();
    check_recovered_to_nine(
        &topic,
        format::encoded_len(expected(9).key.as_deref(), &expected(9).value) as u64,
    );
}

#[test]
fn garbage_and_zeros_after_the_last_record_are_truncated() {
    for tail in [vec![0u8; 100], b"not a record at all".to_vec()] {
        let (_tmp, log, topic) = new_topic(config(1, 400));
        let last = ten_records(&topic, &log);
        OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        assert_eq!(read_all(&topic, 0).len(), 10);
        let writer = topic.writer(0).unwrap();
        assert_eq!(
            writer.recovery().unwrap().truncated_bytes,
            tail.len() as u64
        );
        assert_eq!(writer.next_offset(), 10);
    }
}

#[test]
fn readers_never_see_a_partially_written_record() {
    let (_tmp, log, topic) = new_topic(config(1, 1 << 20));
    let mut writer = topic.writer(0).unwrap();
    append_expected(&mut writer, 0..3);
    drop(writer);
    let mut frame = Vec::new();
    format::encode(3, 42, Some(b"k"), b"a record being written", &mut frame);
    let seg = segments(&log, 0).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&seg).unwrap();
    let mut reader = topic.reader(0).unwrap();
    // Every prefix of the frame, byte by byte: the reader returns the 3 complete records only.
    for cut in 0..frame.len() {
        if cut > 0 {
            file.write_all(&frame[cut - 1..cut]).unwrap();
        }
        assert_eq!(
            reader.read(0, 100, usize::MAX).unwrap(),
            (0..3).map(expected).collect::<Vec<_>>()
        );
        assert_eq!(
            reader.read(3, 100, usize::MAX).unwrap(),
            vec![],
            "cut {cut}"
        );
        assert_eq!(reader.offsets().unwrap(), (0, 3));
    }
    // The last byte completes it: the same reader now returns it.
    file.write_all(&frame[frame.len() - 1..]).unwrap();
    let got = reader.read(3, 100, usize::MAX).unwrap();
    assert_eq!(
        got,
        vec![Record {
            offset: 3,
            timestamp: 42,
            key: Some(b"k".to_vec()),
            value: b"a record being written".to_vec()
        }]
    );
    assert_eq!(topic.writer(0).unwrap().next_offset(), 4);
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error_naming_file_and_offset() {
    let (_tmp, log, topic) = new_topic(config(1, 1000));
    let mut writer = topic.writer(0).unwrap();
    for i in 0..35 {
        writer.append(None, &value100(i), 0).unwrap();
    }
    drop(writer);
    let first = segments(&log, 0)[0].clone();
    let mut bytes = fs::read(&first).unwrap();
    bytes[450] ^= 0xff; // inside record 4 (bytes 400..500)
    fs::write(&first, &bytes).unwrap();

    let mut reader = topic.reader(0).unwrap();
    // Records before the damage are readable.
    assert_eq!(reader.read(0, 4, usize::MAX).unwrap().len(), 4);
    let err = reader.read(4, 10, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("00000000000000000000.log"), "{err}");
    assert!(err.contains("byte 400 (offset 4)"), "{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(topic.reader(0).unwrap().read(0, 100, usize::MAX).is_err());
    // Other segments still read, and a writer still opens (it only recovers the active one).
    assert_eq!(reader.read(10, 100, usize::MAX).unwrap().len(), 25);
    let mut writer = topic.writer(0).unwrap();
    assert!(writer.recovery().is_none());
    assert_eq!(writer.append(None, b"x", 0).unwrap(), 35);

    // A sealed segment cut short is an error too, not a silent gap.
    let second = segments(&log, 0)[1].clone();
    let f = OpenOptions::new().write(true).open(&second).unwrap();
    f.set_len(950).unwrap();
    drop(f);
    let err = topic
        .reader(0)
        .unwrap()
        .read(10, 100, usize::MAX)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("00000000000000000010.log") && err.contains("byte 900 (offset 19)"),
        "{err}"
    );
    assert!(err.contains("incomplete record"), "{err}");
}

#[test]
fn retention_by_size_deletes_whole_sealed_segments_oldest_first() {
    let mut cfg = config(1, 1000);
    cfg.retention_bytes = Some(2500);
    let (_tmp, log, topic) = new_topic(cfg);
    let mut writer = topic.writer(0).unwrap();
    for i in 0..100 {
        writer.append(None, &value100(i), 0).unwrap();
    }
    // Applied at each roll: before record 90 went in, 3 sealed segments (3000 bytes) were too
    // many, so only 70 and 80 stayed beside the new active segment 90.
    let bases: Vec<u64> = segments(&log, 0).iter().map(|p| base_of(p)).collect();
    assert_eq!(bases, vec![70, 80, 90]);
    assert_eq!(topic.offsets(0).unwrap(), (70, 100));
    // Now 3000 bytes: enforcing deletes segment 70; the active one stays even when alone over.
    assert_eq!(topic.enforce_retention().unwrap(), 1);
    assert_eq!(topic.offsets(0).unwrap(), (80, 100));
    assert_eq!(topic.enforce_retention().unwrap(), 0);
    // Reading from a deleted offset starts at the new start offset.
    let records = read_all(&topic, 0);
    assert_eq!(records.first().unwrap().offset, 80);
    assert_eq!(records.len(), 20);
    assert_eq!(records[0].value, value100(80));
    // A reader positioned in a segment that is then deleted moves on to the start offset.
    let mut reader = topic.reader(0).unwrap();
    assert_eq!(reader.read(85, 1, usize::MAX).unwrap()[0].offset, 85);
    for i in 100..125 {
        writer.append(None, &value100(i), 0).unwrap();
    }
    assert_eq!(topic.offsets(0).unwrap().0, 100);
    let got = reader.read(86, 100, usize::MAX).unwrap();
    assert!(got.iter().all(|r| r.offset >= 86));
    let got = reader
        .read(got.last().map_or(86, |r| r.offset + 1), 100, usize::MAX)
        .unwrap();
    assert_eq!(got.first().map(|r| r.offset), Some(100));
}

#[test]
fn retention_by_age_deletes_expired_sealed_segments_only() {
    let hour = 3_600_000;
    let mut cfg = config(1, 1000);
    cfg.retention_ms = Some(hour);
    let (_tmp, log, topic) = new_topic(cfg);
    let old = now_ms() - 2 * hour;
    let new = now_ms();
    let mut writer = topic.writer(0).unwrap();
    // Segment 0: old. Segment 10: old but its last record is new. Segment 20: old.
    for i in 0..35 {
        let ts = if i == 19 || i >= 30 { new } else { old };
        writer.append(None, &value100(i), ts).unwrap();
    }
    // Segment 0 went when it was sealed; segment 10 stays (newest record is new), and so does
    // the old segment 20 behind it: retention keeps offsets dense.
    let bases: Vec<u64> = segments(&log, 0).iter().map(|p| base_of(p)).collect();
    assert_eq!(bases, vec![10, 20, 30]);
    assert_eq!(topic.offsets(0).unwrap(), (10, 35));
    assert_eq!(topic.enforce_retention().unwrap(), 0);
    drop(writer);

    // Explicit enforcement after the records age; the active segment is never deleted.
    let mut cfg = config(1, 1000);
    cfg.retention_ms = Some(2000);
    let (_tmp2, log2, topic2) = new_topic(cfg);
    let mut writer = topic2.writer(0).unwrap();
    for i in 0..25 {
        writer.append(None, &value100(i), now_ms()).unwrap();
    }
    assert_eq!(topic2.offsets(0).unwrap(), (0, 25));
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(topic2.enforce_retention().unwrap(), 2);
    let bases: Vec<u64> = segments(&log2, 0).iter().map(|p| base_of(p)).collect();
    assert_eq!(bases, vec![20]);
    assert_eq!(topic2.offsets(0).unwrap(), (20, 25));
    assert_eq!(writer.append(None, &value100(25), now_ms()).unwrap(), 25);
}

#[test]
fn readers_in_other_threads_see_a_growing_prefix() {
    const N: u64 = 3000;
    let (_tmp, log, topic) = new_topic(config(1, 4096));
    let root = log.root().to_path_buf();
    let value = |i: u64| format!("record-{i:06}-{}", "y".repeat((i % 50) as usize)).into_bytes();
    let readers: Vec<_> = (0..3)
        .map(|n| {
            let root = root.clone();
            std::thread::spawn(move || {
                // Each reader has its own handles, as another process would.
                let topic = Log::open(&root).unwrap().topic("events").unwrap();
                let mut reader = topic.reader(0).unwrap();
                let mut next = 0;
                let mut last_end = 0;
                let deadline = Instant::now() + Duration::from_secs(120);
                while next < N {
                    assert!(Instant::now() < deadline, "reader {n} stuck at {next}");
                    let batch = reader.read(next, 1 + n * 40, 16 << 10).unwrap();
                    for r in &batch {
                        assert_eq!(r.offset, next, "reader {n}");
                        assert_eq!(r.value, value(next), "reader {n}");
                        assert_eq!(r.timestamp, next as i64);
                        next += 1;
                    }
                    let (_, end) = reader.offsets().unwrap();
                    assert!(end >= last_end && end >= next, "end went back");
                    last_end = end;
                    if n == 2 && next > 0 {
                        // Seek back now and then: the sparse index finds the place.
                        let from = next / 2;
                        let again = reader.read(from, 2, usize::MAX).unwrap();
                        assert_eq!(again[0].offset, from);
                        assert_eq!(again[0].value, value(from));
                    }
                    if batch.is_empty() {
                        std::thread::yield_now();
                    }
                }
                next
            })
        })
        .collect();
    let mut writer = topic.writer(0).unwrap();
    for i in 0..N {
        assert_eq!(writer.append(None, &value(i), i as i64).unwrap(), i);
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for r in readers {
        assert_eq!(r.join().unwrap(), N);
    }
    assert!(segments(&log, 0).len() > 10);
}

#[test]
fn a_second_writer_of_a_partition_is_refused() {
    let (_tmp, log, topic) = new_topic(config(2, 1 << 20));
    let writer = topic.writer(0).unwrap();
    let other = Log::open(log.root()).unwrap().topic("events").unwrap();
    let err = other.writer(0).err().expect("refused").to_string();
    assert!(
        err.contains("partition 0 of topic `events` already has a writer"),
        "{err}"
    );
    assert!(err.contains("writer.lock"), "{err}");
    assert!(
        topic.writer(0).is_err(),
        "same handle, same process: refused too"
    );
    let err = other.producer().err().expect("refused").to_string();
    assert!(err.contains("already has a writer"), "{err}");
    // Another partition is free; readers need no lock.
    let mut w1 = other.writer(1).unwrap();
    w1.append(None, b"x", 0).unwrap();
    assert_eq!(
        other.reader(0).unwrap().read(0, 10, usize::MAX).unwrap(),
        vec![]
    );
    drop(w1);
    drop(writer);
    let mut again = other.writer(0).unwrap();
    assert_eq!(again.append(None, b"y", 0).unwrap(), 0);
}

#[test]
fn consumer_groups_commit_atomically_and_report_lag() {
    let (_tmp, log, topic) = new_topic(config(3, 1 << 20));
    let mut producer = topic.producer().unwrap();
    for i in 0..30 {
        producer.append_to(i % 3, None, b"v", 0).unwrap();
    }
    assert_eq!(topic.committed("billing").unwrap(), BTreeMap::new());
    assert_eq!(topic.groups().unwrap(), Vec::<String>::new());
    topic.commit("billing", 0, 4).unwrap();
    topic
        .commit_offsets("billing", &BTreeMap::from([(1, 10), (2, 7)]))
        .unwrap();
    topic.commit("billing", 2, 9).unwrap();
    topic.commit("audit", 1, 1).unwrap();
    assert_eq!(
        topic.committed("billing").unwrap(),
        BTreeMap::from([(0, 4), (1, 10), (2, 9)])
    );
    assert_eq!(topic.groups().unwrap(), vec!["audit", "billing"]);
    // Another handle reads the same; the file is complete JSON and no temporary is left.
    let other = Log::open(log.root()).unwrap().topic("events").unwrap();
    assert_eq!(other.committed("audit").unwrap(), BTreeMap::from([(1, 1)]));
    let groups_dir = log.root().join("events/groups");
    let names: Vec<String> = fs::read_dir(&groups_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(groups_dir.join("billing.json")).unwrap()).unwrap();
    assert_eq!(json["offsets"]["1"], 10);
    // Lag = end - committed.
    assert_eq!(
        topic.lag("billing").unwrap(),
        BTreeMap::from([(0, 6), (1, 0), (2, 1)])
    );
    producer.append_to(1, None, b"v", 0).unwrap();
    let d = topic.describe().unwrap();
    assert_eq!(
        d.partitions
            .iter()
            .map(|p| p.end_offset)
            .collect::<Vec<_>>(),
        vec![10, 11, 10]
    );
    let billing = d.groups.iter().find(|g| g.group == "billing").unwrap();
    assert_eq!(billing.lag, 8);
    assert_eq!(billing.partitions[1].lag, Some(1));
    let audit = d.groups.iter().find(|g| g.group == "audit").unwrap();
    assert_eq!(audit.partitions[0].committed, None);
    assert_eq!(audit.partitions[0].lag, None);
    assert_eq!(audit.lag, 10);
    // Bad names and partitions are refused.
    assert!(topic
        .commit("../x", 0, 1)
        .unwrap_err()
        .to_string()
        .contains("invalid group name"));
    assert!(topic
        .commit("g", 3, 1)
        .unwrap_err()
        .to_string()
        .contains("no partition 3"));
}

#[test]
fn concurrent_commits_of_one_group_lose_nothing() {
    let (_tmp, log, topic) = new_topic(config(8, 1 << 20));
    let threads: Vec<_> = (0..8u32)
        .map(|p| {
            let topic = Log::open(log.root()).unwrap().topic("events").unwrap();
            std::thread::spawn(move || {
                for offset in 1..=20 {
                    topic.commit("g", p, offset).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        topic.committed("g").unwrap(),
        (0..8).map(|p| (p, 20)).collect()
    );
}

#[test]
fn fsync_policies_are_accepted_and_stored() {
    for (text, policy) in [
        ("always", FsyncPolicy::Always),
        ("never", FsyncPolicy::Never),
        ("250ms", FsyncPolicy::Interval(250)),
        ("1s", FsyncPolicy::Interval(1000)),
    ] {
        assert_eq!(text.parse::<FsyncPolicy>().unwrap(), policy);
        let mut cfg = config(2, 512);
        cfg.fsync = policy;
        let (_tmp, log, _topic) = new_topic(cfg);
        let stored: serde_json::Value =
            serde_json::from_slice(&fs::read(log.root().join("events/topic.json")).unwrap())
                .unwrap();
        assert_eq!(stored["fsync"], policy.to_string());
        let reopened = Log::open(log.root()).unwrap().topic("events").unwrap();
        assert_eq!(reopened.config().fsync, policy);
        for override_policy in [
            None,
            Some(FsyncPolicy::Always),
            Some(FsyncPolicy::Interval(1)),
        ] {
            let mut producer = reopened.producer().unwrap();
            if let Some(p) = override_policy {
                producer = producer.with_fsync(p);
            }
            for i in 0..20 {
                producer
                    .append(Some(format!("k{i}").as_bytes()), b"value", i)
                    .unwrap();
            }
            producer.flush().unwrap();
        }
        let total: usize = (0..2).map(|p| read_all(&reopened, p).len()).sum();
        assert_eq!(total, 60);
    }
    for bad in ["sometimes", "0ms", ""] {
        assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
    }
}

#[test]
fn topics_are_created_once_and_named_safely() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path()).unwrap();
    assert_eq!(log.topics().unwrap(), Vec::<String>::new());
    let err = log.topic("orders").unwrap_err().to_string();
    assert!(
        err.contains("no topic `orders`") && err.contains("no topics yet"),
        "{err}"
    );
    let mut cfg = config(3, 1 << 20);
    cfg.retention_ms = Some(7 * 86_400_000);
    cfg.retention_bytes = Some(1 << 30);
    log.create_topic("orders", cfg.clone()).unwrap();
    log.create_topic("a.b_c-d", config(1, 100)).unwrap();
    let err = log
        .create_topic("orders", cfg.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic `orders` already exists"), "{err}");
    assert_eq!(log.topics().unwrap(), vec!["a.b_c-d", "orders"]);
    let err = log.topic("order").unwrap_err().to_string();
    assert!(err.contains("topics: a.b_c-d, orders"), "{err}");
    for bad in ["", ".hidden", "a/b", "..", "sp ace", &"x".repeat(201)] {
        let err = log.create_topic(bad, cfg.clone()).unwrap_err().to_string();
        assert!(err.contains("invalid topic name"), "{bad}: {err}");
    }
    for bad_cfg in [config(0, 100), config(1, 0)] {
        assert!(log.create_topic("bad", bad_cfg).is_err());
    }
    assert!(!tmp.path().join("bad").exists());
    // Layout: topic.json, one folder per partition with an empty first segment.
    let topic = log.topic("orders").unwrap();
    assert_eq!(topic.config(), &cfg);
    assert!(topic.created_ms() > 0);
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(tmp.path().join("orders/topic.json")).unwrap()).unwrap();
    assert_eq!(json["partitions"], 3);
    assert_eq!(json["retention_ms"], 604_800_000);
    assert_eq!(json["retention_bytes"], 1u64 << 30);
    assert_eq!(json["segment_bytes"], 1 << 20);
    assert!(json["created_ms"].as_i64().unwrap() > 0);
    for p in 0..3 {
        let seg = tmp
            .path()
            .join(format!("orders/{p}/00000000000000000000.log"));
        assert_eq!(fs::metadata(seg).unwrap().len(), 0);
        assert_eq!(topic.offsets(p).unwrap(), (0, 0));
    }
    assert!(topic
        .offsets(3)
        .unwrap_err()
        .to_string()
        .contains("partitions 0 to 2"));
    // No temporary folder is left in the root.
    let entries: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

/// A deterministic pseudo-random byte, for corrupting tails in the property test.
fn scramble(seed: u64, i: usize) -> u8 {
    (seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add((i as u64).wrapping_mul(1442695040888963407))
        >> 33) as u8
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random appends over rolling segments, then a random crash: the active segment cut
    /// anywhere, optionally followed by garbage. Reopening always yields a prefix of what was
    /// appended, at least everything in sealed segments, and appending continues after it.
    #[test]
    fn reopen_after_a_torn_tail_yields_a_prefix(
        records in prop::collection::vec(
            (prop::option::of(prop::collection::vec(any::<u8>(), 0..8)), 0usize..200, any::<i64>()),
            1..60,
        ),
        cut_fraction in 0.0f64..=1.0,
        garbage in 0usize..40,
        seed in any::<u64>(),
    ) {
        let (_tmp, log, topic) = new_topic(config(1, 512));
        let mut writer = topic.writer(0).unwrap();
        let appended: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, len, ts))| Record {
                offset: i as u64,
                timestamp: *ts,
                key: key.clone(),
                value: (0..*len).map(|j| scramble(seed, i * 1000 + j)).collect(),
            })
            .collect();
        for r in &appended {
            prop_assert_eq!(writer.append(r.key.as_deref(), &r.value, r.timestamp).unwrap(), r.offset);
        }
        drop(writer);

        let files = segments(&log, 0);
        let last = files.last().unwrap().clone();
        let sealed_records = base_of(&last);
        let len = fs::metadata(&last).unwrap().len();
        let cut = (len as f64 * cut_fraction) as u64;
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let tail: Vec<u8> = (0..garbage).map(|i| scramble(seed ^ 0xdead, i)).collect();
        OpenOptions::new().append(true).open(&last).unwrap().write_all(&tail).unwrap();

        // Readers first (no writer has recovered yet), then a writer.
        let before = read_all(&topic, 0);
        let mut writer = topic.writer(0).unwrap();
        let after = read_all(&topic, 0);
        prop_assert_eq!(&before, &after);
        let n = after.len();
        prop_assert!(n as u64 >= sealed_records);
        prop_assert_eq!(&after[..], &appended[..n]);
        if cut == len && garbage == 0 {
            prop_assert_eq!(n, appended.len());
        }
        prop_assert_eq!(writer.next_offset(), n as u64);
        prop_assert_eq!(writer.append(Some(b"k"), b"next", 1).unwrap(), n as u64);
        drop(writer);
        let again = read_all(&topic, 0);
        prop_assert_eq!(again.len(), n + 1);
        prop_assert_eq!(&again[n].value[..], &b"next"[..]);
    }
}
