//! Progress on the terminal (indicatif) for long batch runs, backfills and replays. Drawn on
//! stderr only when it is a terminal; otherwise nothing is drawn and only the final line (the
//! caller's summary) is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowline_runtime::LiveStatus;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar (when the total is known) or a spinner (while it is not).
pub struct Progress {
    bar: ProgressBar,
    counted: bool,
}

impl Progress {
    pub fn new(prefix: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(prefix.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress {
            bar,
            counted: false,
        }
    }

    /// `done` of `total` (a bar once the total is known), with a message after it.
    pub fn set(&mut self, done: u64, total: Option<u64>, message: String) {
        if let Some(total) = total {
            if !self.counted {
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} [{elapsed}, eta {eta}]",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                self.counted = true;
            }
            self.bar.set_length(total.max(done));
        }
        self.bar.set_position(done);
        self.bar.set_message(message);
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Watches a run's live numbers on a thread until `done` is set: rows read, their rate and the
/// rejects so far.
pub fn watch_run(live: Arc<LiveStatus>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if !console_is_terminal() {
            return;
        }
        let mut p = Progress::new("running");
        let started = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) {
            let s = live.snapshot();
            let read = s.total_read();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            p.set(
                read,
                None,
                format!(
                    "{read} rows read ({:.0} rows/s), {} rejected",
                    read as f64 / secs,
                    s.total_rejects()
                ),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p.finish();
    })
}

/// Whether stderr is a terminal (progress is drawn only there).
pub fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
