//! The MTA side of one milter connection: negotiation, connect/helo, and
//! mail transactions, honouring the protocol options the milter negotiated
//! (`NO_*`: don't send the stage; `NOREPLY_*`: send, but expect no reply).

use crate::{
    target::Target,
    wire::{Conn, WireError},
    workload::{ConnPlan, TxnPlan, Workload},
};
use indymilter::{
    message::{
        command::{
            Command, ConnInfoPayload, EnvAddrPayload, HeaderPayload, HeloPayload, MacroPayload,
            OptNegPayload,
        },
        reply::Reply,
        PROTOCOL_VERSION,
    },
    Actions, MacroStage, ProtoOpts, SocketInfo,
};
use serde::Serialize;
use std::{
    ffi::CString,
    fmt::{self, Display, Formatter},
    net::SocketAddr,
    time::Duration,
};

/// A protocol stage, as reported in outcomes and errors.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Opening the socket.
    Open,
    /// Option negotiation (`O`).
    Negotiate,
    /// Connection information (`C`).
    Connect,
    /// `H`.
    Helo,
    /// `M`.
    Mail,
    /// `R`.
    Rcpt,
    /// `T`.
    Data,
    /// `L`.
    Header,
    /// `N`.
    Eoh,
    /// `B`.
    Body,
    /// `E`.
    Eom,
    /// `Q`.
    Quit,
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Negotiate => "negotiate",
            Self::Connect => "connect",
            Self::Helo => "helo",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::Header => "header",
            Self::Eoh => "eoh",
            Self::Body => "body",
            Self::Eom => "eom",
            Self::Quit => "quit",
        })
    }
}

/// A final answer of the milter for a connection or a message.
#[derive(Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `c`: go on (at end-of-message: deliver as is).
    Continue,
    /// `a`: accept without further milter processing.
    Accept,
    /// `r`, or `y` with a 5xx reply.
    Reject,
    /// `t`, or `y` with a 4xx reply.
    Tempfail,
    /// `d`: accept and drop silently.
    Discard,
}

impl Display for Status {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Continue => "continue",
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Tempfail => "tempfail",
            Self::Discard => "discard",
        })
    }
}

/// A final answer with its custom SMTP reply (`y`), if any.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct Final {
    pub(crate) status: Status,
    /// Reply code and enhanced status code, e.g. `550 5.7.1`.
    pub(crate) code: Option<String>,
}

impl Final {
    fn plain(status: Status) -> Self {
        Self { status, code: None }
    }
}

/// How a transaction ended.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct TxnOutcome {
    /// The stage whose reply decided the message.
    pub(crate) stage: Stage,
    pub(crate) result: Final,
    /// Recipients rejected or tempfailed one by one.
    pub(crate) rcpt_rejected: u32,
    /// End-of-message modification requests, by name.
    pub(crate) modifications: Vec<&'static str>,
}

/// An error, with the stage it happened in.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct StageError {
    /// Where.
    pub stage: Stage,
    /// What.
    pub error: WireError,
}

impl Display for StageError {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.error)
    }
}

impl std::error::Error for StageError {}

trait AtStage<T> {
    fn at(self, stage: Stage) -> Result<T, StageError>;
}

impl<T> AtStage<T> for Result<T, WireError> {
    fn at(self, stage: Stage) -> Result<T, StageError> {
        self.map_err(|error| StageError { stage, error })
    }
}

/// What a non-final reply to a command said.
enum Step {
    Continue,
    Skip,
    Final(Final),
}

/// Everything the MTA offers in negotiation (libmilter's `SMFI_CURR_ACTS`
/// and all protocol steps of version 6); the milter picks.
const OFFERED_ACTIONS: u32 = 0x1FF;
const OFFERED_OPTS: u32 = 0x1F_FFFF;

fn cstring(s: impl Into<Vec<u8>>) -> CString {
    // Everything we send is generated ASCII without NUL bytes.
    CString::new(s).expect("generated protocol strings contain no NUL")
}

fn status_of_code(reply: &CString) -> Result<Final, WireError> {
    let text = reply.to_string_lossy();
    let status = match text.as_bytes().first() {
        Some(b'4') => Status::Tempfail,
        Some(b'5') => Status::Reject,
        _ => {
            return Err(WireError::Protocol(format!(
                "reply code must be 4xx or 5xx: {text:?}"
            )))
        }
    };
    let mut words = text.split_whitespace();
    let mut code = words.next().unwrap_or_default().to_owned();
    if let Some(enhanced) = words.next().filter(|w| {
        let parts: Vec<_> = w.split('.').collect();
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u16>().is_ok())
    }) {
        code.push(' ');
        code.push_str(enhanced);
    }
    Ok(Final {
        status,
        code: Some(code),
    })
}

/// Name of an end-of-message modification reply, `None` for other replies.
fn modification_name(reply: &Reply) -> Option<&'static str> {
    Some(match reply {
        Reply::AddRcpt { .. } => "add_rcpt",
        Reply::AddRcptExt { .. } => "add_rcpt_ext",
        Reply::DeleteRcpt { .. } => "delete_rcpt",
        Reply::ReplaceBody { .. } => "replace_body",
        Reply::ChangeSender { .. } => "change_sender",
        Reply::AddHeader { .. } => "add_header",
        Reply::InsertHeader { .. } => "insert_header",
        Reply::ChangeHeader { .. } => "change_header",
        Reply::Quarantine { .. } => "quarantine",
        _ => return None,
    })
}

fn reply_kind(reply: &Reply) -> char {
    char::from(reply.clone().into_message().kind)
}

/// One negotiated connection, after connect and helo.
#[derive(Debug)]
pub(crate) struct MtaSession {
    conn: Conn,
    opts: ProtoOpts,
    macros: bool,
}

/// How opening a session ended.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Ready for transactions.
    Ready(MtaSession),
    /// The milter gave a final answer for the whole connection at connect or
    /// helo (the session is closed).
    Decided(Stage, Final),
}

impl MtaSession {
    /// Connects, negotiates and sends connect and helo.
    pub(crate) async fn open(
        target: &Target,
        io_timeout: Duration,
        workload: &Workload,
        plan: &ConnPlan,
    ) -> Result<Opened, StageError> {
        let mut conn = Conn::open(target, io_timeout).await.at(Stage::Open)?;

        conn.queue(Command::OptNeg(OptNegPayload {
            version: PROTOCOL_VERSION,
            actions: Actions::from_bits_truncate(OFFERED_ACTIONS),
            opts: ProtoOpts::from_bits_truncate(OFFERED_OPTS),
        }));
        let opts = match conn.reply().await.at(Stage::Negotiate)? {
            Reply::OptNeg { version, opts, .. } => {
                if version < 2 {
                    return Err(WireError::Protocol(format!(
                        "milter protocol version {version}"
                    )))
                    .at(Stage::Negotiate);
                }
                opts
            }
            other => {
                return Err(WireError::Protocol(format!(
                    "expected option negotiation reply, got {:?}",
                    reply_kind(&other)
                )))
                .at(Stage::Negotiate)
            }
        };

        let mut session = Self {
            conn,
            opts,
            macros: workload.macros,
        };

        let addr = plan.client_ip.to_string();
        let connect_macros = [
            ("j", workload.mta_hostname.clone()),
            ("{daemon_name}", "nobounce-bench".to_owned()),
            ("v", "nobounce-bench".to_owned()),
            ("_", format!("unknown [{addr}]")),
            ("{client_addr}", addr.clone()),
            ("{client_port}", plan.client_port.to_string()),
            ("{client_name}", "unknown".to_owned()),
        ];
        let connect = Command::ConnInfo(ConnInfoPayload {
            // Postfix sends "unknown" when the client has no verified name.
            hostname: cstring("unknown"),
            socket_info: SocketInfo::Inet(SocketAddr::new(plan.client_ip, plan.client_port)),
        });
        match session
            .step(
                Stage::Connect,
                MacroStage::Connect,
                &connect_macros,
                connect,
            )
            .await?
        {
            Step::Final(f) => {
                session.close().await;
                return Ok(Opened::Decided(Stage::Connect, f));
            }
            Step::Continue | Step::Skip => {}
        }

        let helo = Command::Helo(HeloPayload {
            hostname: cstring(workload.helo.as_str()),
        });
        match session
            .step(Stage::Helo, MacroStage::Helo, &[], helo)
            .await?
        {
            Step::Final(f) => {
                session.close().await;
                Ok(Opened::Decided(Stage::Helo, f))
            }
            Step::Continue | Step::Skip => Ok(Opened::Ready(session)),
        }
    }

    fn skipped(&self, stage: Stage) -> bool {
        let flag = match stage {
            Stage::Connect => ProtoOpts::NO_CONNECT,
            Stage::Helo => ProtoOpts::NO_HELO,
            Stage::Mail => ProtoOpts::NO_MAIL,
            Stage::Rcpt => ProtoOpts::NO_RCPT,
            Stage::Data => ProtoOpts::NO_DATA,
            Stage::Header => ProtoOpts::NO_HEADER,
            Stage::Eoh => ProtoOpts::NO_EOH,
            Stage::Body => ProtoOpts::NO_BODY,
            _ => return false,
        };
        self.opts.contains(flag)
    }

    fn no_reply(&self, stage: Stage) -> bool {
        let flag = match stage {
            Stage::Connect => ProtoOpts::NOREPLY_CONNECT,
            Stage::Helo => ProtoOpts::NOREPLY_HELO,
            Stage::Mail => ProtoOpts::NOREPLY_MAIL,
            Stage::Rcpt => ProtoOpts::NOREPLY_RCPT,
            Stage::Data => ProtoOpts::NOREPLY_DATA,
            Stage::Header => ProtoOpts::NOREPLY_HEADER,
            Stage::Eoh => ProtoOpts::NOREPLY_EOH,
            Stage::Body => ProtoOpts::NOREPLY_BODY,
            _ => return false,
        };
        self.opts.contains(flag)
    }

    fn queue_macros(&mut self, stage: MacroStage, macros: &[(&str, String)]) {
        if !self.macros || macros.is_empty() {
            return;
        }
        let macros = macros
            .iter()
            .flat_map(|(k, v)| [cstring(*k), cstring(v.as_str())])
            .collect();
        self.conn
            .queue(Command::DefMacros(MacroPayload { stage, macros }));
    }

    /// Sends one command (preceded by its macros) unless the milter opted
    /// out of the stage, and reads its reply unless it opted out of that.
    async fn step(
        &mut self,
        stage: Stage,
        macro_stage: MacroStage,
        macros: &[(&str, String)],
        cmd: Command,
    ) -> Result<Step, StageError> {
        if self.skipped(stage) {
            return Ok(Step::Continue);
        }
        self.queue_macros(macro_stage, macros);
        self.conn.queue(cmd);
        if self.no_reply(stage) {
            return Ok(Step::Continue);
        }
        loop {
            let reply = self.conn.reply().await.at(stage)?;
            return Ok(match reply {
                Reply::Progress => continue,
                Reply::Continue => Step::Continue,
                Reply::Skip => Step::Skip,
                Reply::Accept => Step::Final(Final::plain(Status::Accept)),
                Reply::Reject => Step::Final(Final::plain(Status::Reject)),
                Reply::Tempfail => Step::Final(Final::plain(Status::Tempfail)),
                Reply::Discard => Step::Final(Final::plain(Status::Discard)),
                Reply::ReplyCode { reply } => Step::Final(status_of_code(&reply).at(stage)?),
                other => {
                    return Err(WireError::Protocol(format!(
                        "unexpected reply {:?}",
                        reply_kind(&other)
                    )))
                    .at(stage)
                }
            });
        }
    }

    /// Runs one mail transaction: MAIL, RCPT..., DATA, [headers], EOH,
    /// [body], EOM. A message-level final answer before EOM ends the
    /// transaction early with an abort, as an MTA would.
    pub(crate) async fn transaction(
        &mut self,
        workload: &Workload,
        plan: &TxnPlan,
    ) -> Result<TxnOutcome, StageError> {
        let qid = || ("i", plan.queue_id.clone());
        let mut outcome = TxnOutcome {
            stage: Stage::Eom,
            result: Final::plain(Status::Continue),
            rcpt_rejected: 0,
            modifications: Vec::new(),
        };

        let mail = Command::Mail(EnvAddrPayload {
            args: vec![cstring(format!("<{}>", plan.sender))],
        });
        let macros = [qid(), ("{mail_addr}", plan.sender.clone())];
        if let Step::Final(f) = self
            .step(Stage::Mail, MacroStage::Mail, &macros, mail)
            .await?
        {
            return Ok(self.abort(outcome, Stage::Mail, f));
        }

        let mut rcpt_accepted = 0;
        let mut last_refusal = None;
        for rcpt in &plan.recipients {
            let cmd = Command::Rcpt(EnvAddrPayload {
                args: vec![cstring(format!("<{rcpt}>"))],
            });
            let macros = [qid(), ("{rcpt_addr}", rcpt.clone())];
            match self
                .step(Stage::Rcpt, MacroStage::Rcpt, &macros, cmd)
                .await?
            {
                Step::Continue | Step::Skip => rcpt_accepted += 1,
                // Reject and tempfail concern this recipient only.
                Step::Final(f) if matches!(f.status, Status::Reject | Status::Tempfail) => {
                    outcome.rcpt_rejected += 1;
                    last_refusal = Some(f);
                }
                // Accept and discard concern the whole message.
                Step::Final(f) => return Ok(self.abort(outcome, Stage::Rcpt, f)),
            }
        }
        if rcpt_accepted == 0 {
            if let Some(f) = last_refusal {
                return Ok(self.abort(outcome, Stage::Rcpt, f));
            }
        }

        if let Step::Final(f) = self
            .step(Stage::Data, MacroStage::Data, &[], Command::Data)
            .await?
        {
            return Ok(self.abort(outcome, Stage::Data, f));
        }

        if workload.headers > 0 {
            let leading = if self.opts.contains(ProtoOpts::LEADING_SPACE) {
                " "
            } else {
                ""
            };
            for n in 0..workload.headers {
                let (name, value) = crate::workload::header(n, &plan.sender, &plan.queue_id);
                let cmd = Command::Header(HeaderPayload {
                    name: cstring(name),
                    value: cstring(format!("{leading}{value}")),
                });
                if let Step::Final(f) = self.step(Stage::Header, MacroStage::Eoh, &[], cmd).await? {
                    return Ok(self.abort(outcome, Stage::Header, f));
                }
            }
        }

        if let Step::Final(f) = self
            .step(Stage::Eoh, MacroStage::Eoh, &[], Command::Eoh)
            .await?
        {
            return Ok(self.abort(outcome, Stage::Eoh, f));
        }

        if workload.headers > 0 {
            let body = Command::BodyChunk(bytes::Bytes::from_static(
                b"Load generated by milter-loadgen.\r\n",
            ));
            match self.step(Stage::Body, MacroStage::Eom, &[], body).await? {
                Step::Final(f) => return Ok(self.abort(outcome, Stage::Body, f)),
                Step::Continue | Step::Skip => {}
            }
        }

        self.queue_macros(MacroStage::Eom, &[qid()]);
        self.conn.queue(Command::BodyEnd(bytes::Bytes::new()));
        loop {
            let reply = self.conn.reply().await.at(Stage::Eom)?;
            if let Some(name) = modification_name(&reply) {
                outcome.modifications.push(name);
                continue;
            }
            outcome.result = match reply {
                Reply::Progress => continue,
                Reply::Continue => Final::plain(Status::Continue),
                Reply::Accept => Final::plain(Status::Accept),
                Reply::Reject => Final::plain(Status::Reject),
                Reply::Tempfail => Final::plain(Status::Tempfail),
                Reply::Discard => Final::plain(Status::Discard),
                Reply::ReplyCode { reply } => status_of_code(&reply).at(Stage::Eom)?,
                other => {
                    return Err(WireError::Protocol(format!(
                        "unexpected reply {:?}",
                        reply_kind(&other)
                    )))
                    .at(Stage::Eom)
                }
            };
            return Ok(outcome);
        }
    }

    /// Ends a transaction before EOM: queues an abort (sent with the next
    /// command, it needs no reply).
    fn abort(&mut self, mut outcome: TxnOutcome, stage: Stage, f: Final) -> TxnOutcome {
        self.conn.queue(Command::Abort);
        outcome.stage = stage;
        outcome.result = f;
        outcome
    }

    /// Sends quit and closes; errors are of no interest at this point.
    pub(crate) async fn close(mut self) {
        self.conn.queue(Command::Quit);
        let _ = self.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_map_to_status_and_key() {
        let f = status_of_code(&cstring("550 5.7.1 Go away")).unwrap();
        assert_eq!(f.status, Status::Reject);
        assert_eq!(f.code.as_deref(), Some("550 5.7.1"));
        let f = status_of_code(&cstring("451 try later")).unwrap();
        assert_eq!(f.status, Status::Tempfail);
        assert_eq!(f.code.as_deref(), Some("451"));
        assert!(status_of_code(&cstring("250 ok")).is_err());
    }
}
