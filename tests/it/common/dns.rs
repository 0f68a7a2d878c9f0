//! A real DNS server on 127.0.0.1 (hickory-server, UDP and TCP) serving test zones from a map,
//! with names that time out or answer SERVFAIL on purpose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

/// What a name answers.
#[derive(Clone, Debug)]
pub enum Rr {
    Txt(String),
    /// One TXT record made of these character-strings.
    TxtParts(Vec<String>),
    Cname(String),
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Mx(u16, String),
    Ptr(String),
    /// A name server of the zone at this name.
    Ns(String),
    /// Never answer a query of any type not listed before this marker at that name.
    Timeout,
    /// Answer SERVFAIL.
    ServFail,
    /// Over UDP, answer with the TC (truncated) bit and no records, so the client must retry
    /// over TCP, where the records listed at the name are served.
    TruncateUdp,
}

/// The records served, the delay before each answer and a count of the queries answered.
#[derive(Clone, Default)]
pub struct Zones {
    map: Arc<Mutex<HashMap<String, Vec<Rr>>>>,
    /// Every answer waits this long (a resolver's round trip, for the cold-cache benchmark).
    pub delay: Duration,
    queries: Arc<AtomicU64>,
    /// The questions received, in order ("name TYPE"; the first 100,000).
    asked: Arc<Mutex<Vec<String>>>,
}

impl Zones {
    pub fn clear(&self) {
        self.map.lock().unwrap().clear();
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The questions received so far, in order ("name TYPE", the name in lower case).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// How often `question` ("name TYPE") was asked.
    pub fn times_asked(&self, question: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|q| *q == question)
            .count()
    }

    pub fn add(&self, name: &str, rr: Rr) {
        self.map
            .lock()
            .unwrap()
            .entry(name.to_ascii_lowercase().trim_end_matches('.').to_string())
            .or_default()
            .push(rr);
    }

    pub fn txt(&self, name: &str, value: &str) {
        self.add(name, Rr::Txt(value.to_string()));
    }
}

/// A name of these labels, taken as they are.
fn dns_name(s: &str) -> Option<Name> {
    let mut n = Name::from_labels(s.trim_end_matches('.').split('.').map(str::as_bytes)).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn rtype(rr: &Rr) -> Option<RecordType> {
    Some(match rr {
        Rr::Txt(_) | Rr::TxtParts(_) => RecordType::TXT,
        Rr::Cname(_) => RecordType::CNAME,
        Rr::A(_) => RecordType::A,
        Rr::Aaaa(_) => RecordType::AAAA,
        Rr::Mx(..) => RecordType::MX,
        Rr::Ptr(_) => RecordType::PTR,
        Rr::Ns(_) => RecordType::NS,
        _ => return None,
    })
}

fn split_txt(s: &str) -> Vec<String> {
    if s.is_empty() {
        return vec![String::new()];
    }
    s.as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect()
}

fn rdata(rr: &Rr) -> Option<RData> {
    Some(match rr {
        Rr::Txt(t) => RData::TXT(TXT::new(split_txt(t))),
        Rr::TxtParts(p) => RData::TXT(TXT::new(p.clone())),
        Rr::Cname(n) => RData::CNAME(CNAME(dns_name(n)?)),
        Rr::A(ip) => RData::A(A(*ip)),
        Rr::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rr::Mx(p, ex) => RData::MX(MX::new(*p, dns_name(ex)?)),
        Rr::Ptr(n) => RData::PTR(PTR(dns_name(n)?)),
        Rr::Ns(n) => RData::NS(NS(dns_name(n)?)),
        _ => return None,
    })
}

#[async_trait::async_trait]
impl RequestHandler for Zones {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let fail = |code| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(info) = request.request_info() else {
            return fail(ResponseCode::FormErr);
        };
        // The name's labels as they are (SPF names may hold any visible character).
        let qname = info
            .query
            .name()
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".");
        let qtype = info.query.query_type();
        self.queries.fetch_add(1, Ordering::Relaxed);
        {
            let mut asked = self.asked.lock().unwrap();
            if asked.len() < 100_000 {
                asked.push(format!("{qname} {qtype}"));
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let entries = self.map.lock().unwrap().get(&qname).cloned();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut answers = Vec::new();
        match &entries {
            None => metadata.response_code = ResponseCode::NXDomain,
            Some(list) => {
                for rr in list {
                    match rr {
                        Rr::Timeout => {
                            if answers.is_empty() {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return fail(ResponseCode::ServFail);
                            }
                            break;
                        }
                        Rr::TruncateUdp
                            if request.protocol() == hickory_server::net::xfer::Protocol::Udp =>
                        {
                            let mut metadata = Metadata::response_from_request(&request.metadata);
                            metadata.truncation = true;
                            let builder = MessageResponseBuilder::from_message_request(request);
                            let msg = builder.build_no_records(metadata);
                            return response
                                .send_response(msg)
                                .await
                                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
                        }
                        Rr::ServFail => {
                            let builder = MessageResponseBuilder::from_message_request(request);
                            let msg = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                            return response
                                .send_response(msg)
                                .await
                                .unwrap_or_else(|_| fail(ResponseCode::ServFail));
                        }
                        Rr::Cname(target) if qtype != RecordType::CNAME => {
                            // Answer the alias and, one level deep, the target's records.
                            let name = Name::from(info.query.name().clone());
                            if let Some(data) = rdata(rr) {
                                answers.push(Record::from_rdata(name, 60, data));
                            }
                            let target_rrs = self
                                .map
                                .lock()
                                .unwrap()
                                .get(target)
                                .cloned()
                                .unwrap_or_default();
                            for t in target_rrs.iter().filter(|t| rtype(t) == Some(qtype)) {
                                if let (Some(data), Ok(tn)) = (rdata(t), dns_name(target).ok_or(()))
                                {
                                    answers.push(Record::from_rdata(tn, 60, data));
                                }
                            }
                        }
                        rr if rtype(rr) == Some(qtype) => {
                            if let Some(data) = rdata(rr) {
                                let name = Name::from(info.query.name().clone());
                                answers.push(Record::from_rdata(name, 60, data));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Negative answers carry the zone's SOA, as an authoritative server's do (resolvers
        // use it for negative caching).
        let soa = answers.is_empty().then(|| {
            let root = Name::root();
            let data = SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("hostmaster.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            );
            Record::from_rdata(root, 60, RData::SOA(data))
        });
        let builder = MessageResponseBuilder::from_message_request(request);
        let msg = builder.build(metadata, answers.iter(), [], soa.iter(), []);
        response
            .send_response(msg)
            .await
            .unwrap_or_else(|_| fail(ResponseCode::ServFail))
    }
}

/// The server; dropped with the test.
pub struct DnsServer {
    pub addr: SocketAddr,
    pub zones: Zones,
}

impl DnsServer {
    pub async fn start(zones: Zones) -> DnsServer {
        let (udp, tcp) = Self::sockets().await;
        Self::serve(zones, udp, tcp)
    }

    /// Serve on a fixed address (port 53 of a loopback address of its own, for programs that
    /// read /etc/resolv.conf).
    pub async fn start_on(zones: Zones, addr: SocketAddr) -> std::io::Result<DnsServer> {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        Ok(Self::serve(zones, udp, tcp))
    }

    fn serve(zones: Zones, udp: tokio::net::UdpSocket, tcp: tokio::net::TcpListener) -> DnsServer {
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(zones.clone());
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65535);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        DnsServer { addr, zones }
    }

    async fn sockets() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
        // UDP and TCP on the same port number: a free UDP port can be taken for TCP (by an
        // outgoing connection's ephemeral port, say), so try again with another one.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(_) if attempt < 50 => continue,
                Err(e) => panic!("no port free for both UDP and TCP: {e}"),
            }
        }
    }
}
