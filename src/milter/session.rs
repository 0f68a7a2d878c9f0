//! Per-connection state: the configuration snapshot, what was negotiated, the connection's
//! facts and the message in progress ([`pipeline::message::Message`], where a message is
//! decided, signed, verified and finished).

use std::sync::Arc;

use crate::pipeline::context::Context;
use crate::pipeline::message::{ConnInfo, Message};

/// Options agreed with the MTA at negotiation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    pub leading_space: bool,
    pub quarantine: bool,
    /// Stages the MTA sends without waiting for an answer (SMFIP_NR_*).
    pub noreply: indymilter::ProtoOpts,
}

pub struct Session {
    pub ctx: Arc<Context>,
    _open: crate::metrics::ConnectionGuard,
    pub opts: Negotiated,
    pub conn: ConnInfo,
    pub msg: Option<Message>,
    /// How many envelope recipients the message in progress has.
    pub rcpts: usize,
    /// The message as received, when one of its recipients is an `[intake] address`.
    pub intake: Option<Capture>,
}

/// A message for the report intake, kept as it arrives (header fields, then the body),
/// charged to the daemon's buffer budget like a message being verified, up to `[intake]
/// max_message_size`: past either, only its size is counted.
#[derive(Debug)]
pub struct Capture {
    pub data: Option<crate::message::budget::Buffer>,
    pub size: usize,
    pub max: usize,
    /// The budget ran out before the message was complete.
    pub over_budget: bool,
    /// The recipients that are report addresses, as the MTA gave them.
    pub report_rcpts: Vec<String>,
}

impl Capture {
    pub fn new(ctx: &Context) -> Capture {
        Capture {
            data: Some(
                ctx.services
                    .budget
                    .buffer(0, ctx.config.limits.max_buffered_total),
            ),
            size: 0,
            max: ctx.config.intake.max_message_size,
            over_budget: false,
            report_rcpts: Vec::new(),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size > self.max {
            self.data = None;
        } else if let Some(b) = self.data.as_mut() {
            if !b.extend(bytes) {
                self.data = None;
                self.over_budget = true;
            }
        }
    }

    /// One header field as it was sent: `name:value` with the value as the MTA passes it
    /// (folded with LF, which becomes CRLF).
    pub fn header(&mut self, name: &[u8], value: &[u8], leading_space: bool) {
        let mut line = Vec::with_capacity(name.len() + value.len() + 4);
        line.extend_from_slice(name);
        line.push(b':');
        if !leading_space {
            line.push(b' ');
        }
        let mut prev = 0u8;
        for &b in value {
            if b == b'\n' && prev != b'\r' {
                line.push(b'\r');
            }
            line.push(b);
            prev = b;
        }
        line.extend_from_slice(b"\r\n");
        self.push(&line);
    }

    /// Why it was not kept whole, if it was not.
    pub fn not_kept(&self) -> Option<String> {
        if self.over_budget {
            Some(
                "the daemon's buffer budget ([limits] max_buffered_total) ran out while it arrived"
                    .into(),
            )
        } else if self.data.is_none() {
            Some(format!(
                "a mail of {} bytes, over max_message_size ({})",
                self.size, self.max
            ))
        } else {
            None
        }
    }
}

impl Session {
    pub fn new(ctx: Arc<Context>, opts: Negotiated) -> Self {
        let conn = ConnInfo::new(&ctx, None, String::new(), None, opts.leading_space);
        Session {
            _open: ctx.services.metrics.connection(),
            ctx,
            opts,
            conn,
            msg: None,
            rcpts: 0,
            intake: None,
        }
    }

    /// A new transaction: no recipients, nothing captured.
    pub fn new_transaction(&mut self) {
        self.rcpts = 0;
        self.intake = None;
    }

    /// "Continue", or no answer at all where the MTA was told not to wait for one.
    pub fn answer(&self, stage: indymilter::ProtoOpts) -> indymilter::Status {
        if self.opts.noreply.contains(stage) {
            indymilter::Status::Noreply
        } else {
            indymilter::Status::Continue
        }
    }
}
