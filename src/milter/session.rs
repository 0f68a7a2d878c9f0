//! Per-connection and per-message state, and what each milter stage does with it.
//! Connection facts (client, HELO, configuration snapshot) live as long as the SMTP session;
//! message state is created at MAIL FROM and dropped at end of message or abort.

use std::net::IpAddr;
use std::sync::Arc;

use crate::headers::actions::Edits;
use crate::message::{envelope_address, HeaderBlock, HeaderLimits};
use crate::pipeline::sign::{self, PendingSignature, SignPlan};
use crate::pipeline::verify::{self, Envelope};
use crate::pipeline::{decide, ClientFacts, Decision, Outbound, Outcome, Reply};
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
    pub client_ip: Option<IpAddr>,
    pub client_name: String,
    pub helo: String,
    pub msg: Option<MessageState>,
}

pub struct MessageState {
    _in_flight: crate::budget::InFlight,
    pub mail_from: String,
    /// ESMTP SIZE= from MAIL FROM, a hint for buffer sizing.
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
        /// The whole message; `None` once it grew past the size cap.
        buffer: Option<crate::budget::Buffer>,
        authenticated: bool,
    },
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

impl Session {
    pub fn new(snap: Arc<Snapshot>, opts: Negotiated) -> Self {
        Session {
            snap,
            _open: crate::metrics::global().connection(),
            opts,
            client_ip: None,
            client_name: String::new(),
            helo: String::new(),
            msg: None,
        }
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
        self.msg = Some(MessageState {
            _in_flight: crate::budget::InFlight::new(),
            mail_from,
            size_hint,
            headers: HeaderBlock::default(),
            work: Work::Headers,
            body_bytes: 0,
        });
    }

    /// A header field. Without a preceding MAIL (a misbehaving client) a message is started
    /// with an empty sender, so nothing is lost and nothing is trusted.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        let limits = self.header_limits();
        let leading_space = self.opts.leading_space;
        let msg = self.msg.get_or_insert_with(|| MessageState {
            _in_flight: crate::budget::InFlight::new(),
            mail_from: String::new(),
            size_hint: None,
            headers: HeaderBlock::default(),
            work: Work::Headers,
            body_bytes: 0,
        });
        if matches!(msg.work, Work::Headers)
            && !msg.headers.push(name, value, leading_space, limits)
        {
            tracing::debug!("header section over the limit; further fields not kept");
        }
    }

    /// End of headers: decide, and start signing or buffering.
    pub fn eoh(&mut self, auth_user: Option<&str>, daemon_name: Option<&str>) -> EohAnswer {
        let config = &self.snap.config;
        if self.msg.is_none() {
            return EohAnswer::Accept("no message in progress at end of headers".into());
        }
        let facts = ClientFacts {
            ip: self.client_ip,
            auth_user,
            daemon_name,
        };
        let decision = decide(config, &facts);
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
        if msg.headers.truncated {
            let why = format!(
                "header section over the limit ({} bytes / {} fields)",
                config.limits.max_header_size, config.limits.max_headers
            );
            msg.work = Work::Done;
            return match decision {
                Decision::Verify => {
                    let o = verify::oversize(config, &msg.headers);
                    // Edits cannot be made before end of message; keep going if accepting.
                    if matches!(o.reply, Reply::Continue) {
                        msg.work = Work::Verify {
                            buffer: None,
                            authenticated,
                        };
                        EohAnswer::Continue
                    } else {
                        EohAnswer::Refuse(o.reply, format!("verify: {why}"))
                    }
                }
                Decision::Sign(w) => {
                    match crate::pipeline::oversize_reply(
                        config.limits.on_oversize,
                        &format!("cannot sign: {why}"),
                    ) {
                        None => EohAnswer::Accept(format!("outbound ({w}): not signed: {why}")),
                        Some(reply) => {
                            EohAnswer::Refuse(reply, format!("outbound ({w}): refused: {why}"))
                        }
                    }
                }
                Decision::Skip(r) => EohAnswer::Accept(r),
            };
        }
        match decision {
            Decision::Skip(reason) => {
                msg.work = Work::Done;
                EohAnswer::Accept(reason)
            }
            Decision::Sign(why) => match sign::plan(config, &msg.headers, &msg.mail_from) {
                SignPlan::NoKey { reason } => {
                    msg.work = Work::Done;
                    EohAnswer::Accept(format!("outbound ({why}): not signed: {reason}"))
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
            },
            Decision::Verify => {
                let cap = config.limits.max_message_size;
                let want = (msg.size_hint.unwrap_or(0) + msg.headers.bytes() + 2).min(cap);
                let buffer = crate::budget::Buffer::new(want, config.limits.max_buffered_total)
                    .and_then(|mut b| {
                        (b.extend(msg.headers.raw()) && b.extend(b"\r\n")).then_some(b)
                    });
                if buffer.is_none() {
                    tracing::warn!(
                        in_use = crate::budget::in_use(),
                        "buffer budget (max_buffered_total) exhausted: message handled as oversize"
                    );
                }
                msg.work = Work::Verify {
                    buffer,
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
            Work::Verify { buffer, .. } => {
                if let Some(buf) = buffer {
                    if buf.len() + chunk.len() > cap || !buf.extend(chunk) {
                        *buffer = None;
                    }
                }
            }
            Work::Headers | Work::Done => {}
        }
    }

    /// End of message: finish signing or verify. The message state is consumed.
    pub async fn eom(&mut self) -> Option<Outcome> {
        let msg = self.msg.take()?;
        let config = &self.snap.config;
        match msg.work {
            Work::Headers | Work::Done => None,
            Work::Sign {
                why,
                identity,
                source,
                signatures,
            } => {
                let mut edits = Edits::default();
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
                            return Some(Outcome {
                                edits: Edits::default(),
                                reply,
                                summary: format!("outbound ({why}): signing failed: {e}"),
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
                        "outbound ({why}): signed {} for {identity} ({source})",
                        signed.join(", ")
                    ),
                    report: None,
                    failure: None,
                })
            }
            Work::Verify {
                buffer,
                authenticated,
            } => {
                let Some(ip) = self.client_ip else {
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
                let Some(raw) = buffer else {
                    return Some(verify::oversize(config, &msg.headers));
                };
                let env = Envelope {
                    client_ip: ip,
                    helo: &self.helo,
                    mail_from: &msg.mail_from,
                    authenticated,
                };
                let mut o =
                    verify::verify(config, &self.snap.auth, &env, &msg.headers, raw.as_slice())
                        .await;
                o.summary = format!("inbound from {ip}: {}", o.summary);
                if let (Some(recorder), Some(e)) = (&self.snap.reports, o.report.take()) {
                    recorder.record(*e);
                }
                if let (Some(sender), Some(f)) = (&self.snap.failures, o.failure.take()) {
                    sender.send(*f);
                }
                Some(o)
            }
        }
    }
}
