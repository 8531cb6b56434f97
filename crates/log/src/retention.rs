//! Retention: delete whole sealed segments, oldest first.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use flowline_core::{Error, Result};

use crate::segment::{corrupt, list_segments, scan_segment, sync_dir};

/// Deletes the oldest sealed segments of the partition folder `dir` while the partition holds
/// more than `retention_bytes`, or while the oldest one's newest record is older than
/// `now_ms - retention_ms`. Stops at the first segment kept (so the remaining offsets stay
/// dense) and never deletes the newest (active) segment. `max_ts` caches the newest timestamp
/// of sealed segments by base offset. Returns the number of segments deleted.
pub(crate) fn apply(
    dir: &Path,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    now_ms: i64,
    max_ts: &mut HashMap<u64, Option<i64>>,
) -> Result<u64> {
    if retention_ms.is_none() && retention_bytes.is_none() {
        return Ok(0);
    }
    let segments = list_segments(dir)?;
    let mut total: u64 = segments.iter().map(|s| s.len).sum();
    let mut deleted = 0;
    for seg in &segments[..segments.len() - 1] {
        let over_size = retention_bytes.is_some_and(|limit| total > limit);
        let expired = match retention_ms {
            Some(ms) if !over_size => {
                let newest = match max_ts.get(&seg.base) {
                    Some(t) => *t,
                    None => match scan_segment(&seg.path, seg.base) {
                        Ok(scan) => {
                            if let Some(reason) = scan.torn {
                                return Err(corrupt(
                                    &seg.path,
                                    scan.valid_len,
                                    scan.next_offset,
                                    &reason,
                                ));
                            }
                            max_ts.insert(seg.base, scan.max_timestamp);
                            scan.max_timestamp
                        }
                        // Deleted meanwhile (retention running elsewhere).
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(Error::io("read", &seg.path, e)),
                    },
                };
                newest.is_none_or(|t| t < now_ms.saturating_sub(ms))
            }
            _ => false,
        };
        if !(over_size || expired) {
            break;
        }
        match std::fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("delete", &seg.path, e)),
        }
        max_ts.remove(&seg.base);
        total -= seg.len;
        deleted += 1;
    }
    if deleted > 0 {
        sync_dir(dir)?;
    }
    Ok(deleted)
}
