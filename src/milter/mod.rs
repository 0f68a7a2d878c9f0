//! The milter protocol side. Callbacks are adapters: convert the arguments, call one
//! [`Session`] method, and turn the result into a milter status. Faults become the
//! configured answer (tempfail by default), never a crash.

pub mod session;

use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;

use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, Macros, NegotiateContext,
    ProtoOpts, SetErrorReply, SmtpReply, SocketInfo, Status,
};
use tokio::sync::watch;

use crate::config::FailAction;
use crate::headers::edits;
use crate::metrics::Counter;
use crate::pipeline::context::Context as MessageContext;
use crate::pipeline::message::{ConnInfo, EohAnswer, Message};
use crate::pipeline::{decide, ClientFacts, Decision, Reply};
use session::{Negotiated, Session};

fn macro_str<'a>(macros: &'a Macros, name: &CStr) -> Option<&'a str> {
    macros.get(name).and_then(|v| v.to_str().ok())
}

fn queue_id(macros: &Macros) -> String {
    macro_str(macros, c"i").unwrap_or("NOQUEUE").to_string()
}

/// Set the SMTP reply and return the status that carries it.
fn reply_status(reply: &mut SmtpReply, r: &Reply) -> Status {
    match r {
        Reply::Continue => Status::Continue,
        Reply::Tempfail { code, status, text } => {
            let text = sanitize_reply(text);
            match reply.set_error_reply(code, Some(*status), [text.as_str()]) {
                Ok(()) => Status::Tempfail,
                Err(e) => {
                    tracing::warn!("invalid SMTP reply {code} {status} {text:?}: {e}");
                    Status::Tempfail
                }
            }
        }
        Reply::Reject { code, status, text } => {
            let text = sanitize_reply(text);
            match reply.set_error_reply(code, Some(*status), [text.as_str()]) {
                Ok(()) => Status::Reject,
                Err(e) => {
                    tracing::warn!("invalid SMTP reply {code} {status} {text:?}: {e}");
                    Status::Reject
                }
            }
        }
    }
}

fn reply_label(r: &Reply) -> &'static str {
    match r {
        Reply::Continue => "accept",
        Reply::Tempfail { .. } => "tempfail",
        Reply::Reject { .. } => "reject",
    }
}

/// Reply text must be printable ASCII without CR/LF and at most ~980 bytes.
fn sanitize_reply(text: &str) -> String {
    let mut t: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    t.truncate(900);
    t
}

/// The answer for an internal fault (missing session state, action failure).
fn internal_error(reply: &mut SmtpReply, action: FailAction, what: &str) -> Status {
    tracing::warn!("internal error: {what}");
    reply_status(
        reply,
        &Reply::for_failure(
            action,
            "4.7.1",
            "mailseal: temporary internal error; try again later",
        ),
    )
}

macro_rules! session {
    ($cx:expr, $tempfail:expr) => {
        match $cx.data.as_mut() {
            Some(s) => s,
            None => return internal_error(&mut $cx.reply, FailAction::Tempfail, $tempfail),
        }
    };
}

async fn negotiate(
    contexts: watch::Receiver<Arc<MessageContext>>,
    cx: &mut NegotiateContext<Session>,
    actions: Actions,
    opts: ProtoOpts,
) -> Status {
    let ctx = contexts.borrow().clone();
    let wanted =
        Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::QUARANTINE | Actions::DELETE_RCPT;
    cx.requested_actions = actions & wanted;
    if !actions.contains(Actions::ADD_HEADER | Actions::CHANGE_HEADER) {
        tracing::warn!(
            "MTA does not offer add/change header actions; mailseal cannot sign or stamp results"
        );
    }
    let mut neg = Negotiated {
        quarantine: actions.contains(Actions::QUARANTINE),
        ..Default::default()
    };
    if opts.contains(ProtoOpts::LEADING_SPACE) {
        cx.requested_opts |= ProtoOpts::LEADING_SPACE;
        neg.leading_space = true;
    }
    // Stages whose answer is always "continue" need no answer at all: each saves the MTA a
    // round trip per message. End of headers and end of message keep their answers.
    let noreply = (ProtoOpts::NOREPLY_CONNECT
        | ProtoOpts::NOREPLY_HELO
        | ProtoOpts::NOREPLY_MAIL
        | ProtoOpts::NOREPLY_RCPT
        | ProtoOpts::NOREPLY_HEADER
        | ProtoOpts::NOREPLY_BODY)
        & opts;
    cx.requested_opts |= noreply;
    neg.noreply = noreply;
    // The recipients matter only for the report intake: without report addresses the MTA
    // need not send them.
    if ctx.intake.is_none() && opts.contains(ProtoOpts::NO_RCPT) {
        cx.requested_opts |= ProtoOpts::NO_RCPT;
    }
    for (stage, list) in [
        (
            MacroStage::Connect,
            "j {daemon_name} {client_addr} {client_name}",
        ),
        (MacroStage::Mail, "i {auth_type} {auth_authen} {mail_addr}"),
        (MacroStage::Eoh, "i"),
        (MacroStage::Eom, "i"),
    ] {
        if let Ok(c) = CString::new(list) {
            cx.requested_macros.insert(stage, c);
        }
    }
    cx.data = Some(Session::new(ctx, neg));
    Status::Continue
}

async fn connect(cx: &mut Context<Session>, hostname: CString, info: SocketInfo) -> Status {
    let from_macro = macro_str(&cx.macros, c"{client_addr}").and_then(|a| a.parse::<IpAddr>().ok());
    let mta_host = macro_str(&cx.macros, c"j").map(str::to_string);
    let session = session!(cx, "no session at connect");
    let ip = match info {
        SocketInfo::Inet(sa) => Some(sa.ip()),
        _ => from_macro,
    };
    session.conn = ConnInfo::new(
        &session.ctx,
        ip,
        hostname.to_string_lossy().into_owned(),
        mta_host.as_deref(),
        session.opts.leading_space,
    );
    session.answer(ProtoOpts::NOREPLY_CONNECT)
}

async fn helo(cx: &mut Context<Session>, name: CString) -> Status {
    let session = session!(cx, "no session at HELO");
    session.conn.helo = name.to_string_lossy().trim().to_string();
    session.answer(ProtoOpts::NOREPLY_HELO)
}

/// What the MTA has told us about the client that decides sign or verify: `{auth_authen}`
/// (sent with MAIL FROM) and `{daemon_name}` (with the connection).
fn client_macros(macros: &Macros) -> (Option<String>, Option<String>) {
    (
        macro_str(macros, c"{auth_authen}").map(str::to_string),
        macro_str(macros, c"{daemon_name}").map(str::to_string),
    )
}

async fn mail(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let (auth_user, daemon) = client_macros(&cx.macros);
    let session = session!(cx, "no session at MAIL");
    session.new_transaction();
    let args: Vec<Vec<u8>> = args.into_iter().map(CString::into_bytes).collect();
    let mut msg = Message::begin(&session.ctx, &args);
    let facts = ClientFacts {
        ip: session.conn.client_ip,
        auth_user: auth_user.as_deref(),
        daemon_name: daemon.as_deref(),
    };
    // Inbound by what we know now: start the lookups (end of headers decides again).
    if decide(&session.ctx.config, &facts) == Decision::Verify {
        msg.start_early(&session.ctx, &session.conn);
    }
    session.msg = Some(msg);
    session.answer(ProtoOpts::NOREPLY_MAIL)
}

/// A recipient: kept, and when it is an `[intake] address`, the message is captured for
/// the report intake.
async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    // Only the report intake looks at recipients.
    let Some(rcpt) = args
        .first()
        .filter(|_| session.ctx.intake.is_some())
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
    else {
        return session.answer(ProtoOpts::NOREPLY_RCPT);
    };
    let ctx = &session.ctx;
    let bare = rcpt.trim().trim_matches(['<', '>']).to_ascii_lowercase();
    session.rcpts += 1;
    if ctx.config.intake.addresses.contains(&bare) {
        let c = session
            .intake
            .get_or_insert_with(|| session::Capture::new(ctx));
        if !c.report_rcpts.contains(&rcpt) {
            c.report_rcpts.push(rcpt);
        }
    }
    session.answer(ProtoOpts::NOREPLY_RCPT)
}

async fn header(cx: &mut Context<Session>, name: CString, value: CString) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    if let Some(c) = session.intake.as_mut() {
        c.header(
            name.as_bytes(),
            value.as_bytes(),
            session.opts.leading_space,
        );
    }
    let msg = session
        .msg
        .get_or_insert_with(|| Message::begin(&session.ctx, &[]));
    msg.header(
        &session.ctx,
        &session.conn,
        name.as_bytes(),
        value.as_bytes(),
    );
    session.answer(ProtoOpts::NOREPLY_HEADER)
}

async fn eoh(cx: &mut Context<Session>) -> Status {
    let (auth_user, daemon) = client_macros(&cx.macros);
    let qid = queue_id(&cx.macros);
    let session = session!(cx, "no session at end of headers");
    if let Some(c) = session.intake.as_mut() {
        c.push(b"\r\n");
    }
    // A message for the report intake is read to its end whatever else happens to it.
    let accept = if session.intake.is_some() {
        Status::Continue
    } else {
        Status::Accept
    };
    let Some(msg) = session.msg.as_mut() else {
        tracing::info!(queue_id = %qid, "accept: no message in progress at end of headers");
        return accept;
    };
    let facts = ClientFacts {
        ip: session.conn.client_ip,
        auth_user: auth_user.as_deref(),
        daemon_name: daemon.as_deref(),
    };
    let decision = decide(&session.ctx.config, &facts);
    let authenticated = auth_user.as_deref().is_some_and(|u| !u.is_empty());
    match msg.end_of_headers(&session.ctx, &session.conn, decision, authenticated) {
        EohAnswer::Continue => Status::Continue,
        EohAnswer::Accept(why) => {
            session.msg = None;
            session
                .ctx
                .services
                .metrics
                .inc(Counter::Replies, &[("reply", "accept")]);
            tracing::info!(queue_id = %qid, "accept: {why}");
            accept
        }
        EohAnswer::Refuse(reply, why) => {
            session.msg = None;
            session
                .ctx
                .services
                .metrics
                .inc(Counter::Replies, &[("reply", reply_label(&reply))]);
            tracing::warn!(queue_id = %qid, "refuse: {why}");
            reply_status(&mut cx.reply, &reply)
        }
    }
}

async fn body(cx: &mut Context<Session>, chunk: bytes::Bytes) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return Status::Continue;
    };
    if let Some(msg) = session.msg.as_mut() {
        msg.body(&session.ctx, &chunk);
    }
    if let Some(c) = session.intake.as_mut() {
        c.push(&chunk);
    }
    session.answer(ProtoOpts::NOREPLY_BODY)
}

async fn eom(cx: &mut EomContext<Session>) -> Status {
    let qid = queue_id(&cx.macros);
    let capture = cx.data.as_mut().and_then(|s| s.intake.take());
    let status = finish_message(cx, &qid).await;
    match capture {
        Some(c) if status == Status::Continue => intake(cx, c, &qid).await,
        _ => status,
    }
}

/// An accepted message for `[intake] addresses`: handed to the intake reader (never
/// waited for). With `keep_messages = false` the report addresses are removed from its
/// recipients, and a message for no one else is discarded, once it is safe in the spool.
async fn intake(cx: &mut EomContext<Session>, c: session::Capture, qid: &str) -> Status {
    let Some(session) = cx.data.as_ref() else {
        return Status::Continue;
    };
    let Some(queue) = session.ctx.intake.clone() else {
        return Status::Continue;
    };
    let origin = format!("mail {qid}");
    // Safe once in the spool (synced to disk): only then may a report address go.
    let spooled = match (c.not_kept(), c.data) {
        (None, Some(data)) => {
            // The buffer (still charged to the budget) goes along: no copy to write it.
            let (q, o) = (queue.clone(), origin.clone());
            match tokio::task::spawn_blocking(move || (q.spool(&o, data.as_slice()), data)).await {
                Ok((true, _)) => true,
                Ok((false, data)) => {
                    queue.submit(origin, data.as_slice().to_vec());
                    false
                }
                Err(_) => false,
            }
        }
        (why, _) => {
            queue.not_read(origin, why.unwrap_or_default(), c.size);
            false
        }
    };
    if session.ctx.config.intake.keep_messages {
        return Status::Continue;
    }
    if !spooled {
        tracing::info!(
            queue_id = %qid,
            "intake: not kept for reading; delivered to the report addresses as usual"
        );
        return Status::Continue;
    }
    if c.report_rcpts.len() >= session.rcpts {
        tracing::info!(queue_id = %qid, "intake: read; discarded (only report addresses were recipients)");
        return Status::Discard;
    }
    for r in &c.report_rcpts {
        if let Err(e) = cx.actions.delete_recipient(r.as_str()).await {
            tracing::warn!(queue_id = %qid, "intake: cannot remove recipient {r}: {e}");
        }
    }
    Status::Continue
}

/// The end of the message for authentication: sign or verify, edit, answer.
async fn finish_message(cx: &mut EomContext<Session>, qid: &str) -> Status {
    let Some(session) = cx.data.as_mut() else {
        return internal_error(
            &mut cx.reply,
            FailAction::Tempfail,
            "no session at end of message",
        );
    };
    let Some(msg) = session.msg.take() else {
        return Status::Continue;
    };
    let Some(mut outcome) = msg.finish(&session.ctx, &session.conn).await else {
        return Status::Continue;
    };
    if outcome.edits.holds() && !session.opts.quarantine {
        tracing::warn!(queue_id = %qid, "MTA does not offer quarantine; message accepted with the verdict in its header");
        outcome.not_held("the MTA cannot hold messages (no quarantine action)");
    }
    let status = reply_status(&mut cx.reply, &outcome.reply);
    if status == Status::Continue {
        if let Err(e) = edits::apply(&cx.actions, &outcome.edits, session.opts.leading_space).await
        {
            return internal_error(
                &mut cx.reply,
                session.ctx.config.on_internal_error,
                &format!("queue id {qid}: header edit failed: {e}"),
            );
        }
    }
    outcome.applied(&session.ctx);
    let answer = match &outcome.reply {
        Reply::Continue if outcome.edits.holds() => "accept (hold)".to_string(),
        Reply::Continue => "accept".to_string(),
        Reply::Tempfail { code, status, .. } | Reply::Reject { code, status, .. } => {
            format!("{code} {status}")
        }
    };
    let label = if outcome.edits.holds() {
        "hold"
    } else {
        reply_label(&outcome.reply)
    };
    session
        .ctx
        .services
        .metrics
        .inc(Counter::Replies, &[("reply", label)]);
    if matches!(outcome.reply, Reply::Continue) {
        tracing::info!(queue_id = %qid, reply = %answer, "{}", outcome.summary);
    } else {
        tracing::warn!(queue_id = %qid, reply = %answer, "{}", outcome.summary);
    }
    status
}

async fn abort(cx: &mut Context<Session>) -> Status {
    if let Some(s) = cx.data.as_mut() {
        s.msg = None;
        s.new_transaction();
    }
    Status::Continue
}

async fn close(cx: &mut Context<Session>) -> Status {
    cx.data = None;
    Status::Continue
}

/// The callback table, each a thin adapter over [`Session`].
pub fn callbacks(contexts: watch::Receiver<Arc<MessageContext>>) -> Callbacks<Session> {
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            Box::pin(negotiate(contexts.clone(), cx, actions, opts))
        })
        .on_connect(|cx, host, info| Box::pin(connect(cx, host, info)))
        .on_helo(|cx, name| Box::pin(helo(cx, name)))
        .on_mail(|cx, args| Box::pin(mail(cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_eoh(|cx| Box::pin(eoh(cx)))
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eom(|cx| Box::pin(eom(cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
        .on_close(|cx| Box::pin(close(cx)))
}
