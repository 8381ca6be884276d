//! Capturing what nobounce logs, per test thread.

use std::{
    cell::RefCell,
    io::{self, Write},
    sync::{Arc, Mutex, Once},
};

/// Captures the formatted tracing output (level INFO and above) of the
/// current thread.
///
/// One global subscriber writes each event into the buffer of the thread
/// that emitted it. (Thread-scoped subscribers, `set_default`, miss events
/// when tests on other threads register the same callsites at the same
/// time.) Use it with `#[tokio::test]` (a current-thread runtime), so that
/// the code under test runs on the test's thread.
///
/// ```
/// let logs = nobounce_test_support::LogCapture::default();
/// let _guard = logs.install();
/// // ... run code that logs ...
/// assert!(logs.lines_with("no such line").is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: RefCell<Option<LogCapture>> = const { RefCell::new(None) };
}

/// Uninstalls the capture of this thread on drop.
#[derive(Debug)]
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Writes to the capture of the current thread, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(capture) = c.borrow().as_ref() {
                capture
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures the events of the current thread until the guard drops.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            // Another test framework may have set a subscriber already;
            // then nothing is captured, and tests relying on it fail
            // loudly rather than the process panicking here.
            let _ = tracing_subscriber::fmt()
                .with_writer(|| ThreadWriter)
                .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                .with_ansi(false)
                .try_init();
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The lines captured so far containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// How many lines captured so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines_with(needle).len()
    }
}
