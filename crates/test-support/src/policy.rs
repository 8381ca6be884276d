//! A client of the policy delegation protocol, as Postfix speaks it.

use std::{io, net::SocketAddr};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// A policy request as Postfix writes it for `state` (`RCPT`, `MAIL`,
/// `END-OF-MESSAGE`, ...), from client `client_address`, with a few of
/// Postfix's attributes more than nobounce reads (to be ignored), and
/// `extra` attributes (`("sasl_username", "joe")`) last.
pub fn policy_request(
    state: &str,
    client_address: &str,
    sender: &str,
    recipient: &str,
    size: u64,
    instance: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut r = format!(
        "request=smtpd_access_policy\nprotocol_state={state}\nprotocol_name=ESMTP\n\
         client_address={client_address}\nclient_name=client.pass.test\n\
         reverse_client_name=client.pass.test\nhelo_name=client.pass.test\n\
         sender={sender}\nrecipient={recipient}\nrecipient_count=0\nqueue_id=\n\
         instance={instance}\nsize={size}\netrn_domain=\nstress=\nsasl_method=\n\
         sasl_sender=\nccert_subject=\nencryption_protocol=\n\
         policy_context=\nserver_address=127.0.0.1\nserver_port=25\n"
    );
    for (name, value) in extra {
        r.push_str(&format!("{name}={value}\n"));
    }
    r.push('\n');
    r
}

/// One persistent policy connection, as Postfix keeps it.
#[derive(Debug)]
pub struct PolicyClient(BufReader<TcpStream>);

impl PolicyClient {
    /// Connects to the policy service at `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self(BufReader::new(TcpStream::connect(addr).await?)))
    }

    /// Sends `request` (see [`policy_request`]) and returns the action
    /// (`DUNNO`, `550 5.1.1 ...`), checking the empty line after it.
    pub async fn ask(&mut self, request: &str) -> io::Result<String> {
        self.0.get_mut().write_all(request.as_bytes()).await?;
        let mut action = String::new();
        self.0.read_line(&mut action).await?;
        let mut empty = String::new();
        self.0.read_line(&mut empty).await?;
        if empty != "\n" {
            return Err(io::Error::other(format!(
                "the reply does not end with an empty line: {action:?} {empty:?}"
            )));
        }
        action
            .strip_prefix("action=")
            .map(|a| a.trim_end().to_owned())
            .ok_or_else(|| io::Error::other(format!("not an action: {action:?}")))
    }
}
