//! Per-connection and per-message state, and what each milter stage does with it.
//! Connection facts (client, HELO, configuration snapshot) live as long as the SMTP session;
//! message state is created at MAIL FROM and dropped at end of message or abort.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::FailAction;
use crate::headers::actions::Edits;
use crate::headers::auth_results::{has_forged, remove_forged};
use crate::message::{envelope_address, HeaderBlock, HeaderLimits, MAX_KEPT_PAST_CAP};
use crate::pipeline::sign::{self, PendingSignature, SignPlan};
use crate::pipeline::verify::{self, Body, Envelope};
use crate::pipeline::{decide, oversize_reply, ClientFacts, Decision, Outbound, Outcome, Reply};
use crate::Snapshot;

/// Options agreed with the MTA at negotiation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    pub leading_space: bool,
    pub quarantine: bool,
    /// Stages the MTA sends without waiting for an answer (SMFIP_NR_*).
    pub noreply: indymilter::ProtoOpts,
}

pub struct Session {
    pub snap: Arc<Snapshot>,
    _open: crate::metrics::ConnectionGuard,
    pub opts: Negotiated,
    /// IPv4-mapped IPv6 addresses are stored as IPv4 ([`Session::set_client`]).
    pub client_ip: Option<IpAddr>,
    pub client_name: String,
    pub helo: String,
    /// Our authserv-id on this connection (configured, else the MTA's host name).
    pub authserv_id: Option<String>,
    pub msg: Option<MessageState>,
}

pub struct MessageState {
    _in_flight: crate::budget::InFlight,
    pub mail_from: String,
    /// ESMTP SIZE= from MAIL FROM: sizes the first allocation of a verification buffer.
    pub size_hint: Option<usize>,
    pub headers: HeaderBlock,
    pub work: Work,
    pub body_bytes: u64,
}

/// What we do with the message, decided once at end of headers.
pub enum Work {
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
        buffer: Option<crate::budget::Buffer>,
        not_kept: Option<String>,
        authenticated: bool,
    },
    /// Nothing to do but delete forged Authentication-Results fields at end of message; the
    /// log line says why nothing else is done.
    Strip(String),
    /// Nothing to do; the MTA was told to accept at end of headers.
    Done,
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

impl MessageState {
    fn new(mail_from: String, size_hint: Option<usize>) -> Self {
        MessageState {
            _in_flight: crate::budget::InFlight::new(),
            mail_from,
            size_hint,
            headers: HeaderBlock::default(),
            work: Work::Headers,
            body_bytes: 0,
        }
    }
}

impl Session {
    pub fn new(snap: Arc<Snapshot>, opts: Negotiated) -> Self {
        let authserv_id = snap.config.authserv_id_for(None);
        Session {
            snap,
            _open: crate::metrics::global().connection(),
            opts,
            client_ip: None,
            client_name: String::new(),
            helo: String::new(),
            authserv_id,
            msg: None,
        }
    }

    /// The connection's facts: the client (an IPv4-mapped IPv6 address becomes the IPv4
    /// address, once, for every use: SPF, never_reject, internal_hosts, the header, the
    /// reports) and the MTA's host name (macro `j`), which names us when no authserv_id is
    /// configured.
    pub fn set_client(&mut self, ip: Option<IpAddr>, name: String, mta_host_name: Option<&str>) {
        self.client_ip = ip.map(|ip| ip.to_canonical());
        self.client_name = name;
        self.authserv_id = self.snap.config.authserv_id_for(mta_host_name);
    }

    /// "Continue", or no answer at all where the MTA was told not to wait for one.
    pub fn answer(&self, stage: indymilter::ProtoOpts) -> indymilter::Status {
        if self.opts.noreply.contains(stage) {
            indymilter::Status::Noreply
        } else {
            indymilter::Status::Continue
        }
    }

    fn header_limits(&self) -> HeaderLimits {
        HeaderLimits {
            max_bytes: self.snap.config.limits.max_header_size,
            max_fields: self.snap.config.limits.max_headers,
        }
    }

    pub fn mail(&mut self, args: &[Vec<u8>]) {
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
        self.msg = Some(MessageState::new(mail_from, size_hint));
    }

    /// A header field. Without a preceding MAIL (a misbehaving client) a message is started
    /// with an empty sender, so nothing is lost and nothing is trusted.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        let limits = self.header_limits();
        let leading_space = self.opts.leading_space;
        let msg = self
            .msg
            .get_or_insert_with(|| MessageState::new(String::new(), None));
        if matches!(msg.work, Work::Headers)
            && !msg.headers.push(name, value, leading_space, limits)
        {
            tracing::trace!("header section over the limit; field not kept");
        }
    }

    /// End of headers: decide, and start signing or buffering.
    pub fn eoh(&mut self, auth_user: Option<&str>, daemon_name: Option<&str>) -> EohAnswer {
        if self.msg.is_none() {
            return EohAnswer::Accept("no message in progress at end of headers".into());
        }
        let facts = ClientFacts {
            ip: self.client_ip,
            auth_user,
            daemon_name,
        };
        let decision = decide(&self.snap.config, &facts);
        self.start(decision, auth_user.is_some_and(|u| !u.is_empty()))
    }

    /// Act on a decision at end of headers. The command line tools call this directly to
    /// force signing or verification through the daemon's own code path.
    pub fn start(&mut self, decision: Decision, authenticated: bool) -> EohAnswer {
        let config = &self.snap.config;
        let Some(msg) = self.msg.as_mut() else {
            return EohAnswer::Accept("no message in progress at end of headers".into());
        };
        let label = match &decision {
            Decision::Sign(_) => "sign",
            Decision::Verify => "verify",
            Decision::Skip(_) => "skip",
        };
        crate::metrics::global().inc("mailseal_messages_total", &[("decision", label)]);
        let limits = &config.limits;
        let over = format!(
            "header section over the limit ({} bytes / {} fields)",
            limits.max_header_size, limits.max_headers
        );
        if msg.headers.overrun() {
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
            msg.work = Work::Done;
            let reply = oversize_reply(action, &format!("message refused: {why}"))
                .unwrap_or(Reply::Continue);
            return EohAnswer::Refuse(reply, format!("{label}: refused: {why}"));
        }
        // Whatever else happens, a forged Authentication-Results field under our name must
        // be deleted, so such a message is never accepted before its end.
        let forged = self
            .authserv_id
            .as_deref()
            .is_some_and(|id| has_forged(&msg.headers, id));
        let nothing_to_do = |msg: &mut MessageState, why: String| {
            if forged {
                msg.work = Work::Strip(why);
                EohAnswer::Continue
            } else {
                msg.work = Work::Done;
                EohAnswer::Accept(why)
            }
        };
        let complete = msg.headers.is_complete();
        match decision {
            Decision::Skip(reason) => nothing_to_do(msg, reason),
            Decision::Sign(why) if !complete => {
                match oversize_reply(limits.on_oversize, &format!("cannot sign: {over}")) {
                    None => nothing_to_do(msg, format!("outbound ({why}): not signed: {over}")),
                    Some(reply) => {
                        msg.work = Work::Done;
                        EohAnswer::Refuse(reply, format!("outbound ({why}): refused: {over}"))
                    }
                }
            }
            Decision::Sign(why) => {
                match sign::plan(
                    config,
                    &msg.headers,
                    &msg.mail_from,
                    self.opts.leading_space,
                ) {
                    SignPlan::NoKey { reason } => {
                        nothing_to_do(msg, format!("outbound ({why}): not signed: {reason}"))
                    }
                    SignPlan::Sign {
                        identity,
                        source,
                        signatures,
                    } => {
                        msg.work = Work::Sign {
                            why,
                            identity,
                            source,
                            signatures,
                        };
                        EohAnswer::Continue
                    }
                }
            }
            Decision::Verify if self.authserv_id.is_none() => {
                msg.work = Work::Done;
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
                msg.work = Work::Done;
                let reply = oversize_reply(limits.on_oversize, &format!("message refused: {over}"))
                    .unwrap_or(Reply::Continue);
                EohAnswer::Refuse(reply, format!("verify: refused: {over}"))
            }
            Decision::Verify => {
                let cap = limits.max_message_size;
                let hint = (msg.size_hint.unwrap_or(0) + msg.headers.bytes() + 2).min(cap);
                let mut buffer = crate::budget::Buffer::new(hint, limits.max_buffered_total);
                let not_kept = (!(buffer.extend(msg.headers.raw()) && buffer.extend(b"\r\n")))
                    .then(budget_exhausted);
                msg.work = Work::Verify {
                    buffer: not_kept.is_none().then_some(buffer),
                    not_kept,
                    authenticated,
                };
                EohAnswer::Continue
            }
        }
    }

    pub fn body(&mut self, chunk: &[u8]) {
        let cap = self.snap.config.limits.max_message_size;
        let Some(msg) = self.msg.as_mut() else { return };
        msg.body_bytes += chunk.len() as u64;
        match &mut msg.work {
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
                        *not_kept = Some(budget_exhausted());
                    }
                }
            }
            Work::Headers | Work::Strip(_) | Work::Done => {}
        }
    }

    /// End of message: finish signing or verify. The message state is consumed.
    pub async fn eom(&mut self) -> Option<Outcome> {
        let msg = self.msg.take()?;
        let config = &self.snap.config;
        // Forged results under our name go on every path, deletes first.
        let mut edits = Edits::default();
        let forged = self
            .authserv_id
            .as_deref()
            .map_or(0, |id| remove_forged(&msg.headers, id, &mut edits));
        let stripped = if forged > 0 {
            format!(" forged-ar-removed={forged}")
        } else {
            String::new()
        };
        match msg.work {
            Work::Done => None,
            // The MTA skipped end of headers: nothing was decided, so nothing may pass as
            // checked or signed.
            Work::Headers => {
                let reply = Reply::for_failure(
                    config.on_internal_error,
                    "4.7.1",
                    "mailseal: message incomplete; try again later",
                );
                Some(Outcome {
                    edits: if reply == Reply::Continue {
                        edits
                    } else {
                        Edits::default()
                    },
                    reply,
                    summary: format!("end of message without end of headers{stripped}"),
                    report: None,
                    failure: None,
                })
            }
            Work::Strip(why) => Some(Outcome {
                edits,
                reply: Reply::Continue,
                summary: format!("{why}{stripped}"),
                report: None,
                failure: None,
            }),
            Work::Sign {
                why,
                identity,
                source,
                signatures,
            } => {
                let mut signed = Vec::new();
                for sig in signatures {
                    match sign::finish(sig) {
                        Ok(f) => {
                            signed.push(format!("d={} s={}", f.domain, f.selector));
                            edits.inserts.push((0, "DKIM-Signature".into(), f.value));
                        }
                        Err(e) => {
                            let reply = Reply::for_failure(
                                config.signing.on_signing_error,
                                "4.7.1",
                                "DKIM signing failed; try again later",
                            );
                            let edits = if reply == Reply::Continue {
                                edits.inserts.clear();
                                edits
                            } else {
                                Edits::default()
                            };
                            return Some(Outcome {
                                edits,
                                reply,
                                summary: format!("outbound ({why}): signing failed: {e}{stripped}"),
                                report: None,
                                failure: None,
                            });
                        }
                    }
                }
                Some(Outcome {
                    edits,
                    reply: Reply::Continue,
                    summary: format!(
                        "outbound ({why}): signed {} for {identity} ({source}){stripped}",
                        signed.join(", ")
                    ),
                    report: None,
                    failure: None,
                })
            }
            Work::Verify {
                buffer,
                not_kept,
                authenticated,
            } => {
                let (Some(ip), Some(id)) = (self.client_ip, self.authserv_id.as_deref()) else {
                    let reply = Reply::for_failure(
                        config.on_internal_error,
                        "4.7.1",
                        "client address unknown; try again later",
                    );
                    return Some(Outcome {
                        edits: Edits::default(),
                        reply,
                        summary: "inbound: client IP unknown, not verified".into(),
                        report: None,
                        failure: None,
                    });
                };
                let env = Envelope {
                    client_ip: ip,
                    helo: &self.helo,
                    mail_from: &msg.mail_from,
                    authenticated,
                    authserv_id: id,
                    exact_headers: self.opts.leading_space,
                };
                let body = match (&buffer, &not_kept) {
                    (Some(b), _) => Body::Kept(b.as_slice()),
                    (None, why) => Body::NotKept(why.as_deref().unwrap_or("not kept")),
                };
                let mut o = verify::verify(config, &self.snap.auth, &env, &msg.headers, body).await;
                o.summary = format!("inbound from {ip}: {}", o.summary);
                if let Some(why) = &not_kept {
                    o.summary.push_str(&format!(" (body not kept: {why})"));
                }
                if msg.headers.dropped() > 0 {
                    o.summary.push_str(&format!(
                        " ({} header fields past the limit not kept)",
                        msg.headers.dropped()
                    ));
                }
                Some(o)
            }
        }
    }
}

fn budget_exhausted() -> String {
    tracing::warn!(
        in_use = crate::budget::in_use(),
        "buffer budget (max_buffered_total) exhausted: message verified without its body"
    );
    "no room in max_buffered_total".into()
}
