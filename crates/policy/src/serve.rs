//! Serving policy connections.

use crate::{
    conn::PolicyConn,
    request::{action, read_request, RequestError},
};
use nobounce_core::EngineSource;
use std::{future::Future, io, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, UnixListener},
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tracing::{debug, warn};

/// Settings of the policy service (`[policy]`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct PolicyOptions {
    /// Connections served at once; more wait in the listen queue. Postfix
    /// opens one per busy `smtpd` process.
    pub max_connections: usize,
    /// How long a connection may sit without a complete request. Longer
    /// than Postfix's own idle limit (300 s), so that Postfix, which keeps
    /// the connection open between requests, closes it first.
    pub idle_timeout: Duration,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            idle_timeout: Duration::from_secs(330),
        }
    }
}

/// Where the policy service listens, bound.
#[derive(Debug)]
pub enum PolicyListener {
    /// A TCP socket (Postfix `inet:`, Exim `${readsocket{inet:...}}`).
    Tcp(TcpListener),
    /// A unix socket.
    Unix(UnixListener),
}

/// Serves policy connections from `listener` until `shutdown` completes.
/// Then idle connections are closed, and requests being answered finish.
pub async fn serve(
    listener: PolicyListener,
    engines: Arc<dyn EngineSource>,
    options: PolicyOptions,
    shutdown: impl Future,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
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
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // rather than spin.
                warn!(
                    event = "policy_accept_failed",
                    "policy service: cannot accept: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn = PolicyConn::new(Arc::clone(&engines));
        let stopped = stopped.clone();
        match stream {
            Stream::Tcp(s, peer) => tasks.spawn(async move {
                connection(s, peer, conn, options, stopped).await;
                drop(permit);
            }),
            Stream::Unix(s) => tasks.spawn(async move {
                connection(s, "unix".into(), conn, options, stopped).await;
                drop(permit);
            }),
        };
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &PolicyListener) -> io::Result<Stream> {
    Ok(match listener {
        PolicyListener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Replies are one small write each; do not wait for ACKs.
            let _ = s.set_nodelay(true);
            Stream::Tcp(s, peer.to_string())
        }
        PolicyListener::Unix(l) => Stream::Unix(l.accept().await?.0),
    })
}

/// Answers requests on one connection until the peer closes it, it idles
/// too long, a request is malformed, or the service stops.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: String,
    mut conn: PolicyConn,
    options: PolicyOptions,
    mut stopped: watch::Receiver<bool>,
) {
    let _open = conn.opened();
    let (read, mut write) = tokio::io::split(stream);
    let mut input = BufReader::new(read);
    loop {
        if *stopped.borrow() {
            return;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(options.idle_timeout, read_request(&mut input)) => next,
            _ = stopped.changed() => return,
        };
        let request = match next {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(RequestError::Io(e))) => {
                debug!(peer, "policy connection failed: {e}");
                return;
            }
            Ok(Err(e)) => {
                warn!(
                    event = "policy_bad_request",
                    peer, "malformed policy request, closing the connection: {e}"
                );
                return;
            }
            Err(_) => {
                debug!(peer, "policy connection idle too long, closing it");
                return;
            }
        };
        let started = std::time::Instant::now();
        let verdict = conn.decide(&request).await;
        conn.observe(&request, started.elapsed());
        let reply = format!("{}\n\n", action(&verdict));
        debug!(peer, state = ?request.state, reply = reply.trim_end(), "policy reply");
        if let Err(e) = write.write_all(reply.as_bytes()).await {
            debug!(peer, "cannot answer a policy request: {e}");
            return;
        }
    }
}
