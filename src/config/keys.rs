//! Private key files: safety checks, type detection, loading.
//!
//! Nothing in this module ever formats key bytes: errors say what is wrong with a file, never
//! what is in it, and `LoadedKey`'s `Debug` prints only the algorithm and size.

use std::fmt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use mail_auth::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::headers::Writable;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

/// Largest key file we read; a 16384-bit RSA PEM is about 12 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// RFC 8301 makes 1024 bits the floor for verifiers (and so for what is worth signing with).
const MIN_RSA_BITS: usize = 1024;
/// RFC 8301 asks signers for at least 2048 bits; AWS-LC signs from there to 8192 bits. Keys
/// below it are signed with the `rsa` crate and warned about.
pub const RECOMMENDED_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

impl KeyKind {
    /// A key RFC 8301 still accepts but asks signers to replace (RSA under 2048 bits).
    pub fn is_weak(self) -> bool {
        matches!(self, KeyKind::Rsa { bits } if bits < RECOMMENDED_RSA_BITS)
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "rsa-{bits}"),
            KeyKind::Ed25519 => write!(f, "ed25519"),
        }
    }
}

/// The key that makes signatures: AWS-LC's (2048 to 8192-bit RSA, Ed25519), or the `rsa`
/// crate's for RSA keys RFC 8301 still allows but AWS-LC refuses (1024 to 2047 bits).
enum Signer {
    AwsLc(DkimKey),
    LegacyRsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

/// A private key shared by every signer built from it (one per message).
#[derive(Clone)]
pub struct SharedKey(Arc<Signer>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match &*self.0 {
            Signer::AwsLc(key) => key.sign(input),
            Signer::LegacyRsa(key) => {
                use rsa::signature::{SignatureEncoding, Signer};
                let mut data = Vec::new();
                input.write(&mut data);
                key.try_sign(&data).map(|sig| sig.to_vec()).map_err(|e| {
                    mail_auth::Error::Crypto(mail_auth::crypto::CryptoError::Library(e.to_string()))
                })
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match &*self.0 {
            Signer::AwsLc(key) => key.algorithm(),
            Signer::LegacyRsa(_) => Algorithm::RsaSha256,
        }
    }
}

pub struct LoadedKey {
    pub kind: KeyKind,
    pub signing: SharedKey,
    /// The public key as published in `p=`: SPKI DER for RSA, the raw 32 bytes for Ed25519.
    pub public: Vec<u8>,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedKey({})", self.kind)
    }
}

/// Why a key file was refused. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error(
        "{path} is accessible by others or writable by its group (mode {mode:04o}); a private \
         key must be readable only by its owner, or also by a group mailseal runs as: chmod \
         600 {path}"
    )]
    Unsafe { path: String, mode: u32 },
    #[error(
        "{path} is readable by group {gid}, which mailseal does not run as (mode {mode:04o}); \
         chmod 600 {path}, or run mailseal with that group (systemd SupplementaryGroups=)"
    )]
    ForeignGroup { path: String, mode: u32, gid: u32 },
    #[error("{path} is larger than {MAX_KEY_FILE} bytes; it is not a private key")]
    TooLarge { path: String },
    #[error("{path}: {source}")]
    Invalid { path: String, source: KeyProblem },
}

/// What is wrong with a key's contents. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("no PEM private key found (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY)")]
    NoPem,
    #[error("PKCS#8 key is neither RSA nor Ed25519 (or is malformed)")]
    NotRsaOrEd25519,
    #[error("malformed RSA private key")]
    MalformedRsa,
    #[error("unsupported key type (only RSA and Ed25519 can sign DKIM)")]
    Unsupported,
    #[error(
        "RSA key has {0} bits; RFC 8301 forbids signing with fewer than {MIN_RSA_BITS} (and \
         asks for {RECOMMENDED_RSA_BITS})"
    )]
    Weak(usize),
    #[error("cannot encode the RSA public key")]
    PublicKey,
    #[error("{kind} key rejected: {reason}")]
    Rejected { kind: &'static str, reason: String },
}

/// Is `gid` this process's group, primary or supplementary?
fn runs_as_group(gid: u32) -> bool {
    // SAFETY: getegid and getgroups only read the process's credentials; the buffer is sized
    // by the first call.
    unsafe {
        if libc::getegid() == gid {
            return true;
        }
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n <= 0 {
            return false;
        }
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        n > 0 && groups[..n as usize].contains(&gid)
    }
}

/// Check a file that holds a secret (a private key, a TSIG key) as OpenDKIM's RequireSafeKeys does: a regular file,
/// no access for others, no group write; group read only for a group this process runs as
/// (primary or supplementary); not larger than any key.
pub fn check_safe(path: &Path) -> Result<std::fs::Metadata, KeyError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: shown.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile { path: shown });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(KeyError::Unsafe { path: shown, mode });
    }
    if mode & 0o040 != 0 && !runs_as_group(meta.gid()) {
        return Err(KeyError::ForeignGroup {
            path: shown,
            mode,
            gid: meta.gid(),
        });
    }
    Ok(meta)
}

/// Read, check and parse one private key file.
pub fn load_key(path: &Path) -> Result<LoadedKey, KeyError> {
    let meta = check_safe(path)?;
    let shown = path.display().to_string();
    if meta.size() > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: shown });
    }
    let pem = std::fs::read(path).map_err(|source| KeyError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_private_key(&pem).map_err(|source| KeyError::Invalid {
        path: shown,
        source,
    })
}

/// Parse a key written in a KeyTable row (DER, PKCS#8 or PKCS#1). The table then holds a
/// secret, so it must pass the same safety check as a key file.
pub fn load_inline_key(table: &Path, der: &[u8]) -> Result<LoadedKey, KeyError> {
    check_safe(table)?;
    let invalid = |source| KeyError::Invalid {
        path: format!("{} (key in the row)", table.display()),
        source,
    };
    let pkcs8 = PrivateKeyDer::Pkcs8(der.to_vec().into());
    match parse_private_key_der(&pkcs8) {
        Err(KeyProblem::NotRsaOrEd25519) => {
            parse_private_key_der(&PrivateKeyDer::Pkcs1(der.to_vec().into())).map_err(invalid)
        }
        other => other.map_err(invalid),
    }
}

/// Detect the key type from the PEM: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8
/// (`BEGIN PRIVATE KEY`), Ed25519 as PKCS#8.
pub fn parse_private_key(pem: &[u8]) -> Result<LoadedKey, KeyProblem> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyProblem::NoPem)?;
    parse_private_key_der(&der)
}

fn parse_private_key_der(der: &PrivateKeyDer<'_>) -> Result<LoadedKey, KeyProblem> {
    match der {
        PrivateKeyDer::Pkcs8(p8) => {
            let bytes = p8.secret_pkcs8_der();
            if let Ok(key) = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
            {
                use aws_lc_rs::signature::KeyPair;
                let public = key.public_key().as_ref().to_vec();
                let signing = Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes).map_err(|e| {
                    KeyProblem::Rejected {
                        kind: "Ed25519",
                        reason: e.to_string(),
                    }
                })?;
                return Ok(LoadedKey {
                    kind: KeyKind::Ed25519,
                    signing: SharedKey(Arc::new(Signer::AwsLc(DkimKey::Ed25519(signing)))),
                    public,
                });
            }
            match aws_lc_rs::rsa::KeyPair::from_pkcs8(bytes) {
                Ok(pair) => rsa_key(pair, der.clone_key()),
                Err(_) => match pkcs8_inner(bytes).and_then(rsa_modulus_bits) {
                    Some(bits) if bits < RECOMMENDED_RSA_BITS => legacy_rsa_key(bits, || {
                        use rsa::pkcs8::DecodePrivateKey;
                        rsa::PrivateKey::from_pkcs8_der(bytes).ok()
                    }),
                    _ => Err(KeyProblem::NotRsaOrEd25519),
                },
            }
        }
        PrivateKeyDer::Pkcs1(p1) => {
            let bytes = p1.secret_pkcs1_der();
            match aws_lc_rs::rsa::KeyPair::from_der(bytes) {
                Ok(pair) => rsa_key(pair, der.clone_key()),
                Err(_) => match rsa_modulus_bits(bytes) {
                    Some(bits) if bits < RECOMMENDED_RSA_BITS => legacy_rsa_key(bits, || {
                        use rsa::pkcs1::DecodeRsaPrivateKey;
                        rsa::PrivateKey::from_pkcs1_der(bytes).ok()
                    }),
                    _ => Err(KeyProblem::MalformedRsa),
                },
            }
        }
        _ => Err(KeyProblem::Unsupported),
    }
}

fn rsa_key(
    pair: aws_lc_rs::rsa::KeyPair,
    der: PrivateKeyDer<'static>,
) -> Result<LoadedKey, KeyProblem> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair;
    let bits = pair.public_modulus_len() * 8;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| KeyProblem::PublicKey)?
        .as_ref()
        .to_vec();
    let signing: RsaKey<Sha256> = RsaKey::from_key_der(der).map_err(|e| KeyProblem::Rejected {
        kind: "RSA",
        reason: e.to_string(),
    })?;
    Ok(LoadedKey {
        kind: KeyKind::Rsa { bits },
        signing: SharedKey(Arc::new(Signer::AwsLc(DkimKey::Rsa(signing)))),
        public,
    })
}

/// An RSA key under 2048 bits, which AWS-LC will not sign with: through the `rsa` crate when
/// it has at least the 1024 bits RFC 8301 requires. `parse` decodes the DER (checked there).
fn legacy_rsa_key(
    bits: usize,
    parse: impl FnOnce() -> Option<rsa::PrivateKey>,
) -> Result<LoadedKey, KeyProblem> {
    use rsa::pkcs8::EncodePublicKey;
    use rsa::traits::PublicKeyParts;
    if bits < MIN_RSA_BITS {
        return Err(KeyProblem::Weak(bits));
    }
    let key = parse().ok_or(KeyProblem::MalformedRsa)?;
    let bits = key.n().bit_width() as usize;
    if !(MIN_RSA_BITS..RECOMMENDED_RSA_BITS).contains(&bits) {
        return Err(KeyProblem::MalformedRsa);
    }
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|_| KeyProblem::PublicKey)?
        .as_bytes()
        .to_vec();
    Ok(LoadedKey {
        kind: KeyKind::Rsa { bits },
        signing: SharedKey(Arc::new(Signer::LegacyRsa(Box::new(
            rsa::pkcs1v15::SigningKey::new(key),
        )))),
        public,
    })
}

/// Read one DER TLV: (tag, contents, rest).
fn der_tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, mut d) = d.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || d.len() < n {
            return None;
        }
        let len = d[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        d = &d[n..];
        len
    };
    (d.len() >= len).then(|| (tag, &d[..len], &d[len..]))
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo.
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let (0x30, body, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(body)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x04, inner, _) = der_tlv(rest)? else {
        return None;
    };
    Some(inner)
}

/// Modulus size of a PKCS#1 RSAPrivateKey, read from its DER without trusting it further.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (0x30, body, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(body)? else {
        return None;
    };
    let (0x02, modulus, _) = der_tlv(rest)? else {
        return None;
    };
    let significant = modulus.iter().skip_while(|&&b| b == 0).count();
    Some(significant * 8)
}

/// Modulus size of a DER RSA public key, as SubjectPublicKeyInfo or as PKCS#1 RSAPublicKey.
pub fn rsa_public_key_bits(der: &[u8]) -> Option<usize> {
    let (0x30, body, _) = der_tlv(der)? else {
        return None;
    };
    let (tag, first, rest) = der_tlv(body)?;
    match tag {
        // PKCS#1: SEQUENCE { modulus INTEGER, exponent INTEGER }
        0x02 => Some(first.iter().skip_while(|&&b| b == 0).count() * 8),
        // SPKI: SEQUENCE { AlgorithmIdentifier, BIT STRING { 0x00, RSAPublicKey } }
        0x30 => {
            let (0x03, bits, _) = der_tlv(rest)? else {
                return None;
            };
            rsa_public_key_bits(bits.get(1..)?)
        }
        _ => None,
    }
}

/// Whether a published `p=` value is the public half of `key`. An RSA key may be published
/// as SubjectPublicKeyInfo (usual) or as a bare PKCS#1 RSAPublicKey (older tools).
/// Both are compared whole: a record holding only part of the key (its exponent, say) is a
/// mismatch.
pub fn public_key_matches(key: &LoadedKey, published: &[u8]) -> bool {
    match key.kind {
        KeyKind::Ed25519 => published == key.public.as_slice(),
        KeyKind::Rsa { .. } => {
            published == key.public.as_slice()
                || spki_rsa_public_key(&key.public).is_some_and(|pkcs1| published == pkcs1)
        }
    }
}

/// The PKCS#1 RSAPublicKey inside an RSA SubjectPublicKeyInfo:
/// SEQUENCE { AlgorithmIdentifier, BIT STRING { 0x00, RSAPublicKey } }.
fn spki_rsa_public_key(spki: &[u8]) -> Option<&[u8]> {
    let (0x30, body, _) = der_tlv(spki)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(body)? else {
        return None;
    };
    let (0x03, bits, _) = der_tlv(rest)? else {
        return None;
    };
    match bits.split_first() {
        Some((0, key)) => Some(key),
        _ => None,
    }
}
