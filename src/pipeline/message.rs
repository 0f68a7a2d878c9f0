//! One message's life, whoever drives it (the milter, or a command line tool reading a file):
//! begun at MAIL FROM ([`Message::begin`]), fed its header fields, decided once at end of
//! headers ([`Message::end_of_headers`]), fed its body, and finished at end of message into
//! an [`Outcome`]: the header edits and the SMTP answer.

use std::net::IpAddr;

use super::sign::{self, PendingSignature, SignPlan};
use super::verify::{self, Body, Envelope};
use super::{oversize_reply, Decision, Outbound, Outcome, Reply};
use crate::config::FailAction;
use crate::headers::auth_results::{has_forged, remove_forged};
use crate::headers::edits::Edits;
use crate::message::budget::{Buffer, InFlight};
use crate::message::{envelope_address, HeaderBlock, HeaderLimits, MAX_KEPT_PAST_CAP};
use crate::metrics::Counter;
use crate::pipeline::context::Context;

/// What the connection knows, for every message on it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// IPv4-mapped IPv6 addresses are stored as IPv4 ([`ConnInfo::new`]).
    pub client_ip: Option<IpAddr>,
    pub client_name: String,
    pub helo: String,
    /// Our authserv-id on this connection (configured, else the MTA's host name).
    pub authserv_id: Option<String>,
    /// The MTA sends the exact header bytes (SMFIP_HDR_LEADSPC).
    pub exact_headers: bool,
}

impl ConnInfo {
    /// The connection's facts: the client (an IPv4-mapped IPv6 address becomes the IPv4
    /// address, once, for every use: SPF, never_reject, internal_hosts, the header, the
    /// reports) and the MTA's host name (macro `j`), which names us when no authserv_id is
    /// configured.
    pub fn new(
        ctx: &Context,
        ip: Option<IpAddr>,
        client_name: String,
        mta_host_name: Option<&str>,
        exact_headers: bool,
    ) -> ConnInfo {
        ConnInfo {
            client_ip: ip.map(|ip| ip.to_canonical()),
            client_name,
            helo: String::new(),
            authserv_id: ctx.config.authserv_id_for(mta_host_name),
            exact_headers,
        }
    }
}

/// What end-of-headers answers.
pub enum EohAnswer {
    /// Keep sending the body.
    Continue,
    /// No further work: accept now, with this log line.
    Accept(String),
    /// Refuse now, with this log line.
    Refuse(Reply, String),
}

/// What we do with the message, decided once at end of headers.
enum Work {
    /// Still reading headers.
    Headers,
    Sign {
        why: Outbound,
        identity: String,
        source: sign::IdentitySource,
        signatures: Vec<PendingSignature>,
    },
    Verify {
        /// The whole message; `None` once it could not be kept (why in `not_kept`).
        buffer: Option<Buffer>,
        not_kept: Option<String>,
        authenticated: bool,
    },
    /// Nothing to do but delete forged Authentication-Results fields at end of message; the
    /// log line says why nothing else is done.
    Strip(String),
    /// Nothing to do; the MTA was told to accept at end of headers.
    Done,
}

/// One message in progress.
pub struct Message {
    _in_flight: InFlight,
    mail_from: String,
    /// ESMTP SIZE= from MAIL FROM: sizes the first allocation of a verification buffer.
    size_hint: Option<usize>,
    headers: HeaderBlock,
    work: Work,
    /// Lookups started before end of message (an inbound message: [`Message::start_early`]).
    early: Option<verify::early::Early>,
}

impl Message {
    /// MAIL FROM: its arguments as the MTA sent them (the address, then ESMTP parameters).
    pub fn begin(ctx: &Context, args: &[Vec<u8>]) -> Message {
        let mail_from = args
            .first()
            .map(|a| envelope_address(a))
            .unwrap_or_default();
        let size_hint = args.iter().skip(1).find_map(|a| {
            let s = std::str::from_utf8(a).ok()?;
            let (k, v) = s.split_once('=')?;
            k.eq_ignore_ascii_case("SIZE")
                .then(|| v.parse().ok())
                .flatten()
        });
        Message {
            _in_flight: ctx.services.budget.message(),
            mail_from,
            size_hint,
            headers: HeaderBlock::default(),
            work: Work::Headers,
            early: None,
        }
    }

    /// The message will be verified (the caller decided so from what the MTA told it by MAIL
    /// FROM; end of headers decides again): start its SPF checks now, and its DMARC and DKIM
    /// key lookups as their header fields arrive.
    pub fn start_early(&mut self, ctx: &Context, conn: &ConnInfo) {
        if let (Some(ip), Some(id)) = (conn.client_ip, conn.authserv_id.as_deref()) {
            self.early = Some(verify::early::Early::start(
                ctx,
                ip,
                &conn.helo,
                id,
                &self.mail_from,
            ));
        }
    }

    /// One header field, as the MTA sent it (see [`HeaderBlock::push`]).
    pub fn header(&mut self, ctx: &Context, conn: &ConnInfo, name: &[u8], value: &[u8]) {
        if let Some(early) = &mut self.early {
            early.header(name, value);
        }
        let limits = HeaderLimits {
            max_bytes: ctx.config.limits.max_header_size,
            max_fields: ctx.config.limits.max_headers,
        };
        if matches!(self.work, Work::Headers)
            && !self.headers.push(name, value, conn.exact_headers, limits)
        {
            tracing::trace!("header section over the limit; field not kept");
        }
    }

    /// End of headers: act on the decision (made by the caller: [`super::decide`] for the
    /// milter, forced by the command line tools), start signing or buffering.
    pub fn end_of_headers(
        &mut self,
        ctx: &Context,
        conn: &ConnInfo,
        decision: Decision,
        authenticated: bool,
    ) -> EohAnswer {
        let config = &ctx.config;
        let label = match &decision {
            Decision::Sign(_) => "sign",
            Decision::Verify => "verify",
            Decision::Skip(_) => "skip",
        };
        ctx.services
            .metrics
            .inc(Counter::Messages, &[("decision", label)]);
        let limits = &config.limits;
        let over = format!(
            "header section over the limit ({} bytes / {} fields)",
            limits.max_header_size, limits.max_headers
        );
        if self.headers.overrun() {
            // Past the cap we keep every From, DKIM-Signature and Authentication-Results
            // field; with more of them than that the message can be neither judged nor
            // cleaned, so it is refused whatever on_oversize says.
            let why = format!(
                "{over} and more than {MAX_KEPT_PAST_CAP} From, DKIM-Signature or Authentication-Results fields past it"
            );
            let action = match limits.on_oversize {
                FailAction::Tempfail => FailAction::Tempfail,
                _ => FailAction::Reject,
            };
            self.work = Work::Done;
            let reply = oversize_reply(action, &format!("message refused: {why}"))
                .unwrap_or(Reply::Continue);
            return EohAnswer::Refuse(reply, format!("{label}: refused: {why}"));
        }
        // Whatever else happens, a forged Authentication-Results field under our name must
        // be deleted, so such a message is never accepted before its end.
        let forged = conn
            .authserv_id
            .as_deref()
            .is_some_and(|id| has_forged(&self.headers, id));
        let complete = self.headers.is_complete();
        match decision {
            Decision::Skip(reason) => self.nothing_to_do(forged, reason),
            Decision::Sign(why) if !complete => {
                match oversize_reply(limits.on_oversize, &format!("cannot sign: {over}")) {
                    None => {
                        self.nothing_to_do(forged, format!("outbound ({why}): not signed: {over}"))
                    }
                    Some(reply) => {
                        self.work = Work::Done;
                        EohAnswer::Refuse(reply, format!("outbound ({why}): refused: {over}"))
                    }
                }
            }
            Decision::Sign(why) => {
                match sign::plan(config, &self.headers, &self.mail_from, conn.exact_headers) {
                    SignPlan::NoKey { reason } => self
                        .nothing_to_do(forged, format!("outbound ({why}): not signed: {reason}")),
                    SignPlan::Sign {
                        identity,
                        source,
                        signatures,
                    } => {
                        self.work = Work::Sign {
                            why,
                            identity,
                            source,
                            signatures,
                        };
                        EohAnswer::Continue
                    }
                }
            }
            Decision::Verify if conn.authserv_id.is_none() => {
                self.work = Work::Done;
                let reply = Reply::for_failure(
                    config.on_internal_error,
                    "4.7.1",
                    "mailseal: no authserv-id; try again later",
                );
                EohAnswer::Refuse(
                    reply,
                    "verify: no authserv-id: set authserv_id, or let the MTA send its host name (macro j)".into(),
                )
            }
            Decision::Verify if !complete && limits.on_oversize != FailAction::Accept => {
                self.work = Work::Done;
                let reply = oversize_reply(limits.on_oversize, &format!("message refused: {over}"))
                    .unwrap_or(Reply::Continue);
                EohAnswer::Refuse(reply, format!("verify: refused: {over}"))
            }
            Decision::Verify => {
                let cap = limits.max_message_size;
                let hint = (self.size_hint.unwrap_or(0) + self.headers.bytes() + 2).min(cap);
                let budget = &ctx.services.budget;
                let mut buffer = budget.buffer(hint, limits.max_buffered_total);
                let not_kept = (!(buffer.extend(self.headers.raw()) && buffer.extend(b"\r\n")))
                    .then(|| budget_exhausted(budget));
                self.work = Work::Verify {
                    buffer: not_kept.is_none().then_some(buffer),
                    not_kept,
                    authenticated,
                };
                EohAnswer::Continue
            }
        }
    }

    /// Nothing to sign or verify: accept now, unless a forged field must still be deleted.
    fn nothing_to_do(&mut self, forged: bool, why: String) -> EohAnswer {
        if forged {
            self.work = Work::Strip(why);
            EohAnswer::Continue
        } else {
            self.work = Work::Done;
            EohAnswer::Accept(why)
        }
    }

    /// A body chunk (any size; chunks may split lines anywhere).
    pub fn body(&mut self, ctx: &Context, chunk: &[u8]) {
        let cap = ctx.config.limits.max_message_size;
        match &mut self.work {
            Work::Sign { signatures, .. } => sign::write_body(signatures, chunk),
            Work::Verify {
                buffer, not_kept, ..
            } => {
                if let Some(buf) = buffer {
                    if buf.len() + chunk.len() > cap {
                        *buffer = None;
                        *not_kept = Some(format!("message over max_message_size ({cap} bytes)"));
                    } else if !buf.extend(chunk) {
                        *buffer = None;
                        *not_kept = Some(budget_exhausted(&ctx.services.budget));
                    }
                }
            }
            Work::Headers | Work::Strip(_) | Work::Done => {}
        }
    }

    /// End of message: finish signing or verify. `None` when the MTA was already answered
    /// at end of headers.
    pub async fn finish(self, ctx: &Context, conn: &ConnInfo) -> Option<Outcome> {
        let decision = match &self.work {
            Work::Done => return None,
            Work::Sign { .. } => "sign",
            Work::Verify { .. } => "verify",
            _ => "skip",
        };
        let start = std::time::Instant::now();
        let outcome = self.finish_work(ctx, conn).await;
        ctx.services.metrics.observe(
            crate::metrics::Timing::Message,
            &[("decision", decision)],
            start.elapsed(),
        );
        outcome
    }

    async fn finish_work(self, ctx: &Context, conn: &ConnInfo) -> Option<Outcome> {
        let config = &ctx.config;
        // Forged results under our name go on every path, deletes first.
        let mut edits = Edits::default();
        let forged = conn
            .authserv_id
            .as_deref()
            .map_or(0, |id| remove_forged(&self.headers, id, &mut edits));
        let stripped = if forged > 0 {
            format!(" forged-ar-removed={forged}")
        } else {
            String::new()
        };
        match self.work {
            Work::Done => None,
            // The MTA skipped end of headers: nothing was decided, so nothing may pass as
            // checked or signed.
            Work::Headers => {
                let reply = Reply::for_failure(
                    config.on_internal_error,
                    "4.7.1",
                    "mailseal: message incomplete; try again later",
                );
                if reply != Reply::Continue {
                    edits = Edits::default();
                }
                Some(Outcome::new(
                    edits,
                    reply,
                    format!("end of message without end of headers{stripped}"),
                ))
            }
            Work::Strip(why) => Some(Outcome::new(
                edits,
                Reply::Continue,
                format!("{why}{stripped}"),
            )),
            Work::Sign {
                why,
                identity,
                source,
                signatures,
            } => {
                let mut signed = Vec::new();
                let mut made = Vec::new();
                for sig in signatures {
                    match sign::finish(sig) {
                        Ok(f) => {
                            signed.push(format!("d={} s={}", f.domain, f.selector));
                            made.push(crate::pipeline::Signed {
                                domain: f.domain.to_ascii_lowercase(),
                                selector: f.selector.clone(),
                                algorithm: f.algorithm,
                            });
                            edits.insert_top(sign::DKIM_SIGNATURE, f.value);
                        }
                        Err(e) => {
                            let reply = Reply::for_failure(
                                config.signing.on_signing_error,
                                "4.7.1",
                                "DKIM signing failed; try again later",
                            );
                            if reply == Reply::Continue {
                                edits.clear_inserts();
                            } else {
                                edits = Edits::default();
                            }
                            return Some(Outcome::new(
                                edits,
                                reply,
                                format!("outbound ({why}): signing failed: {e}{stripped}"),
                            ));
                        }
                    }
                }
                let mut o = Outcome::new(
                    edits,
                    Reply::Continue,
                    format!(
                        "outbound ({why}): signed {} for {identity} ({source}){stripped}",
                        signed.join(", ")
                    ),
                );
                o.signed = made;
                Some(o)
            }
            Work::Verify {
                buffer,
                not_kept,
                authenticated,
            } => {
                let (Some(ip), Some(id)) = (conn.client_ip, conn.authserv_id.as_deref()) else {
                    let reply = Reply::for_failure(
                        config.on_internal_error,
                        "4.7.1",
                        "client address unknown; try again later",
                    );
                    return Some(Outcome::new(
                        Edits::default(),
                        reply,
                        "inbound: client IP unknown, not verified".into(),
                    ));
                };
                let env = Envelope {
                    client_ip: ip,
                    helo: &conn.helo,
                    mail_from: &self.mail_from,
                    authenticated,
                    authserv_id: id,
                    exact_headers: conn.exact_headers,
                    early: self.early.as_ref(),
                };
                let body = match (&buffer, &not_kept) {
                    (Some(b), _) => Body::Kept(b.as_slice()),
                    (None, why) => Body::NotKept(why.as_deref().unwrap_or("not kept")),
                };
                let mut o = verify::verify(ctx, &env, &self.headers, body).await;
                o.summary = format!("inbound from {ip}: {}", o.summary);
                if let Some(why) = &not_kept {
                    o.summary.push_str(&format!(" (body not kept: {why})"));
                }
                if self.headers.dropped() > 0 {
                    o.summary.push_str(&format!(
                        " ({} header fields past the limit not kept)",
                        self.headers.dropped()
                    ));
                }
                Some(o)
            }
        }
    }
}

fn budget_exhausted(budget: &crate::message::budget::Budget) -> String {
    tracing::warn!(
        in_use = budget.in_use(),
        "buffer budget (max_buffered_total) exhausted: message verified without its body"
    );
    "no room in max_buffered_total".into()
}
