//! One policy connection: what the MTA asks, as engine calls; the engine's
//! verdicts, as actions. Nothing here decides anything.

use crate::request::{PolicyRequest, ProtocolState};
use nobounce_core::{observe::Observer, EngineSource, Session, Verdict};
use std::sync::Arc;

/// The message a connection is answering about: Postfix asks once per
/// recipient, and then at END-OF-MESSAGE, over one connection, naming the
/// message with the same `instance`.
#[derive(Debug)]
struct Message {
    /// `instance`, client address, sender: a request with other values is
    /// about another message.
    key: (String, String, String),
    session: Session,
    /// The verdict at MAIL FROM (SPF, bans), given to every recipient.
    mail: Verdict,
}

/// Counts an open policy connection until dropped (metrics).
#[derive(Debug)]
pub struct OpenConnection(Arc<dyn Observer>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection("policy", false);
    }
}

/// The engine side of one policy connection.
#[derive(Debug)]
pub struct PolicyConn {
    engines: Arc<dyn EngineSource>,
    message: Option<Message>,
}

impl PolicyConn {
    /// A connection taking its engine from `engines` for each new message.
    pub fn new(engines: Arc<dyn EngineSource>) -> Self {
        Self {
            engines,
            message: None,
        }
    }

    /// Reports an open connection to the observer, until the returned
    /// guard is dropped.
    pub fn opened(&self) -> OpenConnection {
        let observer = Arc::clone(self.engines.engine().observer());
        observer.connection("policy", true);
        OpenConnection(observer)
    }

    /// Reports the time one request took.
    pub fn observe(&self, request: &PolicyRequest, elapsed: std::time::Duration) {
        let stage = match request.state {
            ProtocolState::Connect => "connect",
            ProtocolState::Helo => "helo",
            ProtocolState::Mail => "mail",
            ProtocolState::Rcpt => "rcpt",
            ProtocolState::Data => "data",
            ProtocolState::EndOfMessage => "eom",
            ProtocolState::Other => "other",
        };
        self.engines
            .engine()
            .observer()
            .command("policy", stage, elapsed);
    }

    /// The verdict for one request.
    ///
    /// - CONNECT, HELO/EHLO: the engine never refuses there (a ban is told
    ///   at MAIL FROM, after a chance to authenticate), so: continue.
    /// - MAIL: SPF and bans.
    /// - RCPT: the MAIL verdict if it refuses, else the recipient's (with
    ///   the MAIL SIZE from `size`).
    /// - END-OF-MESSAGE: the real size, for a message with one recipient
    ///   (needs Postfix's `instance`, to know the message).
    /// - Anything else: continue.
    pub async fn decide(&mut self, request: &PolicyRequest) -> Verdict {
        match request.state {
            ProtocolState::Mail => {
                self.message = None;
                self.message(request).await.mail.clone()
            }
            ProtocolState::Rcpt => {
                let message = self.message(request).await;
                if message.mail.is_refusal() {
                    return message.mail.clone();
                }
                message.session.rcpt_to(&request.recipient).await
            }
            ProtocolState::EndOfMessage => {
                let key = key(request);
                let Some(message) = self.message.as_mut().filter(|m| m.key == key) else {
                    return Verdict::Continue;
                };
                if let Some(size) = request.size {
                    message.session.end_of_data(size).await
                } else {
                    Verdict::Continue
                }
            }
            ProtocolState::Connect
            | ProtocolState::Helo
            | ProtocolState::Data
            | ProtocolState::Other => Verdict::Continue,
        }
    }

    /// The message `request` is about: the current one, or a new session
    /// taken through connect, HELO and MAIL FROM.
    async fn message(&mut self, request: &PolicyRequest) -> &mut Message {
        let key = key(request);
        let reuse =
            !request.instance.is_empty() && self.message.as_ref().is_some_and(|m| m.key == key);
        if !reuse {
            let mut session = self.engines.engine().session();
            session
                .connect(request.client_address, &request.client_name, None)
                .await;
            session.helo(&request.helo_name).await;
            session.set_queue_id(&request.queue_id);
            let size = request.size.map(|n| format!("SIZE={n}"));
            let args: Vec<&str> = size.iter().map(String::as_str).collect();
            let auth = Some(request.sasl_username.as_str()).filter(|u| !u.is_empty());
            let mail = session.mail_from(&request.sender, &args, auth).await;
            self.message = Some(Message { key, session, mail });
        }
        self.message.as_mut().expect("set above")
    }
}

fn key(request: &PolicyRequest) -> (String, String, String) {
    (
        request.instance.clone(),
        request
            .client_address
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        request.sender.clone(),
    )
}
