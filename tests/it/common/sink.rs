//! A minimal SMTP server on 127.0.0.1 that keeps every message it receives.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// MAIL FROM, the RCPT TO addresses and the AUTH PLAIN token, if any.
pub type SmtpEnvelope = (String, Vec<String>, Option<String>);

#[derive(Clone, Default)]
pub struct Sink {
    pub messages: Arc<Mutex<Vec<Vec<u8>>>>,
    /// One per message.
    pub envelopes: Arc<Mutex<Vec<SmtpEnvelope>>>,
    pub port: u16,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::start_on(0).await
    }

    /// Listen on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let sink = Sink {
            messages: Arc::default(),
            envelopes: Arc::default(),
            port: listener.local_addr().unwrap().port(),
        };
        let store = sink.messages.clone();
        let envelopes = sink.envelopes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                let envelopes = envelopes.clone();
                tokio::spawn(async move {
                    let (mut from, mut rcpts, mut auth) = (String::new(), Vec::new(), None);
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::new(r);
                    let _ = w.write_all(b"220 sink.test ESMTP\r\n").await;
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match r.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
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
                            b"250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
                        } else if cmd.starts_with("AUTH PLAIN ") {
                            auth = Some(original["AUTH PLAIN ".len()..].to_string());
                            b"235 2.7.0 ok\r\n"
                        } else if cmd.starts_with("MAIL FROM:") {
                            from = arg("MAIL FROM:");
                            b"250 ok\r\n"
                        } else if cmd.starts_with("RCPT TO:") {
                            rcpts.push(arg("RCPT TO:"));
                            b"250 ok\r\n"
                        } else if cmd.starts_with("DATA") {
                            let _ = w.write_all(b"354 go ahead\r\n").await;
                            let mut msg = Vec::new();
                            loop {
                                line.clear();
                                match r.read_until(b'\n', &mut line).await {
                                    Ok(0) | Err(_) => return,
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
                            envelopes.lock().unwrap().push((
                                std::mem::take(&mut from),
                                std::mem::take(&mut rcpts),
                                auth.clone(),
                            ));
                            store.lock().unwrap().push(msg);
                            b"250 2.0.0 stored\r\n"
                        } else if cmd.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        sink
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
