//! Loopback ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use tokio::net::TcpListener;

/// `127.0.0.1`: every server of the harness listens here, never elsewhere.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and closing the socket again,
/// so another process may take it before it is used. Only use this for
/// programs that must be told a port number (Postfix's `master.cf`);
/// in-process servers should keep the socket of [`bind_loopback`] instead.
pub fn free_port() -> io::Result<u16> {
    let listener = StdTcpListener::bind((LOOPBACK, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Binds a tokio listener on `127.0.0.1:0` (a free port, race-free).
pub async fn bind_loopback() -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(LOOPBACK, 0)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port().expect("free port");
        assert_ne!(port, 0);
        StdTcpListener::bind((LOOPBACK, port)).expect("port is free");
    }

    #[tokio::test]
    async fn bind_loopback_is_on_loopback() {
        let listener = bind_loopback().await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(addr.ip(), LOOPBACK);
        assert_ne!(addr.port(), 0);
    }
}
