//! Handing a report message on: an SMTP relay (STARTTLS, AUTH PLAIN) or the local sendmail
//! command. Every step has a timeout; an error names the step and the server's reply.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::{SmtpTls, Transport};

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a report was not handed on. Never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{step}: timed out")]
    Timeout { step: String },
    #[error("{step}: {source}")]
    Io {
        step: String,
        source: std::io::Error,
    },
    #[error("{step}: the relay closed the connection")]
    Closed { step: String },
    #[error("{step}: {reply}")]
    Reply { step: String, reply: String },
    #[error("TLS with {addr}: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{addr} does not offer STARTTLS and reports.smtp_tls = \"{level}\"")]
    TlsRequired { addr: String, level: &'static str },
    #[error("{addr}: the password is sent only over TLS with smtp_tls = \"verify\", or over TLS to a loopback relay")]
    PasswordRefused { addr: String },
    #[error("{0}: not a single mailbox, not submitted")]
    NotAMailbox(String),
    #[error("the relay does not offer AUTH PLAIN")]
    NoAuthPlain,
    #[error("{}: {reason}", path.display())]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{}: {reason}", command.display())]
    Sendmail {
        command: std::path::PathBuf,
        reason: String,
    },
}

fn step_io(step: &str) -> impl FnOnce(std::io::Error) -> SmtpError + '_ {
    move |source| SmtpError::Io {
        step: step.to_string(),
        source,
    }
}

fn timeout(step: &str) -> impl FnOnce(tokio::time::error::Elapsed) -> SmtpError + '_ {
    move |_| SmtpError::Timeout {
        step: step.to_string(),
    }
}

/// Submit `message` (CRLF line ends) from `from` to `rcpt`.
pub async fn submit(
    transport: &Transport,
    helo: &str,
    from: &str,
    rcpt: &str,
    message: &[u8],
) -> Result<(), SmtpError> {
    // Checked when the record was read; again here, for every transport (a comma in an
    // address would make sendmail deliver to two).
    for addr in [from, rcpt] {
        crate::report::destination::mailbox_domain(addr)
            .map_err(|_| SmtpError::NotAMailbox(addr.to_string()))?;
    }
    match transport {
        Transport::Sendmail(cmd) => sendmail(cmd, from, rcpt, message).await,
        Transport::Smtp {
            host,
            port,
            tls,
            ca_file,
            auth,
        } => {
            let password = match auth {
                Some((user, file)) => Some((user.as_str(), read_password(file)?)),
                None => None,
            };
            let addr = format!("{host}:{port}");
            let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(timeout("connect"))?
                .map_err(|source| SmtpError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let mut conn = BufReader::new(tcp);
            expect(&mut conn, "greeting", 220).await?;
            let ehlo = command(&mut conn, &format!("EHLO {helo}"), "EHLO", 250).await?;
            let offers_tls = ehlo.lines().any(|l| {
                l.get(4..)
                    .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
            });
            // The password: only where nobody between us and the relay can read it.
            let tls_allows_password =
                *tls == SmtpTls::Verify || crate::config::is_loopback_host(host);
            if *tls != SmtpTls::None && offers_tls {
                command(&mut conn, "STARTTLS", "STARTTLS", 220).await?;
                if password.is_some() && !tls_allows_password {
                    return Err(SmtpError::PasswordRefused { addr });
                }
                let tcp = conn.into_inner();
                let tls_error = |reason: String| SmtpError::Tls {
                    addr: addr.clone(),
                    reason,
                };
                let connector = tls_connector(*tls == SmtpTls::Verify, ca_file.as_deref())?;
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| tls_error(format!("relay name {host:?}: {e}")))?;
                let stream = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(timeout("TLS handshake"))?
                    .map_err(|e| tls_error(e.to_string()))?;
                let mut conn = BufReader::new(stream);
                let ehlo = command(&mut conn, &format!("EHLO {helo}"), "EHLO", 250).await?;
                transaction(&mut conn, &ehlo, password, from, rcpt, message).await
            } else if matches!(tls, SmtpTls::Encrypt | SmtpTls::Verify) {
                let level = if *tls == SmtpTls::Verify {
                    "verify"
                } else {
                    "encrypt"
                };
                Err(SmtpError::TlsRequired { addr, level })
            } else {
                if password.is_some() {
                    return Err(SmtpError::PasswordRefused { addr });
                }
                transaction(&mut conn, &ehlo, password, from, rcpt, message).await
            }
        }
    }
}

fn file_error(path: &Path, reason: impl ToString) -> SmtpError {
    SmtpError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn read_password(file: &Path) -> Result<String, SmtpError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).map_err(|e| file_error(file, e))?;
    if meta.permissions().mode() & 0o066 != 0 {
        return Err(file_error(
            file,
            "readable or writable by others; refusing the password file (chmod 600)",
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| file_error(file, e))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// A TLS client for the relay: its certificate checked (`verify`), or not (opportunistic and
/// encrypt, RFC 7435: a self-signed or mismatched certificate still encrypts).
fn tls_connector(
    verify: bool,
    ca_file: Option<&Path>,
) -> Result<tokio_rustls::TlsConnector, SmtpError> {
    let check = if verify {
        crate::tls::Check::Full
    } else {
        crate::tls::Check::None
    };
    let config = crate::tls::client_config(check, ca_file).map_err(|e| match e {
        crate::tls::TlsError::File { path, reason } => SmtpError::File { path, reason },
        other => SmtpError::Tls {
            addr: String::new(),
            reason: other.to_string(),
        },
    })?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    ehlo: &str,
    auth: Option<(&str, String)>,
    from: &str,
    rcpt: &str,
    message: &[u8],
) -> Result<(), SmtpError> {
    if let Some((user, password)) = auth {
        if !ehlo.lines().any(|l| {
            let l = l.to_ascii_uppercase();
            l.get(4..)
                .is_some_and(|k| k.starts_with("AUTH") && k.contains("PLAIN"))
        }) {
            return Err(SmtpError::NoAuthPlain);
        }
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{password}").as_bytes());
        // The token is a secret: never part of an error message.
        write_line(conn, &format!("AUTH PLAIN {token}")).await?;
        expect(conn, "AUTH", 235).await?;
    }
    command(conn, &format!("MAIL FROM:<{from}>"), "MAIL FROM", 250).await?;
    command(conn, &format!("RCPT TO:<{rcpt}>"), "RCPT TO", 250).await?;
    command(conn, "DATA", "DATA", 354).await?;
    let mut data = Vec::with_capacity(message.len() + message.len() / 50 + 5);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    tokio::time::timeout(STEP_TIMEOUT, conn.get_mut().write_all(&data))
        .await
        .map_err(timeout("sending the message"))?
        .map_err(step_io("sending the message"))?;
    expect(conn, "end of DATA", 250).await?;
    let _ = write_line(conn, "QUIT").await;
    Ok(())
}

async fn write_line<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    line: &str,
) -> Result<(), SmtpError> {
    let mut buf = Vec::with_capacity(line.len() + 2);
    buf.extend_from_slice(line.as_bytes());
    buf.extend_from_slice(b"\r\n");
    tokio::time::timeout(STEP_TIMEOUT, conn.get_mut().write_all(&buf))
        .await
        .map_err(timeout("write"))?
        .map_err(step_io("write"))
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    line: &str,
    step: &str,
    want: u16,
) -> Result<String, SmtpError> {
    write_line(conn, line).await?;
    expect(conn, step, want).await
}

/// Read one (possibly multi-line) reply; an error unless its code is `want`.
async fn expect<S: AsyncRead + Unpin>(
    conn: &mut BufReader<S>,
    step: &str,
    want: u16,
) -> Result<String, SmtpError> {
    let bad_reply = |reply: &str| SmtpError::Reply {
        step: step.to_string(),
        reply: reply.to_string(),
    };
    let mut reply = String::new();
    for _ in 0..100 {
        let mut line = String::new();
        let n = tokio::time::timeout(STEP_TIMEOUT, conn.read_line(&mut line))
            .await
            .map_err(timeout(step))?
            .map_err(step_io(step))?;
        if n == 0 {
            return Err(SmtpError::Closed {
                step: step.to_string(),
            });
        }
        if line.len() > 1000 {
            return Err(bad_reply("reply line too long"));
        }
        reply.push_str(&line);
        let bytes = line.as_bytes();
        if bytes.len() < 4 || bytes[3] != b'-' {
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return if code == want {
                Ok(reply)
            } else {
                Err(bad_reply(&reply.trim_end().replace("\r\n", " / ")))
            };
        }
    }
    Err(bad_reply("reply too long"))
}

async fn sendmail(cmd: &Path, from: &str, rcpt: &str, message: &[u8]) -> Result<(), SmtpError> {
    let failed = |reason: String| SmtpError::Sendmail {
        command: cmd.to_path_buf(),
        reason,
    };
    // sendmail wants local line ends.
    let mut text = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        if message[i] == b'\r' && message.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        text.push(message[i]);
        i += 1;
    }
    let mut child = tokio::process::Command::new(cmd)
        .args(["-i", "-f", from, "--", rcpt])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| failed("no stdin".into()))?;
    let write = async move {
        stdin.write_all(&text).await?;
        stdin.shutdown().await
    };
    let out = tokio::time::timeout(STEP_TIMEOUT, async {
        let w = write.await;
        let out = child.wait_with_output().await;
        (w, out)
    })
    .await
    .map_err(|_| failed("did not finish in time".into()))?;
    let output = out.1.map_err(|e| failed(e.to_string()))?;
    if let Err(e) = out.0 {
        return Err(failed(format!("writing the message: {e}")));
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
