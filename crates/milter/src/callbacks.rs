//! indymilter callbacks: translate what the MTA says into engine calls, and
//! verdicts into milter replies. Nothing here decides anything.

use indymilter::{
    Actions, Callbacks, ContextActions, EomContext, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, SmtpReply, SocketInfo, Status,
};
use nobounce_core::{EngineSource, Session, Verdict};
use std::{
    ffi::{CStr, CString},
    net::IpAddr,
    sync::Arc,
};
use tracing::{error, warn};

/// The macros nobounce reads, per stage, and only those (Postfix and
/// Sendmail honour the request): the MTA's name `j` and the client's
/// address (for a client on a unix socket) at connect; the queue id `i`
/// for the logs; `{auth_authen}` (authenticated sessions are never banned
/// nor SPF-checked by default) at MAIL; `{rcpt_mailer}` and `{rcpt_host}`
/// (the MTA's own rejection and its status) at RCPT. Empty lists ask for
/// nothing at stages nobounce does not read macros at.
const MACROS: &[(MacroStage, &str)] = &[
    (MacroStage::Connect, "j {client_addr}"),
    (MacroStage::Helo, ""),
    (MacroStage::Mail, "i {auth_authen}"),
    (MacroStage::Rcpt, "i {rcpt_mailer} {rcpt_host}"),
    (MacroStage::Data, ""),
    (MacroStage::Eoh, ""),
    (MacroStage::Eom, "i"),
];

/// Stages nobounce never reads: the MTA skips them (`SMFIP_NO*`). The body
/// is skipped too unless the bounce guard is on.
const SKIPPED: ProtoOpts = ProtoOpts::NO_DATA
    .union(ProtoOpts::NO_EOH)
    .union(ProtoOpts::NO_UNKNOWN);

/// Stages at which nobounce always continues: the MTA does not wait for a
/// reply (`SMFIP_NR_*`, milter protocol 6). A ban is told at MAIL FROM, so
/// connect and HELO never refuse.
const NO_REPLY: ProtoOpts = ProtoOpts::NOREPLY_CONNECT.union(ProtoOpts::NOREPLY_HELO);

fn macro_str<'a>(macros: &'a indymilter::Macros, name: &CStr) -> Option<&'a str> {
    macros.get(name).and_then(|v| v.to_str().ok())
}

/// The macros `names`, copied out of the context (which the callback
/// borrows mutably next).
fn owned_macros<const N: usize>(
    macros: &indymilter::Macros,
    names: [&CStr; N],
) -> [Option<String>; N] {
    names.map(|name| macro_str(macros, name).map(str::to_owned))
}

fn lossy(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

/// Whether the MTA rejected this recipient itself (`SMFIP_RCPT_REJ`):
/// mailer `error` and an enhanced status code as host.
fn mta_rejected(mailer: Option<&str>, host: Option<&str>) -> bool {
    mailer == Some("error")
        && host.is_some_and(|h| h.trim().parse::<nobounce_core::EnhancedStatus>().is_ok())
}

/// Maps a verdict to a milter status, setting the SMTP reply for refusals.
pub fn apply_verdict(reply: &mut SmtpReply, verdict: &Verdict) -> Status {
    let status = match verdict {
        Verdict::Continue => return Status::Continue,
        Verdict::Reject { .. } => Status::Reject,
        // A 421 reply makes the MTA close the connection.
        Verdict::Tempfail { .. } | Verdict::Disconnect { .. } => Status::Tempfail,
    };
    if let Some(r) = verdict.reply() {
        let code = r.code().to_string();
        let xcode = r.status().to_string();
        // Both milter clients unescape `%`: Sendmail uses the text as a
        // printf format and drops a reply with a lone `%`; Postfix turns
        // `%%` into `%` (milter8.c). So every `%` is doubled here, for the
        // milter only: the policy protocol takes the text as it is
        // (tests/tests/sendmail_e2e.rs checks what the client sees).
        let text = r.text().replace('%', "%%");
        if let Err(e) = reply.set_error_reply(&code, Some(&xcode), [text.as_str()]) {
            // Cannot happen for a sanitised Reply; the MTA's default reply
            // of the same class is still right.
            error!("cannot set SMTP reply {r}: {e}");
        }
    }
    status
}

/// One milter connection: the engine session of the generation current at
/// negotiation, and the stages negotiated without reply.
#[derive(Debug)]
pub struct Conn {
    session: Session,
    no_reply: ProtoOpts,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.session.engine().observer().connection("milter", false);
    }
}

/// Times one command for metrics.
fn timed(conn: &Conn, stage: &'static str, started: std::time::Instant) {
    conn.session
        .engine()
        .observer()
        .command("milter", stage, started.elapsed());
}

impl Conn {
    /// The status for a stage answered `verdict`: `Noreply` when the stage
    /// was negotiated without reply (the verdict is then always continue).
    fn status(&self, stage: ProtoOpts, reply: &mut SmtpReply, verdict: &Verdict) -> Status {
        if self.no_reply.contains(stage) {
            debug_assert_eq!(verdict, &Verdict::Continue);
            Status::Noreply
        } else {
            apply_verdict(reply, verdict)
        }
    }
}

/// Builds the callbacks; each connection takes its engine from `engines`
/// when it negotiates.
pub fn callbacks(engines: Arc<dyn EngineSource>) -> Callbacks<Conn> {
    Callbacks::new()
        .on_negotiate(move |ctx: &mut NegotiateContext<Conn>, actions, opts| {
            let engine = engines.engine();
            Box::pin(async move { negotiate(ctx, actions, opts, engine) })
        })
        .on_connect(|ctx, hostname, socket_info| {
            Box::pin(async move {
                // Postfix's cleanup shows the MTA's own mail (local
                // submissions, bounces) to non_smtpd_milters as client
                // 127.0.0.1 port 0; no TCP client has port 0.
                let internal = matches!(&socket_info, SocketInfo::Inet(a) if a.port() == 0 && a.ip().is_loopback());
                let ip: Option<IpAddr> = match socket_info {
                    SocketInfo::Inet(addr) => Some(addr.ip()),
                    _ => macro_str(&ctx.macros, c"{client_addr}").and_then(|a| a.parse().ok()),
                };
                let mta = macro_str(&ctx.macros, c"j").map(str::to_owned);
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                let started = std::time::Instant::now();
                let verdict = conn
                    .session
                    .connect(ip, &lossy(&hostname), mta.as_deref())
                    .await;
                timed(conn, "connect", started);
                if internal {
                    conn.session.set_internal();
                }
                conn.status(ProtoOpts::NOREPLY_CONNECT, &mut ctx.reply, &verdict)
            })
        })
        .on_helo(|ctx, helo| {
            Box::pin(async move {
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                let verdict = conn.session.helo(&lossy(&helo)).await;
                conn.status(ProtoOpts::NOREPLY_HELO, &mut ctx.reply, &verdict)
            })
        })
        .on_mail(|ctx, args| {
            Box::pin(async move {
                let [auth, queue_id] = owned_macros(&ctx.macros, [c"{auth_authen}", c"i"]);
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                if let Some(id) = &queue_id {
                    conn.session.set_queue_id(id);
                }
                let started = std::time::Instant::now();
                // Borrowed when valid UTF-8 (the usual case), copied
                // lossily otherwise.
                let args: Vec<std::borrow::Cow<'_, str>> =
                    args.iter().map(|a| a.to_string_lossy()).collect();
                let (sender, esmtp) = args
                    .split_first()
                    .map_or(("", &[][..]), |(s, r)| (s.as_ref(), r));
                let esmtp: Vec<&str> = esmtp.iter().map(AsRef::as_ref).collect();
                let verdict = conn
                    .session
                    .mail_from(sender, &esmtp, auth.as_deref())
                    .await;
                timed(conn, "mail", started);
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_rcpt(|ctx, args| {
            Box::pin(async move {
                let [mailer, host] = owned_macros(&ctx.macros, [c"{rcpt_mailer}", c"{rcpt_host}"]);
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                let rcpt = args.first().map(|a| lossy(a)).unwrap_or_default();
                let rcpt = rcpt.as_str();
                // With SMFIP_RCPT_REJ the MTA also shows us recipients it
                // rejected itself: their mailer is "error" and their host
                // the enhanced status of the rejection (Postfix's
                // smtpd_milter.c). An *accepted* recipient can have mailer
                // "error" too: a virtual alias domain resolves to error(8)
                // until the alias is expanded, with a text as its host.
                if mta_rejected(mailer.as_deref(), host.as_deref()) {
                    conn.session.mta_rejected_rcpt(rcpt, host.as_deref()).await;
                    return Status::Continue;
                }
                let started = std::time::Instant::now();
                let verdict = conn.session.rcpt_to(rcpt).await;
                timed(conn, "rcpt", started);
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_header(|ctx, name, value| {
            Box::pin(async move {
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                if Session::reads_header(name.to_bytes()) {
                    conn.session.header(&lossy(&name), &lossy(&value));
                }
                conn.status(
                    ProtoOpts::NOREPLY_HEADER,
                    &mut ctx.reply,
                    &Verdict::Continue,
                )
            })
        })
        .on_body(|ctx, chunk| {
            Box::pin(async move {
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                if !conn.session.wants_body() {
                    // The MTA sends no more of this body (SMFIP_SKIP).
                    return Status::Skip;
                }
                conn.session.body(&chunk);
                if conn.session.wants_body() {
                    Status::Continue
                } else {
                    Status::Skip
                }
            })
        })
        .on_eom(|ctx: &mut EomContext<Conn>| {
            Box::pin(async move {
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                if let Some(id) = macro_str(&ctx.macros, c"i") {
                    conn.session.set_queue_id(id);
                }
                let started = std::time::Instant::now();
                let plan = conn.session.end_of_message().await;
                timed(conn, "eom", started);
                if let Some(refusal) = &plan.refuse {
                    return apply_verdict(&mut ctx.reply, refusal);
                }
                if plan.discard {
                    return Status::Discard;
                }
                if let Some(reason) = plan.quarantine {
                    if let Err(e) = ctx.actions.quarantine(reason).await {
                        // Not held: never worse than without the guard.
                        warn!("cannot quarantine the message: {e}");
                    }
                }
                if let Some(sender) = plan.change_sender {
                    if let Err(e) = ctx.actions.change_sender(sender, None::<CString>).await {
                        warn!("cannot change the envelope sender: {e}");
                    }
                }
                for (name, index) in plan.delete_headers {
                    let index = i32::try_from(index).unwrap_or(i32::MAX);
                    if let Err(e) = ctx
                        .actions
                        .change_header(name, index, None::<CString>)
                        .await
                    {
                        warn!("cannot delete header: {e}");
                    }
                }
                // Insert in reverse so the first planned header ends on top.
                for (name, value) in plan.insert_headers.into_iter().rev() {
                    if let Err(e) = ctx.actions.insert_header(0, name, value).await {
                        warn!("cannot insert header: {e}");
                    }
                }
                Status::Continue
            })
        })
        .on_abort(|ctx| {
            Box::pin(async move {
                if let Some(conn) = ctx.data.as_mut() {
                    conn.session.abort();
                }
                Status::Continue
            })
        })
        .on_close(|ctx| {
            Box::pin(async move {
                // The next SMTP session on this milter connection (Sendmail
                // may reuse one) starts afresh with the same generation.
                if let Some(conn) = ctx.data.as_mut() {
                    conn.session = conn.session.engine().session();
                }
                Status::Continue
            })
        })
}

/// Asks for the least protocol work the engine needs, among what the MTA
/// offers: no stage it never reads, no reply where it always continues,
/// only the macros it reads. Headers are read only while a header rule is
/// active (forged `Authentication-Results`), without a reply. What the MTA
/// does not offer is simply not asked for: the callbacks then answer as
/// usual.
fn negotiate(
    ctx: &mut NegotiateContext<Conn>,
    actions: Actions,
    opts: ProtoOpts,
    engine: nobounce_core::Engine,
) -> Status {
    let mut wanted_actions = if engine.edits_headers() {
        Actions::ADD_HEADER | Actions::CHANGE_HEADER
    } else {
        Actions::empty()
    };
    if !actions.contains(wanted_actions) {
        warn!("MTA does not offer header actions; SPF headers will not be added");
    }
    if engine.reads_bodies() {
        // The bounce guard holds bounces in the MTA's quarantine.
        wanted_actions |= Actions::QUARANTINE;
    }
    if engine.changes_sender() {
        if !actions.contains(Actions::CHANGE_SENDER) {
            warn!("MTA does not offer to change the envelope sender; BATV will not sign");
        }
        wanted_actions |= Actions::CHANGE_SENDER;
    }
    ctx.requested_actions = actions & (wanted_actions | Actions::REQUEST_MACROS);
    let (headers, header_reply) = if engine.reads_headers() {
        (ProtoOpts::empty(), ProtoOpts::NOREPLY_HEADER)
    } else {
        (ProtoOpts::NO_HEADER, ProtoOpts::empty())
    };
    let body = if engine.reads_bodies() {
        ProtoOpts::empty()
    } else {
        ProtoOpts::NO_BODY
    };
    // See the recipients the MTA rejected itself (dictionary attacks).
    let requested =
        opts & (SKIPPED | headers | body | NO_REPLY | header_reply | ProtoOpts::REJECTED_RCPT);
    ctx.requested_opts = requested;
    if actions.contains(Actions::REQUEST_MACROS) {
        for (stage, list) in MACROS {
            if let Ok(list) = CString::new(*list) {
                ctx.requested_macros.insert(*stage, list);
            }
        }
    }
    engine.observer().connection("milter", true);
    ctx.data = Some(Conn {
        session: engine.session(),
        no_reply: requested & (NO_REPLY | ProtoOpts::NOREPLY_HEADER),
    });
    Status::Continue
}

#[cfg(test)]
mod tests {
    use super::mta_rejected;

    #[test]
    fn only_a_status_code_marks_a_recipient_the_mta_rejected() {
        assert!(mta_rejected(Some("error"), Some("5.1.1")));
        assert!(mta_rejected(Some("error"), Some("4.7.1")));
        // Accepted, in a virtual alias domain (found by the alias e2e test:
        // such recipients were never checked).
        assert!(!mta_rejected(
            Some("error"),
            Some("User unknown in virtual alias table")
        ));
        assert!(!mta_rejected(Some("smtp"), Some("[127.0.0.1]:25")));
        assert!(!mta_rejected(None, None));
        assert!(!mta_rejected(Some("error"), None));
    }
}
