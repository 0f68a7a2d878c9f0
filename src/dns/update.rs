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
    let answer = Message::from_vec(&answer).map_err(|e| format!("{server}: {e}"))?;
    match answer.metadata.response_code {
        ResponseCode::NoError => Ok(()),
        code => Err(format!("{server} refused the update: {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
