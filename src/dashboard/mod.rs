//! `[dashboard]`: one web page joining what receivers report (report intake) with what we
//! signed. A small HTTP/1.1 server: one request per connection, heads read for at most 5 s
//! and 8 KiB, HTTPS when a certificate is set, basic authentication when a password file is.
//! Every response says `Content-Security-Policy: default-src 'self'`: the page loads nothing
//! from anywhere else (its charts are inline SVG drawn by the server; no script at all).

pub mod page;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::pipeline::context::Context;

/// The users and passwords of `password_file`: lines `user:password` (`#` comments).
#[derive(Clone)]
pub struct Passwords(Vec<(String, String)>);

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passwords({} users)", self.0.len())
    }
}

impl Passwords {
    /// Read a password file as private as a key file. Errors never show a password.
    pub fn read(path: &Path) -> Result<Passwords, String> {
        crate::config::keys::check_safe(path).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let users: Vec<(String, String)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .filter(|(u, p)| !u.is_empty() && !p.is_empty())
            .collect();
        if users.is_empty() {
            return Err(format!("{}: no `user:password` line", path.display()));
        }
        Ok(Passwords(users))
    }

    /// Whether an `Authorization: Basic …` value names a user with its password (compared
    /// in constant time).
    fn allows(&self, authorization: Option<&str>) -> bool {
        use base64::Engine;
        let Some(token) = authorization
            .and_then(|a| a.trim().strip_prefix("Basic "))
            .and_then(|t| {
                base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .ok()
            })
        else {
            return false;
        };
        let Some((user, pass)) = std::str::from_utf8(&token)
            .ok()
            .and_then(|t| t.split_once(':'))
        else {
            return false;
        };
        let mut ok = false;
        for (u, p) in &self.0 {
            let same_user =
                aws_lc_rs::constant_time::verify_slices_are_equal(u.as_bytes(), user.as_bytes())
                    .is_ok();
            let same_pass =
                aws_lc_rs::constant_time::verify_slices_are_equal(p.as_bytes(), pass.as_bytes())
                    .is_ok();
            ok |= same_user & same_pass;
        }
        ok
    }
}

/// The TLS server settings from `tls_cert` and `tls_key`.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    crate::config::keys::check_safe(key).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map(Arc::new)
        .map_err(|e| format!("dashboard TLS: {e}"))
}

/// What every response carries.
const SECURITY_HEADERS: &str = "Content-Security-Policy: default-src 'self'\r\n\
X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n\
Cache-Control: no-store\r\n";

/// Serve the dashboard on `listener` until the task is dropped. The settings (store,
/// passwords) are those of the configuration at each request; TLS is fixed at start.
pub async fn serve(
    listener: tokio::net::TcpListener,
    contexts: watch::Receiver<Arc<Context>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ctx = contexts.borrow().clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(a) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(5), a.accept(stream)).await
                    {
                        answer(s, ctx).await;
                    }
                }
                None => answer(stream, ctx).await,
            }
        });
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, ctx: Arc<Context>) {
    let Some(head) = crate::metrics::read_head(&mut stream).await else {
        return;
    };
    let response = respond(&head, ctx).await;
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn response(
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{SECURITY_HEADERS}{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

async fn respond(head: &str, ctx: Arc<Context>) -> Vec<u8> {
    let mut lines = head.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"",
            false,
        );
    }
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    if let Some(path) = &ctx.config.dashboard.password_file {
        let allowed = Passwords::read(path).is_ok_and(|p| p.allows(authorization.as_deref()));
        if !allowed {
            return response(
                "401 Unauthorized",
                "text/plain",
                "WWW-Authenticate: Basic realm=\"mailseal\", charset=\"UTF-8\"\r\n",
                b"authentication required\n",
                head_only,
            );
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/style.css" => response(
            "200 OK",
            "text/css; charset=utf-8",
            "",
            page::STYLE.as_bytes(),
            head_only,
        ),
        "/" => {
            let q = page::Query::parse(query);
            let started = std::time::Instant::now();
            let built = page::build(&ctx, &q).await;
            let took = started.elapsed();
            match built {
                Ok(html) => response(
                    "200 OK",
                    "text/html; charset=utf-8",
                    &format!(
                        "Server-Timing: page;dur={:.1}\r\n",
                        took.as_secs_f64() * 1000.0
                    ),
                    html.as_bytes(),
                    head_only,
                ),
                Err(e) => {
                    tracing::warn!("dashboard: {e}");
                    response(
                        "503 Service Unavailable",
                        "text/plain; charset=utf-8",
                        "",
                        format!("the report store cannot be read: {e}\n").as_bytes(),
                        head_only,
                    )
                }
            }
        }
        _ => response("404 Not Found", "text/plain", "", b"not found\n", head_only),
    }
}
