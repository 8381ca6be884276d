//! Serving policy connections.

use crate::{
    conn::PolicyConn,
    request::{action, read_request, RequestError},
};
use nobounce_core::EngineSource;
use std::{future::Future, io, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    sync::watch,
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

/// Where the policy service listens, bound: TCP (Postfix `inet:`, Exim
/// `${readsocket{inet:...}}`) or a unix socket.
pub type PolicyListener = nobounce_listen::Listener;

/// Serves policy connections from `listener` until `shutdown` completes.
/// Then idle connections are closed, and requests being answered finish.
pub async fn serve(
    listener: PolicyListener,
    engines: Arc<dyn EngineSource>,
    options: PolicyOptions,
    shutdown: impl Future,
) -> io::Result<()> {
    nobounce_listen::serve(
        listener,
        options.max_connections,
        "policy service",
        shutdown,
        move |stream, peer, stopped| {
            let conn = PolicyConn::new(Arc::clone(&engines));
            connection(stream, peer, conn, options, stopped)
        },
    )
    .await
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
