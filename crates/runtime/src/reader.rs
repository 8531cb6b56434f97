//! Reader threads: decode a bounded source's parts (files, generator ranges) and deliver batches
//! in part order through bounded channels (backpressure: a slow pipeline stops the readers).
//! With several workers, parts are decoded in parallel but still delivered in order, so every
//! run sees the same sequence.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use flowline_connectors::{BoundedSource, Decoded, Needed};
use flowline_core::{Error, Result};

enum Item {
    Batch(Decoded),
    FileDone,
    Failed(Error),
}

pub struct SourceReader {
    receivers: Vec<Receiver<Item>>,
    file: usize,
    files: usize,
    threads: Vec<JoinHandle<()>>,
}

impl SourceReader {
    /// `needed`: the declared columns (and ROW fields) the pipeline uses (`None`: all of them).
    pub fn start(
        source: Arc<dyn BoundedSource>,
        batch_size: usize,
        workers: usize,
        needed: Option<Needed>,
    ) -> SourceReader {
        let needed = needed.map(Arc::new);
        let files = source.parts();
        let workers = workers.clamp(1, files.max(1));
        let mut receivers = vec![];
        let mut threads = vec![];
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Item>(4);
            receivers.push(rx);
            let source = source.clone();
            let needed = needed.clone();
            threads.push(std::thread::spawn(move || {
                for index in (w..files).step_by(workers) {
                    let needed = needed.as_deref();
                    let result = source.read_part(index, batch_size, needed, &mut |d| {
                        tx.send(Item::Batch(d))
                            .map_err(|_| Error::Internal("reader stopped".into()))
                    });
                    let last = match result {
                        Ok(()) => Item::FileDone,
                        Err(e) => Item::Failed(e),
                    };
                    let failed = matches!(last, Item::Failed(_));
                    if tx.send(last).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        SourceReader {
            receivers,
            file: 0,
            files,
            threads,
        }
    }

    /// The next decoded batch with the index of its file, in file order; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<(usize, Decoded)>> {
        while self.file < self.files {
            let rx = &self.receivers[self.file % self.receivers.len()];
            match rx.recv() {
                Ok(Item::Batch(d)) => return Ok(Some((self.file, d))),
                Ok(Item::FileDone) => self.file += 1,
                Ok(Item::Failed(e)) => return Err(e),
                Err(_) => return Err(Error::Internal("reader thread ended early".into())),
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Ok(None)
    }
}
