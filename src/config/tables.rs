//! OpenDKIM-compatible KeyTable and SigningTable.
//!
//! KeyTable, one key per line:
//! ```text
//! # keyname        domain:selector:/path/to/private.key
//! rsa-example      example.com:s2026r:/etc/mailseal/keys/example.com/s2026r.private
//! any-domain       %:mail:/etc/mailseal/keys/shared.private      # % = the sender's domain
//! ```
//! The key may also be written in the row itself (base64 DER, as OpenDKIM allows when the
//! value does not start with `/`, `./` or `../`); the KeyTable must then be as safe as a key
//! file.
//!
//! SigningTable, `pattern keyname[:signer]`, first match wins (all matches with
//! `multiple_signatures`); the optional signer becomes the signature's i= (`%` = the sender's
//! domain; left out when it is not within the signing domain, as OpenDKIM does):
//! ```text
//! *@example.com    rsa-example
//! example.org      org-key       # a pattern without '@' is matched against the domain
//! *                any-domain
//! ```
//! Patterns are matched case-insensitively; `*` matches any run of characters, as with
//! OpenDKIM's `refile:` tables (a path without prefix reads the same way). A `file:` table is
//! looked up as OpenDKIM looks up its non-pattern tables, whatever the row order: the full
//! address, then the domain, then `user@.parent` for each parent domain, then `.parent`, then
//! `user@*`, then `*`; rows with any other `*` never match there and are reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;

use super::keys::{load_inline_key, load_key, LoadedKey};
use super::types::InvalidValue;
use super::ConfigError;

/// One KeyTable row after its key was loaded and checked.
#[derive(Debug)]
pub struct KeyEntry {
    pub name: String,
    /// `None` means `%`: sign with the sender's domain.
    pub domain: Option<String>,
    pub selector: String,
    pub path: PathBuf,
    pub key: LoadedKey,
    /// Where the row was written, for messages (`file:line`).
    pub origin: String,
}

#[derive(Debug)]
pub struct SigningRow {
    pub pattern: String,
    pub key: usize,
    /// The i= value (`%` = the sender's domain), when the row names one.
    pub signer: Option<String>,
    pub origin: String,
}

/// Where a `file:` SigningTable key falls in OpenDKIM's lookup order, and the pattern that
/// matches what it matches; `None`: a key OpenDKIM never looks up.
fn file_lookup(key: &str) -> Option<(u8, String)> {
    // OpenDKIM matches keys literally: a `*` outside `user@*` and `*` is a character no
    // address has.
    let literal = |part: &str| (!part.contains('*')).then_some(());
    Some(match key.rsplit_once('@') {
        Some((user, "*")) => literal(user).map(|_| (5, key.to_string()))?,
        Some((user, parent)) if parent.starts_with('.') => {
            literal(key).map(|_| (3, format!("{user}@*{parent}")))?
        }
        Some(_) => literal(key).map(|_| (1, key.to_string()))?,
        None if key == "*" => (6, key.to_string()),
        None if key.starts_with('.') => literal(key).map(|_| (4, format!("*{key}")))?,
        None => literal(key).map(|_| (2, key.to_string()))?,
    })
}

/// The signing tables, ready for lookups.
#[derive(Debug, Default)]
pub struct SigningTables {
    pub keys: Vec<KeyEntry>,
    pub rows: Vec<SigningRow>,
}

/// Strip an OpenDKIM dataset prefix (`file:`, `refile:`) from a configured table path.
pub fn table_path(spec: &str) -> &str {
    spec.strip_prefix("refile:")
        .or_else(|| spec.strip_prefix("file:"))
        .unwrap_or(spec)
}

/// Meaningful lines of a table file: comments and blank lines dropped, 1-based line numbers.
fn table_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = match line.find('#') {
            Some(pos) => &line[..pos],
            None => line,
        }
        .trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

fn read_table(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

impl SigningTables {
    /// Load both tables and every key the KeyTable names. All problems are collected, so
    /// `check-config` can report them in one run.
    /// `opendkim_file`: the SigningTable was configured as `file:` (see the module docs).
    pub fn load(
        key_table: &Path,
        signing_table: &Path,
        opendkim_file: bool,
        errors: &mut Vec<ConfigError>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut tables = SigningTables::default();
        let mut by_name: HashMap<String, usize> = HashMap::new();

        match read_table(key_table) {
            Ok(text) => {
                let base = key_table.parent().unwrap_or(Path::new("."));
                for (line_no, line) in table_lines(&text) {
                    let origin = format!("{}:{}", key_table.display(), line_no);
                    match parse_key_row(line, base) {
                        Err(msg) => errors.push(ConfigError::Table {
                            origin,
                            msg: msg.to_string(),
                        }),
                        Ok((name, domain, selector, source)) => {
                            if by_name.contains_key(&name.to_ascii_lowercase()) {
                                errors.push(ConfigError::Table {
                                    origin,
                                    msg: format!("key name {name:?} is defined twice"),
                                });
                                continue;
                            }
                            let (loaded, path) = match source {
                                KeySource::File(path) => (load_key(&path), path),
                                KeySource::Inline(der) => {
                                    (load_inline_key(key_table, &der), key_table.to_path_buf())
                                }
                            };
                            match loaded {
                                Err(e) => errors.push(ConfigError::Table {
                                    origin,
                                    msg: format!("key {name:?}: {e}"),
                                }),
                                Ok(key) => {
                                    by_name.insert(name.to_ascii_lowercase(), tables.keys.len());
                                    tables.keys.push(KeyEntry {
                                        name,
                                        domain,
                                        selector,
                                        path,
                                        key,
                                        origin,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => errors.push(e),
        }

        let mut ranks = Vec::new();
        match read_table(signing_table) {
            Ok(text) => {
                for (line_no, line) in table_lines(&text) {
                    let origin = format!("{}:{}", signing_table.display(), line_no);
                    let mut parts = line.split_whitespace();
                    let (Some(pattern), Some(value)) = (parts.next(), parts.next()) else {
                        errors.push(ConfigError::Table {
                            origin,
                            msg: "expected `pattern keyname`".into(),
                        });
                        continue;
                    };
                    if parts.next().is_some() {
                        errors.push(ConfigError::Table {
                            origin,
                            msg: "expected `pattern keyname[:signer]`, found extra fields".into(),
                        });
                        continue;
                    }
                    let (keyname, signer) = match value.split_once(':') {
                        Some((k, s)) if !s.is_empty() => (k, Some(s.to_ascii_lowercase())),
                        Some((k, _)) => (k, None),
                        None => (value, None),
                    };
                    let pattern = pattern.to_ascii_lowercase();
                    let (rank, pattern) = if opendkim_file {
                        match file_lookup(&pattern) {
                            Some(found) => found,
                            None => {
                                warnings.push(format!(
                                    "{origin}: {pattern:?} never matches in a file: table \
                                     (OpenDKIM looks up user@host, host, user@.parent, .parent, \
                                     user@* and *); make the table refile: to use patterns"
                                ));
                                continue;
                            }
                        }
                    } else {
                        (0, pattern)
                    };
                    match by_name.get(&keyname.to_ascii_lowercase()) {
                        Some(&key) => {
                            // Within a rank, the longer (more specific) parent first.
                            ranks.push((rank, usize::MAX - pattern.len()));
                            tables.rows.push(SigningRow {
                                pattern,
                                key,
                                signer,
                                origin,
                            })
                        }
                        None => errors.push(ConfigError::Table {
                            origin,
                            msg: format!(
                                "key name {keyname:?} is not in the KeyTable {}",
                                key_table.display()
                            ),
                        }),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
        if opendkim_file {
            let mut ordered: Vec<_> = ranks.into_iter().zip(tables.rows).collect();
            ordered.sort_by_key(|&((rank, len), _)| (rank, if rank >= 3 { len } else { 0 }));
            tables.rows = ordered.into_iter().map(|(_, row)| row).collect();
        }
        tables
    }

    /// The rows whose pattern matches `address` (`local@domain`), in table order.
    pub fn matches<'a>(&'a self, address: &str) -> impl Iterator<Item = &'a SigningRow> + 'a {
        let address = address.to_ascii_lowercase();
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| address.clone());
        self.rows.iter().filter(move |row| {
            if row.pattern.contains('@') {
                glob_match(row.pattern.as_bytes(), address.as_bytes())
            } else {
                glob_match(row.pattern.as_bytes(), domain.as_bytes())
            }
        })
    }
}

/// Where a KeyTable row's key is.
#[derive(Debug, PartialEq, Eq)]
enum KeySource {
    File(PathBuf),
    /// The key itself, base64 DER, written in the row.
    Inline(Vec<u8>),
}

/// `keyname domain:selector:key` → parts. The key is a file when it starts with `/`, `./`
/// or `../` (as OpenDKIM reads it), the key itself when it is base64 DER, and otherwise a
/// path relative to the KeyTable.
fn parse_key_row(
    line: &str,
    base: &Path,
) -> Result<(String, Option<String>, String, KeySource), InvalidValue> {
    let (name, value) = line
        .split_once(char::is_whitespace)
        .ok_or("expected `keyname domain:selector:/path/to/key`")?;
    let value = value.trim();
    let mut parts = value.splitn(3, ':');
    let (Some(domain), Some(selector), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "expected `domain:selector:/path/to/key` after the key name, found {value:?}"
        )
        .into());
    };
    if domain.is_empty() || selector.is_empty() || path.is_empty() {
        return Err("domain, selector and key path must not be empty".into());
    }
    if !valid_dns_label_seq(selector) {
        return Err(format!("selector {selector:?} is not a valid DNS name").into());
    }
    let domain = if domain == "%" {
        None
    } else if valid_dns_label_seq(domain) {
        Some(domain.to_ascii_lowercase())
    } else {
        return Err(format!("domain {domain:?} is not a valid DNS name").into());
    };
    let inline = (!path.starts_with(['/', '.']) && path.len() >= 64)
        .then(|| base64::engine::general_purpose::STANDARD.decode(path).ok())
        .flatten();
    let source = match inline {
        Some(der) => KeySource::Inline(der),
        None if Path::new(path).is_absolute() => KeySource::File(PathBuf::from(path)),
        None => KeySource::File(base.join(path)),
    };
    Ok((name.to_string(), domain, selector.to_string(), source))
}

/// A DNS name made of letters, digits, `-` and `_` labels (domains and selectors).
pub fn valid_dns_label_seq(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `*` matches any run of bytes (including none); everything else literally.
/// Iterative with one backtrack point, so it is linear-ish and cannot blow up.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(b"*@example.com", b"alice@example.com"));
        assert!(!glob_match(b"*@example.com", b"alice@sub.example.com"));
        assert!(glob_match(b"*@*.example.com", b"alice@sub.example.com"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
        assert!(glob_match(b"alice@example.com", b"alice@example.com"));
        assert!(!glob_match(b"alice@example.com", b"alice@example.co"));
        // Pathological pattern stays fast.
        let text = vec![b'a'; 5000];
        assert!(!glob_match(b"*a*a*a*a*a*a*b", &text));
    }

    #[test]
    fn key_rows() {
        let base = Path::new("/etc/mailseal");
        let (n, d, s, p) = parse_key_row("k1  example.com:sel:keys/k1.pem", base).unwrap();
        assert_eq!(
            (n.as_str(), d.as_deref(), s.as_str()),
            ("k1", Some("example.com"), "sel")
        );
        assert_eq!(p, KeySource::File("/etc/mailseal/keys/k1.pem".into()));
        let (_, d, _, p) = parse_key_row("k2 %:sel:/abs/k2", base).unwrap();
        assert_eq!(d, None);
        assert_eq!(p, KeySource::File("/abs/k2".into()));
        let der = "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpgusXqNTgNKvTEREnFaXsyaRlwO6wDHK9g";
        let (_, _, _, p) = parse_key_row(&format!("k4 example.com:sel:{der}"), base).unwrap();
        assert!(matches!(p, KeySource::Inline(d) if d.len() == 48));
        assert!(parse_key_row("k3", base).is_err());
        assert!(parse_key_row("k3 example.com:sel", base).is_err());
        assert!(parse_key_row("k3 exa mple.com:sel:/x", base).is_err());
        assert!(parse_key_row("k3 example.com::/x", base).is_err());
    }

    #[test]
    fn file_table_lookup_order() {
        assert_eq!(file_lookup("a@b.example"), Some((1, "a@b.example".into())));
        assert_eq!(file_lookup("b.example"), Some((2, "b.example".into())));
        assert_eq!(file_lookup("a@.example"), Some((3, "a@*.example".into())));
        assert_eq!(file_lookup(".example"), Some((4, "*.example".into())));
        assert_eq!(file_lookup("a@*"), Some((5, "a@*".into())));
        assert_eq!(file_lookup("*"), Some((6, "*".into())));
        // refile: patterns mean nothing to a file: table.
        assert_eq!(file_lookup("*@example.com"), None);
        assert_eq!(file_lookup("*.example.com"), None);
        assert_eq!(file_lookup("a*@.example"), None);
    }

    #[test]
    fn comments_and_blanks() {
        let lines: Vec<_> = table_lines("# c\n\n a b # tail\n\tc d\n").collect();
        assert_eq!(lines, vec![(3, "a b"), (4, "c d")]);
    }

    #[test]
    fn table_prefix() {
        assert_eq!(table_path("refile:/etc/x"), "/etc/x");
        assert_eq!(table_path("file:/etc/x"), "/etc/x");
        assert_eq!(table_path("/etc/x"), "/etc/x");
    }
}
