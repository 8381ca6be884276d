//! A milter that does nothing, on indymilter: the floor of what a milter
//! on this library can do per transaction, to compare real milters against.

use indymilter::{Actions, Callbacks, Config, ContextActions, Listener, Status};
use std::{
    future::Future,
    io,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Parameters of [`run_noop_milter`].
#[derive(Clone, Debug)]
pub struct NoopConfig {
    /// indymilter's connection limit; connections beyond it wait in the
    /// listen backlog. Default 2000 (enough for the 1,000-connection test).
    pub max_connections: usize,
    /// Register a callback returning `Continue` for every stage (like a
    /// milter that looks at everything). When false, no callbacks are
    /// registered and indymilter tells the MTA to skip every stage. Default
    /// true.
    pub callbacks: bool,
    /// Set `TCP_NODELAY` on accepted connections (indymilter itself does
    /// not). Default true.
    pub nodelay: bool,
    /// indymilter's idle timeout per connection. Default 7210 s (libmilter's).
    pub connection_timeout: Duration,
    /// Headers inserted at end of message (`X-Noop-1: 1`, ...), so that the
    /// floor does the same protocol work as a milter that adds headers
    /// (each is one more message to the MTA). Only with `callbacks`.
    /// Default 0.
    pub insert_headers: usize,
}

impl Default for NoopConfig {
    fn default() -> Self {
        Self {
            max_connections: 2000,
            callbacks: true,
            nodelay: true,
            connection_timeout: Config::default().connection_timeout,
            insert_headers: 0,
        }
    }
}

/// A TCP listener that sets `TCP_NODELAY` on every accepted connection.
#[derive(Debug)]
pub struct NoDelayListener {
    inner: TcpListener,
    nodelay: bool,
}

impl NoDelayListener {
    /// Wraps `inner`; `nodelay` false makes it a plain listener.
    pub fn new(inner: TcpListener, nodelay: bool) -> Self {
        Self { inner, nodelay }
    }
}

impl Listener for NoDelayListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        let nodelay = self.nodelay;
        self.inner.poll_accept(cx).map_ok(|(stream, peer)| {
            if nodelay {
                if let Err(e) = stream.set_nodelay(true) {
                    warn!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
            }
            stream
        })
    }
}

/// Callbacks that answer `Continue` at every stage, inserting
/// `insert_headers` headers at end of message.
fn continue_everywhere(insert_headers: usize) -> Callbacks<()> {
    Callbacks::new()
        .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_data(|_| Box::pin(async { Status::Continue }))
        .on_header(|_, _, _| Box::pin(async { Status::Continue }))
        .on_eoh(|_| Box::pin(async { Status::Continue }))
        .on_body(|_, _| Box::pin(async { Status::Continue }))
        .on_eom(move |ctx| {
            Box::pin(async move {
                for i in 1..=insert_headers {
                    let name = format!("X-Noop-{i}");
                    if let Err(e) = ctx.actions.insert_header(0, name, i.to_string()).await {
                        warn!(error = %e, "cannot insert header");
                    }
                }
                Status::Continue
            })
        })
        .on_abort(|_| Box::pin(async { Status::Continue }))
}

/// Serves the no-op milter on `listener` until `shutdown` completes.
///
/// # Errors
///
/// When the listener fails to accept connections (see `indymilter::run`).
pub async fn run_noop_milter(
    listener: TcpListener,
    config: NoopConfig,
    shutdown: impl Future,
) -> io::Result<()> {
    let callbacks = if config.callbacks {
        continue_everywhere(config.insert_headers)
    } else {
        Callbacks::new()
    };
    let actions = if config.callbacks && config.insert_headers > 0 {
        Actions::ADD_HEADER
    } else {
        Actions::empty()
    };
    let milter_config = Config {
        max_connections: config.max_connections,
        actions,
        connection_timeout: config.connection_timeout,
    };
    indymilter::run(
        NoDelayListener::new(listener, config.nodelay),
        callbacks,
        milter_config,
        shutdown,
    )
    .await
}
