//! Key → partition: Kafka's default partitioner, so a key lands on the same partition number
//! as it would in a Kafka topic with the same partition count.
//!
//! `partition = (murmur2(key) & 0x7fff_ffff) % partitions`, where `murmur2` is MurmurHash2
//! (32-bit) with seed `0x9747b28c`, reading the key in 4-byte little-endian blocks, exactly as
//! `org.apache.kafka.common.utils.Utils.murmur2`. The hash depends only on the key bytes: the
//! same key goes to the same partition in every process, on every machine, in every version.
//! Changing it would move keys between partitions, so tests pin its values.

/// MurmurHash2, 32-bit, as Kafka computes it (returned as `u32`; Kafka's `int` is the same bits).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions` (which must be at least 1).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of Kafka's `Utils.murmur2` (from Kafka's own unit tests).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 11] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"1", -1993445489),
            (b"12", 126087238),
            (b"123", -267702483),
            (b"1234", -1614185708),
            (b"12345", -1188365604),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
