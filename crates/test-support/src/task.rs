//! In-process servers (the milter, a DNS server) run as background tasks.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Future that completes when the owning [`Background`] is stopped or
/// dropped; pass it as the `shutdown` argument of a server's `run` function
/// (e.g. `nobounce_milter::run(listener, config, shutdown)`).
#[derive(Debug)]
pub struct ShutdownSignal(oneshot::Receiver<()>);

impl Future for ShutdownSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Both an explicit signal and a dropped sender mean "shut down".
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A server future spawned on the current tokio runtime, with a shutdown
/// signal.
///
/// [`stop`](Background::stop) signals shutdown and waits (bounded) for the
/// task's result; dropping the handle signals shutdown and aborts the task.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use nobounce_test_support::{bind_loopback, Background};
/// let listener = bind_loopback().await?;
/// let server = Background::spawn(|shutdown| async move {
///     // e.g. nobounce_milter::run(listener, config, shutdown).await
///     drop(listener);
///     shutdown.await;
///     Ok::<(), std::io::Error>(())
/// });
/// server.stop().await?.expect("server ran cleanly");
/// # Ok(()) }
/// ```
pub struct Background<T> {
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<T>>,
}

impl<T> fmt::Debug for Background<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("running", &self.handle.as_ref().map(|h| !h.is_finished()))
            .finish()
    }
}

/// How long [`Background::stop`] waits for the task after signalling.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl<T: Send + 'static> Background<T> {
    /// Spawns `make(shutdown)` on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn<F, Fut>(make: F) -> Self
    where
        F: FnOnce(ShutdownSignal) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(make(ShutdownSignal(rx)));
        Self {
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Whether the task has already ended (e.g. the server failed early).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits until something accepts TCP connections at `addr` (the
    /// server this task runs binds its sockets), for at most
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT). Fails at once when the
    /// task ends first: the server could not start (a port taken between
    /// [`free_port`](crate::free_port) and its bind, a bad configuration).
    pub async fn wait_listening(&self, addr: std::net::SocketAddr) -> io::Result<()> {
        crate::wait_until(
            &format!("a listener at {addr}"),
            crate::DEFAULT_TIMEOUT,
            || async {
                if self.is_finished() {
                    return Err(io::Error::other(format!(
                        "the server ended before listening at {addr}"
                    )));
                }
                Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
            },
        )
        .await
    }

    /// Signals shutdown and returns the task's output.
    ///
    /// Errors when the task panicked or did not end within 10 seconds (it is
    /// aborted then).
    pub async fn stop(mut self) -> io::Result<T> {
        if let Some(tx) = self.shutdown.take() {
            // The receiver may be gone already when the task ended by itself.
            let _ = tx.send(());
        }
        let mut handle = self
            .handle
            .take()
            .expect("handle is only taken by stop, which consumes self");
        match tokio::time::timeout(STOP_TIMEOUT, &mut handle).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(join)) => Err(io::Error::other(format!("background task failed: {join}"))),
            Err(_) => {
                handle.abort();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("background task did not stop within {STOP_TIMEOUT:?}"),
                ))
            }
        }
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_signals_shutdown_and_returns_output() {
        let task = Background::spawn(|shutdown| async move {
            shutdown.await;
            42
        });
        assert!(!task.is_finished());
        assert_eq!(task.stop().await.expect("stops"), 42);
    }

    #[tokio::test]
    async fn drop_signals_shutdown() {
        let (tx, rx) = oneshot::channel();
        let task = Background::spawn(|shutdown| async move {
            shutdown.await;
            let _ = tx.send("shut down");
        });
        drop(task);
        // Without the signal or the abort the task would hold `tx` forever.
        let ended = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(ended.is_ok(), "task still running after drop");
    }
}
