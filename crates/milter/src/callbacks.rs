//! indymilter callbacks: translate what the MTA says into engine calls, and
//! verdicts into milter replies. Nothing here decides anything.

use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, SmtpReply, SocketInfo, Status,
};
use nobounce_core::{EngineSource, Session, Verdict};
use std::{
    ffi::{CStr, CString},
    net::IpAddr,
    sync::Arc,
};
use tracing::{error, warn};

/// Macros we ask the MTA for, per stage (Postfix honours the request).
const MACROS: &[(MacroStage, &str)] = &[
    (
        MacroStage::Connect,
        "j {client_addr} {client_name} {daemon_name}",
    ),
    (MacroStage::Helo, "{tls_version}"),
    (MacroStage::Mail, "i {auth_authen} {mail_addr}"),
    (MacroStage::Rcpt, "i {rcpt_addr} {rcpt_host} {rcpt_mailer}"),
    (MacroStage::Data, "i"),
    (MacroStage::Eoh, "i"),
    (MacroStage::Eom, "i"),
];

fn macro_str<'a>(macros: &'a indymilter::Macros, name: &CStr) -> Option<&'a str> {
    macros.get(name).and_then(|v| v.to_str().ok())
}

fn lossy(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
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
        if let Err(e) = reply.set_error_reply(&code, Some(&xcode), [r.text()]) {
            // Cannot happen for a sanitised Reply; the MTA's default reply
            // of the same class is still right.
            error!("cannot set SMTP reply {r}: {e}");
        }
    }
    status
}

/// One milter connection: the engine session of the current configuration.
#[derive(Debug)]
pub struct Conn {
    session: Session,
}

fn session<T: Send>(ctx: &mut Context<T>) -> Option<&mut T> {
    ctx.data.as_mut()
}

/// Builds the callbacks; each connection takes its engine from `engines`.
pub fn callbacks(engines: Arc<dyn EngineSource>) -> Callbacks<Conn> {
    Callbacks::new()
        .on_negotiate(|ctx: &mut NegotiateContext<Conn>, actions, opts| {
            Box::pin(async move { negotiate(ctx, actions, opts) })
        })
        .on_connect(move |ctx, hostname, socket_info| {
            let engine = engines.engine();
            Box::pin(async move {
                let ip: Option<IpAddr> = match socket_info {
                    SocketInfo::Inet(addr) => Some(addr.ip()),
                    _ => macro_str(&ctx.macros, c"{client_addr}").and_then(|a| a.parse().ok()),
                };
                let mta = macro_str(&ctx.macros, c"j").map(str::to_owned);
                let mut session = engine.session();
                let verdict = session.connect(ip, &lossy(&hostname), mta.as_deref()).await;
                ctx.data = Some(Conn { session });
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_helo(|ctx, helo| {
            Box::pin(async move {
                let Some(conn) = session(ctx) else {
                    return Status::Continue;
                };
                let verdict = conn.session.helo(&lossy(&helo)).await;
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_mail(|ctx, args| {
            Box::pin(async move {
                let auth = macro_str(&ctx.macros, c"{auth_authen}").map(str::to_owned);
                let queue_id = macro_str(&ctx.macros, c"i").map(str::to_owned);
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                if let Some(id) = &queue_id {
                    conn.session.set_queue_id(id);
                }
                let args: Vec<String> = args.iter().map(|a| lossy(a)).collect();
                let (sender, esmtp) = args
                    .split_first()
                    .map_or(("", &[][..]), |(s, r)| (s.as_str(), r));
                let esmtp: Vec<&str> = esmtp.iter().map(String::as_str).collect();
                let verdict = conn
                    .session
                    .mail_from(sender, &esmtp, auth.as_deref())
                    .await;
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_rcpt(|ctx, args| {
            Box::pin(async move {
                let mailer = macro_str(&ctx.macros, c"{rcpt_mailer}").map(str::to_owned);
                let host = macro_str(&ctx.macros, c"{rcpt_host}").map(str::to_owned);
                let Some(conn) = ctx.data.as_mut() else {
                    return Status::Continue;
                };
                let rcpt = args.first().map(|a| lossy(a)).unwrap_or_default();
                let rcpt = rcpt.as_str();
                // With SMFIP_RCPT_REJ the MTA also shows us recipients it
                // rejected itself; their mailer is "error".
                if mailer.as_deref() == Some("error") {
                    conn.session.mta_rejected_rcpt(rcpt, host.as_deref()).await;
                    return Status::Continue;
                }
                let verdict = conn.session.rcpt_to(rcpt).await;
                apply_verdict(&mut ctx.reply, &verdict)
            })
        })
        .on_header(|ctx, name, value| {
            Box::pin(async move {
                if let Some(conn) = ctx.data.as_mut() {
                    conn.session.header(&lossy(&name), &lossy(&value));
                }
                Status::Continue
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
                let plan = conn.session.end_of_message();
                if let Some(refusal) = &plan.refuse {
                    return apply_verdict(&mut ctx.reply, refusal);
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
                ctx.data = None;
                Status::Continue
            })
        })
}

fn negotiate(ctx: &mut NegotiateContext<Conn>, actions: Actions, opts: ProtoOpts) -> Status {
    let wanted = Actions::ADD_HEADER | Actions::CHANGE_HEADER;
    if !actions.contains(wanted) {
        warn!("MTA does not offer header actions; SPF headers will not be added");
    }
    ctx.requested_actions = actions & (wanted | Actions::REQUEST_MACROS);
    // We do not look at the body, nor at unknown commands.
    let mut requested = opts & (ProtoOpts::NO_BODY | ProtoOpts::NO_UNKNOWN | ProtoOpts::NO_DATA);
    // See the recipients the MTA rejected itself (dictionary attacks).
    requested |= opts & ProtoOpts::REJECTED_RCPT;
    ctx.requested_opts = requested;
    if actions.contains(Actions::REQUEST_MACROS) {
        for (stage, list) in MACROS {
            if let Ok(list) = CString::new(*list) {
                ctx.requested_macros.insert(*stage, list);
            }
        }
    }
    Status::Continue
}
