//! Log lines reach stderr a few at a time instead of one `write` each.
//!
//! order-ingest logs a line per stored order; written one by one, each line would add a system
//! call to the order's cost (docs/decisions.md). Lines are appended to a buffer that a thread
//! writes out every [`FLUSH_INTERVAL`], or at once by the line that fills it past
//! [`FLUSH_BYTES`] (so a stderr that cannot keep up slows the loggers instead of growing the
//! buffer). Every line is appended in one piece. What is still buffered is written by
//! [`LogWriter::flush_process`] (at shutdown) and before a panic's message; a process killed
//! outright loses at most the last interval's lines.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// A buffer this full is written out by the line that filled it.
const FLUSH_BYTES: usize = 64 * 1024;

/// The buffered stderr of the log subscriber; clones share the buffer.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// Wakes the flushing thread when a line arrives in an empty buffer; it sleeps otherwise.
    filled: Condvar,
}

/// The process's writer: one buffer, one thread and one panic hook, however often the log
/// subscriber is set up.
static WRITER: OnceLock<LogWriter> = OnceLock::new();

impl LogWriter {
    /// The process's writer, started (with its flushing thread) on first use. It flushes
    /// before a panic's message is printed, so it lives as long as the process.
    pub fn get() -> io::Result<Self> {
        if let Some(writer) = WRITER.get() {
            return Ok(writer.clone());
        }
        let writer = Self::start()?;
        Ok(WRITER.get_or_init(|| writer).clone())
    }

    /// Writes out the process's buffered lines, if it has a writer: before exiting without
    /// [`super::Telemetry::shutdown`].
    pub fn flush_process() {
        if let Some(writer) = WRITER.get() {
            writer.flush();
        }
    }

    fn start() -> io::Result<Self> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
            filled: Condvar::new(),
        });
        let flushing = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || flush_periodically(&flushing))?;
        let writer = Self { shared };
        let on_panic = writer.shared.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // `try_lock`: a panic on a thread that holds the buffer must not wait for itself.
            if let Ok(mut buffer) = on_panic.buffer.try_lock() {
                Shared::write_out(&mut buffer);
            }
            previous(info);
        }));
        Ok(writer)
    }

    /// Writes out what is buffered.
    fn flush(&self) {
        Shared::write_out(&mut self.shared.lock());
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means a thread panicked while appending a whole line: the
        // buffer holds complete lines either way.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `buffer` to stderr and empties it. Under the lock, so lines keep their order.
    fn write_out(buffer: &mut Vec<u8>) {
        if buffer.is_empty() {
            return;
        }
        // Nowhere to report a failed write of the logs; the lines are dropped rather than
        // kept, so that a closed stderr cannot grow the buffer.
        let _ = io::stderr().lock().write_all(buffer);
        buffer.clear();
    }
}

/// Waits for a line, lets the lines of the next [`FLUSH_INTERVAL`] join it, writes them out.
fn flush_periodically(shared: &Shared) {
    loop {
        let buffer = shared.lock();
        let buffer = shared
            .filled
            .wait_while(buffer, |buffer| buffer.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        drop(buffer);
        std::thread::sleep(FLUSH_INTERVAL);
        Shared::write_out(&mut shared.lock());
    }
}

/// One log line's writer: the line goes into the shared buffer.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut buffer = self.shared.lock();
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(line);
        if buffer.len() >= FLUSH_BYTES {
            Shared::write_out(&mut buffer);
        } else if was_empty {
            self.shared.filled.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}
