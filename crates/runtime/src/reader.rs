//! Reader threads: decode a source's files and deliver batches in file order through bounded
//! channels (backpressure: a slow pipeline stops the readers). With several workers, files are
//! decoded in parallel but still delivered in name order, so every run sees the same sequence.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use flowline_connectors::{Decoded, FileSource};
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
    /// `needed`: the declared columns the pipeline uses (`None`: all of them).
    pub fn start(
        source: Arc<FileSource>,
        batch_size: usize,
        workers: usize,
        needed: Option<Vec<bool>>,
    ) -> SourceReader {
        let needed = needed.map(Arc::new);
        let files = source.files().len();
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
                    let needed = needed.as_deref().map(Vec::as_slice);
                    let result = source.read_file_projected(index, batch_size, needed, &mut |d| {
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
