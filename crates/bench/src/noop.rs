//! A milter that does nothing, on indymilter: the floor of what a milter
//! on this library can do per transaction, to compare real milters against.

use indymilter::{Actions, Callbacks, Config, ContextActions, Listener, ProtoOpts, Status};
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
    /// What the no-op milter asks of the MTA. Default [`NoopMode::All`].
    pub mode: NoopMode,
    /// Set `TCP_NODELAY` on accepted connections (indymilter itself does
    /// not). Default true.
    pub nodelay: bool,
    /// indymilter's idle timeout per connection. Default 7210 s (libmilter's).
    pub connection_timeout: Duration,
    /// Headers inserted at end of message (`X-Noop-1: 1`, ...), so that the
    /// floor does the same protocol work as a milter that adds headers
    /// (each is one more message to the MTA). Not in [`NoopMode::Plain`].
    /// Default 0.
    pub insert_headers: usize,
}

/// The protocol work a no-op milter asks for.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum NoopMode {
    /// Every stage, each answered `Continue` (a milter that looks at
    /// everything).
    #[default]
    All,
    /// The "plain floor": no callback but end of message; the MTA skips
    /// every other stage.
    Plain,
    /// The "policy floor": the least an SPF and recipient milter can
    /// negotiate. It answers HELO, MAIL, RCPT and end of message; connect,
    /// headers and end of headers are sent without reply; DATA, the body
    /// and unknown commands are skipped.
    Policy,
}

impl std::str::FromStr for NoopMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "plain" => Ok(Self::Plain),
            "policy" => Ok(Self::Policy),
            _ => Err(format!("{s:?}: expected all, plain or policy")),
        }
    }
}

impl Default for NoopConfig {
    fn default() -> Self {
        Self {
            max_connections: 2000,
            mode: NoopMode::All,
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

/// The end-of-message callback: inserts `insert_headers` headers.
fn eom_only(insert_headers: usize) -> Callbacks<()> {
    Callbacks::new().on_eom(move |ctx| {
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
}

/// Callbacks that answer `Continue` at every stage.
fn continue_everywhere(insert_headers: usize) -> Callbacks<()> {
    eom_only(insert_headers)
        .on_connect(|_, _, _| Box::pin(async { Status::Continue }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_data(|_| Box::pin(async { Status::Continue }))
        .on_header(|_, _, _| Box::pin(async { Status::Continue }))
        .on_eoh(|_| Box::pin(async { Status::Continue }))
        .on_body(|_, _| Box::pin(async { Status::Continue }))
        .on_abort(|_| Box::pin(async { Status::Continue }))
}

/// The policy floor (see [`NoopMode::Policy`]).
fn policy_floor(insert_headers: usize) -> Callbacks<()> {
    const SKIP: ProtoOpts = ProtoOpts::NO_DATA
        .union(ProtoOpts::NO_BODY)
        .union(ProtoOpts::NO_UNKNOWN);
    const NO_REPLY: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
        .union(ProtoOpts::NOREPLY_HEADER)
        .union(ProtoOpts::NOREPLY_EOH);
    eom_only(insert_headers)
        .on_negotiate(move |ctx, actions, opts| {
            Box::pin(async move {
                ctx.requested_actions = if insert_headers > 0 {
                    actions & Actions::ADD_HEADER
                } else {
                    Actions::empty()
                };
                ctx.requested_opts = opts & (SKIP | NO_REPLY);
                Status::Continue
            })
        })
        .on_connect(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|_, _| Box::pin(async { Status::Continue }))
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_header(|_, _, _| Box::pin(async { Status::Noreply }))
        .on_eoh(|_| Box::pin(async { Status::Noreply }))
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
    let callbacks = match config.mode {
        NoopMode::All => continue_everywhere(config.insert_headers),
        NoopMode::Plain => Callbacks::new(),
        NoopMode::Policy => policy_floor(config.insert_headers),
    };
    let actions = if config.mode != NoopMode::Plain && config.insert_headers > 0 {
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
