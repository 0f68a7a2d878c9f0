//! mailseal: one milter for DKIM signing and SPF/DKIM/DMARC/ARC verification.
//!
//! `ARCHITECTURE.md` is the map. In short: `main` parses the command line ([`cli`]) and runs
//! the daemon ([`daemon::serve`], which serves the milter protocol with
//! [`daemon::server::run`]) or a tool ([`tools`]). A message's life is
//! [`pipeline::message::Message`]: decided ([`pipeline::decide`]), signed
//! ([`pipeline::sign`]) or verified ([`pipeline::verify`] → [`results::AuthResults`] →
//! [`pipeline::policy`]), edited ([`headers::edits`]) and recorded ([`report`]).
//!
//! # Logging policy
//! - `info`: one line per message (queue id, decision, what was signed or the verification
//!   summary, the SMTP answer), plus start, reload and stop.
//! - `warn`: a message answered with something other than accept because of a fault on our
//!   side or the client's (key error, DNS failure, oversize, protocol misuse); reload failures.
//! - `error`: the daemon cannot do its job (cannot bind, resolver cannot be built).
//! - `debug`/`trace`: per-callback detail, never on by default.
//!
//! Never logged at any level: private key bytes, message bodies. Header values appear only at
//! `trace`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod dns;
pub mod headers;
pub mod intake;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod report;
pub mod results;
pub mod rotation;
pub mod spf;
pub mod tls;
pub mod tools;
