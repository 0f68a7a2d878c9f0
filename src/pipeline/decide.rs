//! Sign, verify or leave alone: the one decision per message, made at end of headers from
//! what the MTA told us about the client.

use std::fmt;
use std::net::IpAddr;

use crate::config::Config;

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
