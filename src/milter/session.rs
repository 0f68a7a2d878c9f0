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
}
