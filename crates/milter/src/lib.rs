//! # nobounce-milter
//!
//! The milter front end of nobounce: it speaks the milter protocol
//! (indymilter) to Postfix or Sendmail, translates what the MTA says into
//! calls of a `nobounce-core` [`Session`](nobounce_core::Session), and the
//! verdicts into milter replies. Nothing here decides anything.
//!
//! # Layout
//!
//! - [`callbacks`]: the indymilter callbacks, the negotiation and
//!   [`apply_verdict`].
//! - [`serve`]: serves milter connections from a listener, taking the
//!   engine of each new connection from an [`EngineSource`].
//! - [`NoDelay`]: a TCP listener with `TCP_NODELAY` on every connection,
//!   each a [`QuickAck`] (quick ACKs where the MTA waits for one, the
//!   replies to one command in one write).

pub mod callbacks;
mod quick_ack;

pub use crate::{callbacks::apply_verdict, quick_ack::QuickAck};
use indymilter::Listener;
use nobounce_core::EngineSource;
use std::{
    future::Future,
    io,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpListener;
use tracing::warn;

/// Settings of the milter protocol side (`[milter]`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct MilterOptions {
    /// Connections from the MTA served at once.
    pub max_connections: usize,
    /// Idle timeout of one milter connection.
    pub connection_timeout: Duration,
}

impl Default for MilterOptions {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            // libmilter's default.
            connection_timeout: Duration::from_secs(7210),
        }
    }
}

/// Serves milter connections from `listener` until `shutdown` completes,
/// then waits for open connections to finish. Each connection takes the
/// engine `engines` gives at connect and keeps it to its end.
pub async fn serve<L: Listener>(
    listener: L,
    engines: Arc<dyn EngineSource>,
    options: MilterOptions,
    shutdown: impl Future,
) -> io::Result<()> {
    let config = indymilter::Config {
        max_connections: options.max_connections,
        connection_timeout: options.connection_timeout,
        ..Default::default()
    };
    indymilter::run(listener, callbacks::callbacks(engines), config, shutdown).await
}

/// A TCP listener for milter connections: `TCP_NODELAY` on each
/// accepted connection, and quick ACKs (see [`QuickAck`]).
///
/// A milter answers with several small messages per stage (for example a
/// header insertion, then continue). With Nagle's algorithm on, the second
/// waits for the MTA's delayed ACK of the first: about 40 ms per message.
#[derive(Debug)]
pub struct NoDelay(pub TcpListener);

impl Listener for NoDelay {
    type Io = QuickAck;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        match self.0.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => {
                if let Err(e) = stream.set_nodelay(true) {
                    warn!("cannot set TCP_NODELAY: {e}");
                }
                Poll::Ready(Ok(QuickAck::new(stream)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}
