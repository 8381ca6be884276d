//! Bounded polling: wait for a condition instead of sleeping a fixed time.

use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// Generous upper bound for waits in tests (Postfix delivery, queue drain,
/// log lines). It only limits how long a broken test hangs; a passing test
/// never waits this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// First pause between two checks; doubles up to [`MAX_INTERVAL`].
const FIRST_INTERVAL: Duration = Duration::from_millis(20);
const MAX_INTERVAL: Duration = Duration::from_millis(250);

/// Calls `check` until it yields `Some(value)` and returns that value.
///
/// Errors from `check` end the wait at once. When `timeout` passes first, the
/// error is [`io::ErrorKind::TimedOut`] and names `what` was waited for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let mut calls = 0;
/// let n = nobounce_test_support::poll_until("third call", Duration::from_secs(5), || {
///     calls += 1;
///     let now = calls;
///     async move { Ok((now == 3).then_some(now)) }
/// })
/// .await
/// .expect("reaches 3");
/// assert_eq!(n, 3);
/// # }
/// ```
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {timeout:?} waiting for {what}"),
            ));
        }
        sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// Calls `check` until it yields `true`; see [`poll_until`].
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<bool>>,
{
    poll_until(what, timeout, || {
        let fut = check();
        async move { Ok(fut.await?.then_some(())) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_out_with_the_awaited_thing_in_the_message() {
        let err = wait_until("godot", Duration::from_millis(100), || async { Ok(false) })
            .await
            .expect_err("never true");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("godot"), "{err}");
    }

    #[tokio::test]
    async fn check_errors_end_the_wait() {
        let err = wait_until("anything", Duration::from_secs(3), || async {
            Err(io::Error::other("broken"))
        })
        .await
        .expect_err("error propagates");
        assert_eq!(err.to_string(), "broken");
    }
}
