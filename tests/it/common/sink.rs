//! A minimal SMTP server on 127.0.0.1 that keeps every message it receives.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// MAIL FROM, the RCPT TO addresses, the AUTH PLAIN token if any, and whether the session was
/// encrypted (STARTTLS).
pub type SmtpEnvelope = (String, Vec<String>, Option<String>, bool);

#[derive(Clone, Default)]
pub struct Sink {
    pub messages: Arc<Mutex<Vec<Vec<u8>>>>,
    /// One per message.
    pub envelopes: Arc<Mutex<Vec<SmtpEnvelope>>>,
    pub port: u16,
    /// Recipients answered 451 at RCPT TO.
    pub tempfail: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::start_on(0).await
    }

    /// Listen on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16) -> Sink {
        Self::listen(port, None).await
    }

    /// Offer STARTTLS with this certificate (and key), PEM; on 127.0.0.1:`port` (0: any).
    pub async fn start_tls_on(port: u16, cert: &[u8], key: &[u8]) -> Sink {
        Self::listen(port, Some(super::tls_acceptor(cert, key))).await
    }

    async fn listen(port: u16, tls: Option<TlsAcceptor>) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let sink = Sink {
            messages: Arc::default(),
            envelopes: Arc::default(),
            port: listener.local_addr().unwrap().port(),
            tempfail: Arc::default(),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(stream);
                    if r.get_mut()
                        .write_all(b"220 sink.test ESMTP\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let Some(plain) = s.session(&mut r, tls.is_some(), false).await else {
                        return;
                    };
                    // STARTTLS: the same session, encrypted.
                    let (Some(acceptor), true) = (tls, plain) else {
                        return;
                    };
                    let Ok(stream) = acceptor.accept(r.into_inner()).await else {
                        return;
                    };
                    let mut r = BufReader::new(stream);
                    let _ = s.session(&mut r, false, true).await;
                });
            }
        });
        sink
    }

    /// Serve commands until QUIT or EOF (`None`), or until STARTTLS was answered (`Some(true)`).
    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        r: &mut BufReader<S>,
        offer_tls: bool,
        encrypted: bool,
    ) -> Option<bool> {
        let (mut from, mut rcpts, mut auth) = (String::new(), Vec::new(), None);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let original = String::from_utf8_lossy(&line).trim_end().to_string();
            let cmd = original.to_ascii_uppercase();
            let arg = |prefix: &str| {
                original[prefix.len()..]
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            };
            let reply: &[u8] = if cmd.starts_with("EHLO") {
                if offer_tls {
                    b"250-sink.test\r\n250-STARTTLS\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                } else {
                    b"250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                }
            } else if cmd == "STARTTLS" && offer_tls {
                let _ = r.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
                return Some(true);
            } else if cmd.starts_with("AUTH PLAIN ") {
                auth = Some(original["AUTH PLAIN ".len()..].to_string());
                b"235 2.7.0 ok\r\n"
            } else if cmd.starts_with("MAIL FROM:") {
                from = arg("MAIL FROM:");
                b"250 ok\r\n"
            } else if cmd.starts_with("RCPT TO:") {
                let rcpt = arg("RCPT TO:");
                if self.tempfail.lock().unwrap().contains(&rcpt) {
                    b"451 4.3.0 try again later\r\n"
                } else {
                    rcpts.push(rcpt);
                    b"250 ok\r\n"
                }
            } else if cmd.starts_with("DATA") {
                let _ = r.get_mut().write_all(b"354 go ahead\r\n").await;
                let mut msg = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    let l = if line.starts_with(b"..") {
                        &line[1..]
                    } else {
                        &line[..]
                    };
                    msg.extend_from_slice(l);
                }
                self.envelopes.lock().unwrap().push((
                    std::mem::take(&mut from),
                    std::mem::take(&mut rcpts),
                    auth.clone(),
                    encrypted,
                ));
                self.messages.lock().unwrap().push(msg);
                b"250 2.0.0 stored\r\n"
            } else if cmd.starts_with("QUIT") {
                let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                return None;
            } else {
                b"250 ok\r\n"
            };
            if r.get_mut().write_all(reply).await.is_err() {
                return None;
            }
        }
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    /// Wait (bounded) until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) -> bool {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            if self.count() >= n {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.count() >= n
    }
}
