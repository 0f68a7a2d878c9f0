//! `mailseal keygen`: a new signing key, its DNS record, and the table lines to add.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use base64::Engine;

use crate::config::keys::{parse_private_key, KeyKind};
use crate::config::tables::valid_dns_label_seq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

/// What keygen wrote.
#[derive(Debug)]
pub struct Generated {
    pub private: PathBuf,
    pub record_file: PathBuf,
    /// `v=DKIM1; k=...; p=...`
    pub record: String,
    /// Text for the admin: files written, the DNS record, the table lines.
    pub report: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A zone-file TXT record with the value split into quoted strings of at most 255 bytes.
pub fn zone_record(name: &str, value: &str) -> String {
    let parts: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name}\tIN\tTXT\t( {} )\n", parts.join("\n\t\t\t  "))
}

/// Why no key was generated.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{0:?} is not a valid domain name")]
    Domain(String),
    #[error("{0:?} is not a valid selector")]
    Selector(String),
    #[error("--bits {0}: use 2048, 3072, 4096 or 8192")]
    Bits(u32),
    #[error("{0} key generation failed")]
    Generate(&'static str),
    #[error(transparent)]
    Key(#[from] crate::config::keys::KeyProblem),
    #[error("{} already exists; not overwriting a key (choose another selector)", .0.display())]
    Exists(std::path::PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Generate a key for `selector._domainkey.domain` into `out`. Never overwrites a key.
pub fn keygen(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    bits: u32,
    out: &Path,
) -> Result<Generated, KeygenError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !valid_dns_label_seq(&domain) {
        return Err(KeygenError::Domain(domain));
    }
    if !valid_dns_label_seq(selector) {
        return Err(KeygenError::Selector(selector.to_string()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeygenError::Io { path, source }
    };
    let der = match algorithm {
        Algorithm::Rsa => {
            let size = match bits {
                2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                8192 => aws_lc_rs::rsa::KeySize::Rsa8192,
                b => return Err(KeygenError::Bits(b)),
            };
            let failed = |_| KeygenError::Generate("RSA");
            let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
        Algorithm::Ed25519 => {
            let failed = |_| KeygenError::Generate("Ed25519");
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(failed)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
    };
    let pem = pem("PRIVATE KEY", &der);
    // The same loader the daemon uses: what keygen writes, mailseal can sign with.
    let key = parse_private_key(pem.as_bytes())?;
    let k = match key.kind {
        KeyKind::Rsa { .. } => "rsa",
        KeyKind::Ed25519 => "ed25519",
    };
    let record = format!(
        "v=DKIM1; k={k}; p={}",
        base64::engine::general_purpose::STANDARD.encode(&key.public)
    );

    std::fs::create_dir_all(out).map_err(io(out))?;
    let private = out.join(format!("{selector}.private"));
    let record_file = out.join(format!("{selector}.txt"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeygenError::Exists(private.clone()),
            _ => io(&private)(e),
        })?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&private))?;
    // Made by root in a directory of the service's group (the package's /etc/mailseal/keys,
    // 0750 root:mailseal): the key takes that group and mode 0640, so the service reads it
    // and no one else does.
    let mode = match group_readable(out) {
        Some(gid) => {
            std::os::unix::fs::fchown(&f, None, Some(gid))
                .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(0o640)))
                .map_err(io(&private))?;
            "0640"
        }
        None => "0600",
    };
    let zone = zone_record(&format!("{selector}._domainkey.{domain}."), &record);
    std::fs::write(&record_file, &zone).map_err(io(&record_file))?;

    let keyname = format!("{selector}._domainkey.{domain}");
    let abs = std::fs::canonicalize(&private).unwrap_or_else(|_| private.clone());
    let report = format!(
        "Wrote {} ({}, mode {mode}) and {}.\n\n\
         Publish this DNS record:\n{zone}\n\
         Add to the KeyTable:\n{keyname}\t{domain}:{selector}:{}\n\n\
         Add to the SigningTable:\n*@{domain}\t{keyname}\n\n\
         Then check it with: mailseal testkey -c /etc/mailseal/mailseal.toml\n",
        private.display(),
        key.kind,
        record_file.display(),
        abs.display(),
    );
    Ok(Generated {
        private,
        record_file,
        record,
        report,
    })
}

/// The group of `dir`, when root writes a key there and the directory belongs to another
/// group that may read but not write it (the service's).
fn group_readable(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let meta = std::fs::metadata(dir).ok()?;
    (meta.gid() != 0 && meta.mode() & 0o070 == 0o050).then_some(meta.gid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_strings_are_split() {
        let v = "x".repeat(600);
        let z = zone_record("s._domainkey.example.com.", &v);
        let parts: Vec<&str> = z.split('"').skip(1).step_by(2).collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
    }
}
