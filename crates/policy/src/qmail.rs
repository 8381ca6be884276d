//! The qmail plugin: `nobounce qmail-spp` runs once per SMTP command under
//! qmail-smtpd, for the qmail-spp patch (`[mail]` and `[rcpt]` sections
//! of `control/smtpplugins`) or the RCPTCHECK patch. It turns the
//! environment qmail-smtpd gives it into a policy request, asks the
//! running nobounce over its policy socket, and turns the action into what
//! qmail-smtpd reads:
//!
//! | nobounce says            | qmail-spp output  | RCPTCHECK exit |
//! |--------------------------|-------------------|----------------|
//! | continue (`DUNNO`)       | nothing           | 0              |
//! | `5NN X.Y.Z text`         | `E5NN X.Y.Z text` | 100            |
//! | `4NN X.Y.Z text`         | `E4NN X.Y.Z text` | 111            |
//! | `421 X.Y.Z text` (a ban) | `R421 X.Y.Z text` | 111            |
//! | unreachable, timeout     | `E451 4.3.0 ...`  | 111            |
//!
//! qmail-spp adds the CR LF after the output line and, for `R`, drops the
//! connection. qmail-smtpd announces no SIZE, so on qmail only mailboxes
//! that are already full can be refused, not messages too big for them.

use crate::request::ProtocolState;
use nobounce_core::Endpoint;
use std::{io, time::Duration};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Which patch runs the plugin.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Mode {
    /// qmail-spp, at MAIL FROM.
    SppMail,
    /// qmail-spp, at RCPT TO.
    SppRcpt,
    /// The RCPTCHECK patch (environment `SENDER`, `RECIPIENT`; exit codes).
    RcptCheck,
}

/// What the plugin read from its environment.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct QmailEnv {
    /// `TCPREMOTEIP`.
    pub remote_ip: String,
    /// `TCPREMOTEHOST` (tcpserver, when it looked the name up).
    pub remote_host: String,
    /// `SMTPHELOHOST`.
    pub helo: String,
    /// `SMTPMAILFROM` (qmail-spp) or `SENDER` (RCPTCHECK): a bare address.
    pub sender: String,
    /// `SMTPRCPTTO` (qmail-spp) or `RECIPIENT` (RCPTCHECK).
    pub recipient: String,
    /// `SMTPAUTHUSER`, set by qmail-smtpd's AUTH patches.
    pub auth_user: String,
}

/// Why the plugin cannot tell what to ask.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Neither qmail-spp's nor RCPTCHECK's variables are set.
    #[error(
        "not run by qmail-smtpd: neither SMTPMAILFROM (qmail-spp) nor RECIPIENT (RCPTCHECK) is set"
    )]
    NotQmail,
}

impl QmailEnv {
    /// Reads the environment through `var` and decides the mode:
    /// `stage` forces the qmail-spp stage (`mail` or `rcpt`). Without it,
    /// RCPTCHECK when `RECIPIENT` is set and `SMTPMAILFROM` is not; else
    /// qmail-spp at RCPT when `SMTPRCPTTO` is set, at MAIL otherwise.
    /// (qmail-spp leaves `SMTPRCPTTO` of the previous message set at the
    /// next MAIL: give `--stage mail` in the `[mail]` section.)
    pub fn read(
        var: impl Fn(&str) -> Option<String>,
        stage: Option<Mode>,
    ) -> Result<(Mode, Self), EnvError> {
        let get = |name: &str| var(name).unwrap_or_default();
        let spp = var("SMTPMAILFROM").is_some();
        let mode = match stage {
            Some(mode) => mode,
            None if !spp && var("RECIPIENT").is_some() => Mode::RcptCheck,
            None if !spp => return Err(EnvError::NotQmail),
            None if !get("SMTPRCPTTO").is_empty() => Mode::SppRcpt,
            None => Mode::SppMail,
        };
        let (sender, recipient) = match mode {
            Mode::RcptCheck => (get("SENDER"), get("RECIPIENT")),
            Mode::SppRcpt => (get("SMTPMAILFROM"), get("SMTPRCPTTO")),
            Mode::SppMail => (get("SMTPMAILFROM"), String::new()),
        };
        Ok((
            mode,
            Self {
                remote_ip: get("TCPREMOTEIP"),
                remote_host: get("TCPREMOTEHOST"),
                helo: get("SMTPHELOHOST"),
                sender,
                recipient,
                auth_user: get("SMTPAUTHUSER"),
            },
        ))
    }

    /// The policy request for this command. Values lose any CR, LF or
    /// NUL (they would end the attribute early).
    pub fn request(&self, mode: Mode) -> String {
        let state = match mode {
            Mode::SppMail => "MAIL",
            Mode::SppRcpt | Mode::RcptCheck => "RCPT",
        };
        let clean = |s: &str| s.replace(['\r', '\n', '\0'], "");
        let mut r = String::with_capacity(256);
        for (name, value) in [
            ("request", "smtpd_access_policy"),
            ("protocol_state", state),
            ("protocol_name", "SMTP"),
            ("client_address", self.remote_ip.as_str()),
            ("client_name", self.remote_host.as_str()),
            ("helo_name", self.helo.as_str()),
            ("sender", self.sender.as_str()),
            ("recipient", self.recipient.as_str()),
            ("sasl_username", self.auth_user.as_str()),
        ] {
            r.push_str(name);
            r.push('=');
            r.push_str(&clean(value));
            r.push('\n');
        }
        r.push('\n');
        debug_assert!(matches!(
            crate::request::PolicyRequest::from_attributes(
                r.lines()
                    .filter_map(|l| l.split_once('='))
                    .collect::<Vec<_>>()
            )
            .map(|p| p.state),
            Ok(ProtocolState::Mail | ProtocolState::Rcpt)
        ));
        r
    }
}

/// What nobounce answered, for qmail.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Answer {
    /// Accept (or leave it to qmail's other checks).
    Accept,
    /// Refuse this command with this whole reply (`550 5.1.1 ...`).
    Refuse(String),
    /// Reply (a `421`), then drop the connection.
    Disconnect(String),
}

impl Answer {
    /// Reads an `action=...` value. Anything that is not a 4xx or 5xx
    /// reply (`DUNNO`, `OK`, `PREPEND ...`) accepts.
    pub fn from_action(action: &str) -> Self {
        // One line only, without control characters: qmail-spp reads the
        // first line of the output, and the client gets it verbatim.
        let first = action.lines().next().unwrap_or("");
        let cleaned: String = first.chars().filter(|c| !c.is_control()).collect();
        let action = cleaned.trim();
        let code = action
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
        match code.and_then(|c| c.as_bytes().first()) {
            Some(b'4' | b'5') if action.len() == 3 || action.as_bytes()[3] == b' ' => {
                if code == Some("421") {
                    Self::Disconnect(action.to_owned())
                } else {
                    Self::Refuse(action.to_owned())
                }
            }
            _ => Self::Accept,
        }
    }

    /// The answer when nobounce could not be asked: try again later.
    pub fn unreachable() -> Self {
        Self::Refuse("451 4.3.0 Policy service unavailable, try again later".to_owned())
    }

    /// The qmail-spp output: one line, or nothing.
    pub fn spp_output(&self) -> String {
        match self {
            Self::Accept => String::new(),
            Self::Refuse(reply) => format!("E{reply}\n"),
            Self::Disconnect(reply) => format!("R{reply}\n"),
        }
    }

    /// The RCPTCHECK exit code: 0 accepts, 100 refuses (qmail-smtpd says
    /// 553), 111 is a temporary failure (qmail-smtpd says 421).
    pub fn rcptcheck_exit(&self) -> u8 {
        match self {
            Self::Accept => 0,
            Self::Refuse(reply) if reply.starts_with('5') => 100,
            Self::Refuse(_) | Self::Disconnect(_) => 111,
        }
    }
}

/// Why nobounce could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The service answered something that is not `action=...`.
    #[error("not a policy reply: {0:?}")]
    BadReply(String),
}

/// Sends `request` to the policy service at `endpoint` and returns the
/// action, all within `timeout`.
pub async fn ask(
    endpoint: &Endpoint,
    request: &str,
    timeout: Duration,
) -> Result<String, AskError> {
    tokio::time::timeout(timeout, async {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                exchange(stream, request).await
            }
            Endpoint::Unix(path) => {
                exchange(tokio::net::UnixStream::connect(path).await?, request).await
            }
        }
    })
    .await
    .map_err(|_| AskError::Timeout(timeout))?
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: S,
    request: &str,
) -> Result<String, AskError> {
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(request.as_bytes()).await?;
    write.flush().await?;
    // One line of at most 4 KiB is the answer.
    let mut bytes = Vec::new();
    BufReader::new(read)
        .take(4096)
        .read_until(b'\n', &mut bytes)
        .await?;
    let line = String::from_utf8_lossy(&bytes);
    line.strip_prefix("action=")
        .map(|a| a.trim_end().to_owned())
        .ok_or_else(|| AskError::BadReply(line.trim_end().to_owned()))
}

/// What the plugin does, for the binary to carry out.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PluginOutcome {
    /// Written to standard output (qmail-spp reads it).
    pub stdout: String,
    /// The exit code.
    pub exit: u8,
    /// Written to standard error (qmail-smtpd's log), if anything.
    pub warning: Option<String>,
}

/// The whole plugin: read the environment through `var`, ask the policy
/// service at `endpoint` within `timeout`, and say what to print and how
/// to exit. `endpoint` is `Err` when it could not be found out (a broken
/// configuration file). Whatever fails makes the command fail temporarily
/// (`E451`, or exit 111 for RCPTCHECK), so mail is never lost.
pub async fn plugin(
    var: impl Fn(&str) -> Option<String>,
    stage: Option<Mode>,
    endpoint: Result<Option<Endpoint>, String>,
    timeout: Duration,
) -> PluginOutcome {
    let (mode, env) = match QmailEnv::read(&var, stage) {
        Ok(read) => read,
        Err(e) => return unavailable(stage, e.to_string()),
    };
    let endpoint = match endpoint {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            let why = "no policy socket: set [policy] socket in the configuration, or --socket";
            return unavailable(Some(mode), why.to_owned());
        }
        Err(why) => return unavailable(Some(mode), why),
    };
    let endpoint = &endpoint;
    match ask(endpoint, &env.request(mode), timeout).await {
        Ok(action) => outcome(mode, Answer::from_action(&action), None),
        Err(e) => outcome(
            mode,
            Answer::unreachable(),
            Some(format!("cannot ask nobounce at {endpoint}: {e}")),
        ),
    }
}

/// nobounce could not be asked, because of `why`: fail temporarily.
pub fn unavailable(stage: Option<Mode>, why: String) -> PluginOutcome {
    outcome(
        stage.unwrap_or(Mode::SppMail),
        Answer::unreachable(),
        Some(why),
    )
}

fn outcome(mode: Mode, answer: Answer, warning: Option<String>) -> PluginOutcome {
    let warning = warning.map(|w| format!("nobounce qmail-spp: {w}"));
    match mode {
        Mode::RcptCheck => PluginOutcome {
            stdout: String::new(),
            exit: answer.rcptcheck_exit(),
            warning,
        },
        Mode::SppMail | Mode::SppRcpt => PluginOutcome {
            stdout: answer.spp_output(),
            exit: 0,
            warning,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn modes_follow_the_environment() {
        let spp_mail = env(&[
            ("TCPREMOTEIP", "192.0.2.1"),
            ("SMTPMAILFROM", "a@b.example"),
        ]);
        assert_eq!(QmailEnv::read(&spp_mail, None).unwrap().0, Mode::SppMail);
        let spp_rcpt = env(&[("SMTPMAILFROM", ""), ("SMTPRCPTTO", "c@d.example")]);
        assert_eq!(QmailEnv::read(&spp_rcpt, None).unwrap().0, Mode::SppRcpt);
        // A leftover SMTPRCPTTO at the next MAIL: the stage given wins.
        let (mode, e) = QmailEnv::read(&spp_rcpt, Some(Mode::SppMail)).unwrap();
        assert_eq!((mode, e.recipient.as_str()), (Mode::SppMail, ""));
        let check = env(&[("SENDER", "a@b.example"), ("RECIPIENT", "c@d.example")]);
        let (mode, e) = QmailEnv::read(&check, None).unwrap();
        assert_eq!(mode, Mode::RcptCheck);
        assert_eq!(
            (e.sender.as_str(), e.recipient.as_str()),
            ("a@b.example", "c@d.example")
        );
        assert!(QmailEnv::read(env(&[]), None).is_err());
    }

    #[test]
    fn the_request_cannot_be_split_by_its_values() {
        let e = QmailEnv {
            helo: "evil\nrecipient=postmaster@x".into(),
            sender: "a@b.example\r\n\r\n".into(),
            ..Default::default()
        };
        let r = e.request(Mode::SppMail);
        assert_eq!(r.matches("\n\n").count(), 1, "{r:?}");
        assert!(r.ends_with("\n\n"));
        assert!(
            r.contains("helo_name=evilrecipient=postmaster@x\n"),
            "{r:?}"
        );
    }

    #[test]
    fn answers_map_to_output_and_exit_codes() {
        let cases = [
            ("DUNNO", "", 0),
            ("OK", "", 0),
            ("PREPEND X-Foo: bar", "", 0),
            (
                "550 5.1.1 No such user here",
                "E550 5.1.1 No such user here\n",
                100,
            ),
            ("452 4.2.2 Mailbox full", "E452 4.2.2 Mailbox full\n", 111),
            ("421 4.7.0 Banned", "R421 4.7.0 Banned\n", 111),
            ("5xx nonsense", "", 0),
            ("4000 no", "", 0),
        ];
        for (action, out, exit) in cases {
            let a = Answer::from_action(action);
            assert_eq!(a.spp_output(), out, "{action}");
            assert_eq!(a.rcptcheck_exit(), exit, "{action}");
        }
        // A reply with a line break or control characters stays one line.
        let odd = Answer::from_action("550 5.1.1 no\r\nE250 ok\0");
        assert_eq!(odd.spp_output(), "E550 5.1.1 no\n");
        let down = Answer::unreachable();
        assert!(down.spp_output().starts_with("E451 4.3.0 "));
        assert_eq!(down.rcptcheck_exit(), 111);
    }
}
