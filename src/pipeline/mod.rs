//! What happens to a message: decided once ([`decide`]), then signed ([`sign`]) or verified
//! ([`verify`]). Nothing here knows the milter protocol; the result is [`Outcome`]: header
//! edits plus an SMTP answer.

pub mod context;
pub mod message;
pub mod policy;
pub mod sign;
pub mod verify;

use std::fmt;
use std::net::IpAddr;

use crate::config::{Config, FailAction};
use crate::headers::edits::Edits;

/// Why a message counts as outbound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    InternalHost(IpAddr),
    Authenticated(String),
    DaemonName(String),
}

impl fmt::Display for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outbound::InternalHost(ip) => write!(f, "internal host {ip}"),
            Outbound::Authenticated(u) => write!(f, "authenticated as {u}"),
            Outbound::DaemonName(d) => write!(f, "daemon {d}"),
        }
    }
}

/// The one decision per message, made at end of headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Sign(Outbound),
    Verify,
    Skip(String),
}

/// Facts about the SMTP client and sender that the decision depends on.
#[derive(Debug, Default, Clone)]
pub struct ClientFacts<'a> {
    pub ip: Option<IpAddr>,
    pub auth_user: Option<&'a str>,
    pub daemon_name: Option<&'a str>,
}

/// Is this message outbound?
pub fn outbound(config: &Config, facts: &ClientFacts<'_>) -> Option<Outbound> {
    let s = &config.signing;
    if let Some(ip) = facts.ip {
        if s.is_internal(ip) {
            return Some(Outbound::InternalHost(ip));
        }
    }
    if s.sign_authenticated {
        if let Some(user) = facts.auth_user.filter(|u| !u.is_empty()) {
            return Some(Outbound::Authenticated(user.to_string()));
        }
    }
    if let Some(d) = facts.daemon_name {
        if s.daemon_names.iter().any(|n| n == d) {
            return Some(Outbound::DaemonName(d.to_string()));
        }
    }
    None
}

pub fn decide(config: &Config, facts: &ClientFacts<'_>) -> Decision {
    match outbound(config, facts) {
        Some(why) if config.mode.signs() => Decision::Sign(why),
        Some(why) => Decision::Skip(format!("outbound ({why}) and signing is off (mode)")),
        None if config.mode.verifies() => Decision::Verify,
        None => Decision::Skip("inbound and verification is off (mode)".into()),
    }
}

/// The SMTP answer for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Continue,
    Tempfail {
        code: &'static str,
        status: &'static str,
        text: String,
    },
    Reject {
        code: &'static str,
        status: &'static str,
        text: String,
    },
}

impl Reply {
    /// The answer configured for a failure: tempfail (451 + status), accept, or reject (550 5.7.1).
    pub fn for_failure(action: FailAction, status: &'static str, text: impl Into<String>) -> Reply {
        match action {
            FailAction::Accept => Reply::Continue,
            FailAction::Tempfail => Reply::Tempfail {
                code: "451",
                status,
                text: text.into(),
            },
            FailAction::Reject => Reply::Reject {
                code: "550",
                status: "5.7.1",
                text: text.into(),
            },
        }
    }
}

/// The answer for a message over a size limit (`[limits] on_oversize`): 452 4.3.4 to try
/// again, 552 5.3.4 to refuse, or `None` to accept it as it is.
pub fn oversize_reply(action: FailAction, text: &str) -> Option<Reply> {
    match action {
        FailAction::Accept => None,
        FailAction::Tempfail => Some(Reply::Tempfail {
            code: "452",
            status: "4.3.4",
            text: text.to_string(),
        }),
        FailAction::Reject => Some(Reply::Reject {
            code: "552",
            status: "5.3.4",
            text: text.to_string(),
        }),
    }
}

/// Everything the milter layer has to do at end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub edits: Edits,
    pub reply: Reply,
    /// One line summary for the log.
    pub summary: String,
    /// What this message adds to DMARC aggregate reports, if anything.
    pub report: Option<Box<crate::report::Evaluation>>,
    /// A DMARC failure report to send, if one is due.
    pub failure: Option<Box<crate::report::failure::Failure>>,
}

impl Outcome {
    /// An outcome that adds nothing to reports.
    pub fn new(edits: Edits, reply: Reply, summary: String) -> Outcome {
        Outcome {
            edits,
            reply,
            summary,
            report: None,
            failure: None,
        }
    }

    /// The edits were applied (or the message refused): only now does the message count for
    /// reports, with the disposition actually applied. A message tempfailed here comes back
    /// and is counted then.
    pub fn applied(&mut self, ctx: &context::Context) {
        if matches!(self.reply, Reply::Tempfail { .. }) {
            return;
        }
        if let (Some(recorder), Some(e)) = (&ctx.reports, self.report.take()) {
            recorder.record(*e);
        }
        if let (Some(sender), Some(f)) = (&ctx.failures, self.failure.take()) {
            sender.send(*f);
        }
    }

    /// The hold asked for cannot be applied (the MTA does not offer it): it is dropped, and
    /// the reports say what really happened.
    pub fn not_held(&mut self, why: &str) {
        self.edits.unhold();
        if let Some(e) = self
            .report
            .as_mut()
            .filter(|e| e.disposition == "quarantine")
        {
            e.disposition = "none".into();
            e.reasons.push(crate::report::Reason {
                kind: "local_policy".into(),
                comment: Some(why.into()),
            });
        }
        if let Some(f) = self.failure.as_mut() {
            f.delivery = "delivered";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra: &str) -> Config {
        Config::from_toml(Path::new("/x/m.toml"), extra).unwrap()
    }

    #[test]
    fn outbound_rules() {
        let c =
            cfg("[signing]\ninternal_hosts = [\"10.0.0.0/8\"]\ndaemon_names = [\"ORIGINATING\"]\n");
        let ext: IpAddr = "192.0.2.7".parse().unwrap();
        let int: IpAddr = "10.9.9.9".parse().unwrap();
        let f = |ip, auth, d| ClientFacts {
            ip: Some(ip),
            auth_user: auth,
            daemon_name: d,
        };
        assert_eq!(
            decide(&c, &f(int, None, None)),
            Decision::Sign(Outbound::InternalHost(int))
        );
        assert_eq!(decide(&c, &f(ext, None, None)), Decision::Verify);
        assert_eq!(
            decide(&c, &f(ext, Some("bob"), None)),
            Decision::Sign(Outbound::Authenticated("bob".into()))
        );
        assert_eq!(decide(&c, &f(ext, Some(""), None)), Decision::Verify);
        assert_eq!(
            decide(&c, &f(ext, None, Some("ORIGINATING"))),
            Decision::Sign(Outbound::DaemonName("ORIGINATING".into()))
        );
        assert_eq!(decide(&c, &f(ext, None, Some("smtpd"))), Decision::Verify);
        let v_only = cfg("mode = \"v\"\n");
        assert!(matches!(
            decide(&v_only, &f("127.0.0.1".parse().unwrap(), None, None)),
            Decision::Skip(_)
        ));
    }
}
