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
//! - [`NoDelay`]: a TCP listener with `TCP_NODELAY` and quick ACKs
//!   ([`QuickAck`]) on every connection.

pub mod callbacks;

pub use crate::callbacks::apply_verdict;
use indymilter::Listener;
use nobounce_core::EngineSource;
use std::{
    future::Future,
    io,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
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
                Poll::Ready(Ok(QuickAck(stream)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A TCP connection that acknowledges what it reads at once
/// (`TCP_QUICKACK`, renewed after every read: the kernel falls back to
/// delayed ACKs by itself).
///
/// Postfix writes each milter command on its own and leaves Nagle's
/// algorithm on. After a command that gets no reply (headers, connect,
/// HELO: `SMFIP_NR_*`), its next small write waits until the previous one
/// is acknowledged, and a milter with nothing to say sends that ACK only
/// when its delayed-ACK timer fires: about 40 ms per message through
/// Postfix over TCP (found by the benchmark of issue 8). Quick ACKs remove
/// the wait.
#[derive(Debug)]
pub struct QuickAck(pub TcpStream);

impl QuickAck {
    fn ack_now(&self) {
        // Best effort: without it, mail is only slower.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut me.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.ack_now();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn quickack(stream: &QuickAck) -> bool {
        socket2::SockRef::from(&stream.0)
            .tcp_quickack()
            .expect("getsockopt TCP_QUICKACK")
    }

    /// After a command and its reply the kernel has the connection in
    /// delayed-ACK ("ping-pong") mode; a command that gets no reply must
    /// still be acknowledged at once, or Postfix's next write waits for
    /// the delayed-ACK timer (issue 8). Every read turns quick ACKs on.
    #[tokio::test(flavor = "current_thread")]
    async fn every_read_turns_quick_acks_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut listener = NoDelay(listener);
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).expect("connect");
            let mut buf = [0u8; 5];
            for _ in 0..3 {
                c.write_all(b"ping!").expect("write");
                c.read_exact(&mut buf).expect("read");
            }
            c.write_all(b"last").expect("write");
            c
        });
        let mut server = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .expect("accept");
        let mut buf = [0u8; 5];
        for _ in 0..3 {
            server.read_exact(&mut buf).await.expect("read");
            server.write_all(b"pong!").await.expect("write");
        }
        // Replies sent: the kernel has left quick-ACK mode by now.
        let mut last = [0u8; 4];
        server.read_exact(&mut last).await.expect("read");
        assert!(quickack(&server), "quick ACKs are on after a read");
        drop(client.join().expect("client"));
    }
}
