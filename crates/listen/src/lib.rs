//! The accept loop of nobounce's small request/reply services: the policy
//! delegation service (`nobounce-policy`) and Postfix's socketmap
//! (`nobounce-aliases`). The milter has its own, in indymilter.
//!
//! # Layout
//! - [`Listener`]: a bound TCP or unix socket.
//! - [`serve`]: accepts connections until shutdown, at most a given number
//!   at once, and hands each to the service's connection handler with a
//!   [`Stopped`] signal; on shutdown it waits for the handlers to finish.

use std::{future::Future, io, pin::Pin, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tracing::warn;

/// Where a service listens, bound.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix socket.
    Unix(UnixListener),
}

/// One accepted connection, TCP or unix.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Connection for T {}

/// Turns `true` when the service stops: a handler then finishes the request
/// it is answering and closes an idle connection.
pub type Stopped = watch::Receiver<bool>;

async fn accept(listener: &Listener) -> io::Result<(Box<dyn Connection>, String)> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // One small reply per request: do not wait for ACKs.
            let _ = s.set_nodelay(true);
            (Box::new(s), peer.to_string())
        }
        Listener::Unix(l) => (Box::new(l.accept().await?.0), "unix".to_owned()),
    })
}

/// Serves connections from `listener` until `shutdown` completes: at most
/// `max_connections` at once (more wait in the listen queue), each given to
/// `handle` with its peer (`IP:port`, or `unix`) and the [`Stopped`] signal.
/// Then the signal is raised and the handlers are waited for. `service`
/// names the service in the log line of a failed accept.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use nobounce_listen::{serve, Listener};
/// use tokio::io::AsyncWriteExt;
///
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = tcp.local_addr()?;
/// let server = tokio::spawn(serve(Listener::Tcp(tcp), 10, "echo", async {
///     tokio::time::sleep(std::time::Duration::from_millis(200)).await
/// }, |mut conn, _peer, _stopped| async move {
///     let _ = conn.write_all(b"hello\n").await;
/// }));
/// let mut client = tokio::net::TcpStream::connect(addr).await?;
/// let mut line = String::new();
/// tokio::io::AsyncReadExt::read_to_string(&mut client, &mut line).await?;
/// assert_eq!(line, "hello\n");
/// server.await.expect("no panic")?;
/// # Ok(())
/// # }
/// ```
pub async fn serve<F, Fut>(
    listener: Listener,
    max_connections: usize,
    service: &'static str,
    shutdown: impl Future,
    mut handle: F,
) -> io::Result<()>
where
    F: FnMut(Box<dyn Connection>, String, Stopped) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown: Pin<&mut _> = std::pin::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let (conn, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                warn!(
                    event = "accept_failed",
                    service, "{service}: cannot accept: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handled = handle(conn, peer, stopped.clone());
        tasks.spawn(async move {
            handled.await;
            drop(permit);
        });
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// At most `max_connections` handlers run at once; on shutdown the
    /// handlers see the signal and are waited for.
    #[tokio::test(flavor = "current_thread")]
    async fn limits_connections_and_stops_handlers() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let (quit, quitting) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            Listener::Tcp(tcp),
            1,
            "test",
            quitting,
            |mut conn, _peer, mut stopped| async move {
                let _ = conn.write_all(b"hi").await;
                // Hold the slot until the service stops.
                let _ = stopped.wait_for(|s| *s).await;
                let _ = conn.write_all(b"bye").await;
            },
        ));
        let mut first = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 2];
        first.read_exact(&mut buf).await.expect("greeting");
        assert_eq!(&buf, b"hi");
        // The second connection waits in the listen queue: no greeting.
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let waited = tokio::time::timeout(Duration::from_millis(200), second.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "a second connection was served beyond the limit"
        );
        quit.send(()).expect("server running");
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"bye");
        server.await.expect("no panic").expect("served");
    }
}
