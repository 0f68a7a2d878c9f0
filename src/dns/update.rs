//! RFC 2136 dynamic updates signed with TSIG (RFC 8945, hmac-sha256/384/512), for key
//! rotation to publish and revoke DKIM records on the zone's primary server (knot, BIND and
//! PowerDNS accept them). One message per change, over TCP; the server's answer code decides.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mail_auth::hickory_resolver::proto::op::update_message::UpdateMessage;
use mail_auth::hickory_resolver::proto::op::{Message, OpCode, Query, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::tsig::{
    make_tsig_record, message_tbs, TsigAlgorithm, TSIG,
};
use mail_auth::hickory_resolver::proto::rr::rdata::TXT;
use mail_auth::hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TSIG key: its name, algorithm and secret. `Debug` never shows the secret.
pub struct TsigKey {
    name: Name,
    algorithm: TsigAlgorithm,
    hmac: aws_lc_rs::hmac::Algorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TsigKey({} {:?})", self.name, self.algorithm)
    }
}

impl TsigKey {
    /// Read a key file as BIND (`key "name" { algorithm hmac-sha256; secret "…"; };`, what
    /// `tsig-keygen` prints) or knot (`key:` / `- id: name` / `algorithm:` / `secret:`, what
    /// `keymgr -t` prints) write it, from a file as private as a key file. Errors never show
    /// the secret.
    pub fn read(path: &Path) -> Result<TsigKey, String> {
        crate::config::keys::check_safe(path).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = |what: &str| format!("{}: {what}", path.display());
        let mut name = None;
        let mut algorithm = None;
        let mut secret = None;
        for raw in text.split(['\n', ';', '{', '}']) {
            let line = raw.trim().trim_start_matches("- ").trim();
            let (k, v) = match line.split_once([':', ' ', '\t']) {
                Some((k, v)) => (k.trim(), v.trim().trim_matches('"').trim()),
                None => continue,
            };
            match k {
                "key" if !v.is_empty() => name = Some(v.to_string()),
                "id" => name = Some(v.to_string()),
                "algorithm" => algorithm = Some(v.to_ascii_lowercase()),
                "secret" => secret = Some(v.to_string()),
                _ => {}
            }
        }
        let name = name.ok_or_else(|| bad("no key name"))?;
        let (algorithm, hmac) = match algorithm.as_deref() {
            Some("hmac-sha256") => (TsigAlgorithm::HmacSha256, aws_lc_rs::hmac::HMAC_SHA256),
            Some("hmac-sha384") => (TsigAlgorithm::HmacSha384, aws_lc_rs::hmac::HMAC_SHA384),
            Some("hmac-sha512") => (TsigAlgorithm::HmacSha512, aws_lc_rs::hmac::HMAC_SHA512),
            Some(other) => return Err(bad(&format!("algorithm {other} (use hmac-sha256)"))),
            None => return Err(bad("no algorithm")),
        };
        use base64::Engine;
        let secret = secret
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| bad("no base64 secret"))?;
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|_| bad("the key name is not a DNS name"))?;
        Ok(TsigKey {
            name,
            algorithm,
            hmac,
            secret,
        })
    }
}

/// What to do to the TXT records at a name.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace them with this one record (its text split into 255-byte strings).
    Set(String),
    /// Delete them.
    Delete,
}

/// Send one update for `name` in `zone` to `server`, signed with `key`.
pub async fn update(
    server: SocketAddr,
    key: &TsigKey,
    zone: &str,
    name: &str,
    change: &Change,
    timeout: Duration,
) -> Result<(), String> {
    let fqdn = |s: &str| {
        Name::from_ascii(format!("{}.", s.trim_end_matches('.')))
            .map_err(|_| format!("{s:?} is not a DNS name"))
    };
    let zone = fqdn(zone)?;
    let owner = fqdn(name)?;
    let mut msg = Message::query();
    msg.metadata.op_code = OpCode::Update;
    msg.metadata.recursion_desired = false;
    let mut q = Query::new();
    q.set_name(zone)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    msg.add_zone(q);
    // Delete the TXT RRset (class ANY, TTL 0, no data), then add the new record.
    let mut delete = Record::update0(owner.clone(), 0, RecordType::TXT).into_record_of_rdata();
    delete.dns_class = DNSClass::ANY;
    msg.add_update(delete);
    if let Change::Set(text) = change {
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        msg.add_update(Record::from_rdata(
            owner,
            300,
            RData::TXT(TXT::new(strings)),
        ));
    }
    let now = crate::report::now().max(0) as u64;
    let pre = TSIG::new(
        key.algorithm.clone(),
        now,
        300,
        Vec::new(),
        msg.metadata.id,
        None,
        Vec::new(),
    );
    let tbs = message_tbs(&msg, &pre, &key.name).map_err(|e| e.to_string())?;
    let mac = aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(key.hmac, &key.secret), &tbs);
    msg.set_signature(Box::new(make_tsig_record(
        key.name.clone(),
        pre.set_mac(mac.as_ref().to_vec()),
    )));
    let wire = msg.to_vec().map_err(|e| e.to_string())?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        stream.write_all(&(wire.len() as u16).to_be_bytes()).await?;
        stream.write_all(&wire).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{server}: no answer in {timeout:?}"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let parsed = Message::from_vec(&answer).map_err(|e| format!("{server}: {e}"))?;
    if parsed.metadata.id != msg.metadata.id {
        return Err(format!("{server}: the answer is not to our update"));
    }
    match parsed.metadata.response_code {
        // Success only when the answer carries the key's MAC over it and our request's MAC
        // (RFC 8945 §5.3): anyone on the path can forge a NOERROR.
        ResponseCode::NoError => verify_answer(key, &answer, mac.as_ref(), now)
            .map_err(|e| format!("{server}: the answer's TSIG: {e}")),
        code => Err(format!("{server} refused the update: {code}")),
    }
}

/// Check the TSIG of an answer to a request signed with `request_mac` (RFC 8945 §5.3):
/// the key's name and algorithm, the MAC, and the time within the fudge.
fn verify_answer(key: &TsigKey, answer: &[u8], request_mac: &[u8], now: u64) -> Result<(), String> {
    use mail_auth::hickory_resolver::proto::rr::rdata::tsig::signed_bitmessage_to_buf;
    let (tbs, record) = signed_bitmessage_to_buf(answer, Some(request_mac), true)
        .map_err(|e| format!("missing or malformed ({e})"))?;
    let tsig = &record.data;
    if record.name != key.name || tsig.algorithm != key.algorithm {
        return Err(format!("signed with another key ({})", record.name));
    }
    if let Some(error) = tsig.error {
        return Err(format!("error {error:?}"));
    }
    aws_lc_rs::hmac::verify(
        &aws_lc_rs::hmac::Key::new(key.hmac, &key.secret),
        &tbs,
        &tsig.mac,
    )
    .map_err(|_| "the MAC does not verify with the key".to_string())?;
    if tsig.time.abs_diff(now) > u64::from(tsig.fudge) {
        return Err(format!(
            "signed {} s from now, beyond its fudge",
            tsig.time.abs_diff(now)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers every update NOERROR, as a forger on the path would: the
    /// answer is unsigned, or signed with another secret. Neither is taken for success.
    #[tokio::test]
    async fn an_answer_not_signed_with_the_key_is_refused() {
        let key = |secret: &[u8]| TsigKey {
            name: Name::from_ascii("upd.example.").unwrap(),
            algorithm: TsigAlgorithm::HmacSha256,
            hmac: aws_lc_rs::hmac::HMAC_SHA256,
            secret: secret.to_vec(),
        };
        for forged_with in [None, Some(b"other".to_vec())] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = listener.local_addr().unwrap();
            let forger = forged_with.clone();
            tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut len = [0u8; 2];
                s.read_exact(&mut len).await.unwrap();
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut q).await.unwrap();
                let q = Message::from_vec(&q).unwrap();
                let mut a = Message::response(q.metadata.id, OpCode::Update);
                a.metadata.response_code = ResponseCode::NoError;
                if let Some(secret) = forger {
                    let k = key(&secret);
                    let pre = TSIG::new(
                        k.algorithm.clone(),
                        crate::report::now() as u64,
                        300,
                        Vec::new(),
                        a.metadata.id,
                        None,
                        Vec::new(),
                    );
                    let tbs = message_tbs(&a, &pre, &k.name).unwrap();
                    let mac =
                        aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(k.hmac, &k.secret), &tbs);
                    a.set_signature(Box::new(make_tsig_record(
                        k.name.clone(),
                        pre.set_mac(mac.as_ref().to_vec()),
                    )));
                }
                let wire = a.to_vec().unwrap();
                s.write_all(&(wire.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                s.write_all(&wire).await.unwrap();
            });
            let err = update(
                server,
                &key(b"secret"),
                "example.com",
                "s._domainkey.example.com",
                &Change::Delete,
                Duration::from_secs(5),
            )
            .await
            .expect_err("a forged answer is not success");
            assert!(err.contains("TSIG"), "{err}");
        }
    }

    #[test]
    fn reads_bind_and_knot_key_files() {
        let dir = std::env::temp_dir().join(format!("mailseal-tsig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bind = dir.join("bind.key");
        std::fs::write(
            &bind,
            "key \"upd.example\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n",
        )
        .unwrap();
        let knot = dir.join("knot.key");
        std::fs::write(
            &knot,
            "# hmac-sha512:upd2:...\nkey:\n  - id: upd2\n    algorithm: hmac-sha512\n    secret: c2VjcmV0\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let private =
            |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // As private as a key file, or refused.
        assert!(TsigKey::read(&bind)
            .unwrap_err()
            .contains("accessible by others"));
        private(&bind);
        private(&knot);
        let k = TsigKey::read(&bind).unwrap();
        assert_eq!(
            (k.name.to_string().as_str(), k.secret.as_slice()),
            ("upd.example.", &b"secret"[..])
        );
        let k = TsigKey::read(&knot).unwrap();
        assert_eq!(k.name.to_string(), "upd2.");
        assert!(matches!(k.algorithm, TsigAlgorithm::HmacSha512));
        // The secret never shows.
        assert!(!format!("{k:?}").contains("c2VjcmV0"));
        std::fs::write(
            &knot,
            "key:\n  - id: x\n    algorithm: hmac-md5\n    secret: c2VjcmV0\n",
        )
        .unwrap();
        assert!(TsigKey::read(&knot).unwrap_err().contains("hmac-md5"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
