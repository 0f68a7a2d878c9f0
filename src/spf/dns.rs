//! SPF's DNS questions, asked through the daemon's one resolver (its cache, single flight,
//! timeouts and servers). Every answer is one of three things SPF tells apart: records, a void answer
//! (NXDOMAIN or no records of the type, §4.6.4) or a failure (timeout, SERVFAIL, ...).

use std::net::IpAddr;

use mail_auth::hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::dns::{Answered, Resolver};

/// One DNS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Records(Vec<T>),
    Void,
    Error(String),
}

/// The resolver, for SPF.
#[derive(Clone, Copy)]
pub struct Dns<'a>(pub &'a Resolver);

impl Dns<'_> {
    async fn query(&self, name: &str, rtype: RecordType) -> Answer<RData> {
        // Labels as they are: a domain-spec may hold any visible character (RFC 7208 §7.1);
        // a name the DNS cannot carry is never asked and has no records.
        match &*self.0.lookup(name, rtype).await {
            Answered::Records(v) if !v.is_empty() => Answer::Records(v.clone()),
            Answered::Records(_) | Answered::Void(_) => Answer::Void,
            Answered::Error(e) => Answer::Error(e.clone()),
        }
    }

    /// Start asking for a name's TXT records (an include or redirect target).
    pub fn prefetch_txt(&self, name: &str) {
        self.0.prefetch(name, RecordType::TXT);
    }

    /// Start asking for a name's addresses (an `a` or `exists` target, an MX exchange).
    pub fn prefetch_addresses(&self, name: &str, v4: bool) {
        let rtype = if v4 { RecordType::A } else { RecordType::AAAA };
        self.0.prefetch(name, rtype);
    }

    /// Start asking for a name's MX records.
    pub fn prefetch_mx(&self, name: &str) {
        self.0.prefetch(name, RecordType::MX);
    }

    /// TXT records, each one's character-strings joined (invalid UTF-8 replaced).
    pub async fn txt(&self, name: &str) -> Answer<String> {
        self.query(name, RecordType::TXT).await.map(|d| match d {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect(),
            ),
            _ => None,
        })
    }

    /// A records for an IPv4 client, AAAA for an IPv6 one; A records when `v4` says so.
    pub async fn addresses(&self, name: &str, v4: bool) -> Answer<IpAddr> {
        let rtype = if v4 { RecordType::A } else { RecordType::AAAA };
        self.query(name, rtype).await.map(|d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
    }

    /// MX exchanges, most preferred first.
    pub async fn mx(&self, name: &str) -> Answer<String> {
        let answer = self.query(name, RecordType::MX).await.map(|d| match d {
            RData::MX(mx) => Some((mx.preference, text(&mx.exchange))),
            _ => None,
        });
        match answer {
            Answer::Records(mut v) => {
                v.sort_by_key(|(p, _)| *p);
                Answer::Records(v.into_iter().map(|(_, n)| n).collect())
            }
            Answer::Void => Answer::Void,
            Answer::Error(e) => Answer::Error(e),
        }
    }

    /// PTR names for an address.
    pub async fn ptr(&self, ip: IpAddr) -> Answer<String> {
        let name = reverse_name(ip);
        self.query(&name, RecordType::PTR).await.map(|d| match d {
            RData::PTR(p) => Some(text(&p.0)),
            _ => None,
        })
    }
}

impl<T> Answer<T> {
    fn map<U>(self, f: impl FnMut(T) -> Option<U>) -> Answer<U> {
        match self {
            Answer::Records(v) => {
                let v: Vec<U> = v.into_iter().filter_map(f).collect();
                if v.is_empty() {
                    Answer::Void
                } else {
                    Answer::Records(v)
                }
            }
            Answer::Void => Answer::Void,
            Answer::Error(e) => Answer::Error(e),
        }
    }
}

/// A name's labels as they are, joined by dots (no escapes, no trailing dot).
fn text(name: &Name) -> String {
    name.iter()
        .map(|l| String::from_utf8_lossy(l))
        .collect::<Vec<_>>()
        .join(".")
}

/// `4.3.2.1.in-addr.arpa` / the nibble form under `ip6.arpa`.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                s.push(char::from_digit((b & 0xf).into(), 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit((b >> 4).into(), 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverse_names() {
        assert_eq!(
            super::reverse_name("192.0.2.3".parse().unwrap()),
            "3.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            super::reverse_name("2001:db8::cb01".parse().unwrap()),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
