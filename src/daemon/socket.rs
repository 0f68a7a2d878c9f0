//! Binding the milter socket, and the listener wrappers.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use indymilter::{EitherListener, Listener};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use crate::config::SocketSpec;

/// A TCP listener that sets TCP_NODELAY on every accepted connection: milter replies are
/// small writes, and Nagle + delayed ACK would otherwise add up to 40 ms to each.
pub struct NodelayListener(pub TcpListener);

impl Listener for NodelayListener {
    type Io = QuickAck;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<QuickAck>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
            QuickAck(stream)
        })
    }
}

/// A milter connection that acknowledges what it reads at once (TCP_QUICKACK, renewed after
/// every read; the kernel drops it on its own).
///
/// Why: for the stages negotiated without replies (headers, body chunks) the MTA writes
/// command after command and we send nothing back. Postfix does not disable Nagle on its
/// milter socket, so each small write waits until the previous one is acknowledged — and
/// with delayed ACKs that is up to 40 ms per message. Acking at once removes the stall.
pub struct QuickAck(pub TcpStream);

impl QuickAck {
    fn quickack(&self) {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.quickack();
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Keeps accepting after a failed `accept()` (out of file descriptors, a connection reset
/// before it was accepted): indymilter would otherwise stop serving on the first error.
/// After an error it waits 100 ms before trying again.
///
/// It also stops accepting when its `stop` future completes: the listening socket is closed
/// at once (new connections are refused, so the MTA applies its default action without
/// waiting), while connections already open carry on.
pub struct Resilient<L> {
    inner: Option<L>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<L> Resilient<L> {
    pub fn new(inner: L) -> Self {
        Resilient {
            inner: Some(inner),
            backoff: None,
            stop: None,
        }
    }

    /// Close the listening socket when `stop` completes.
    pub fn stop_when(mut self, stop: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stop = Some(Box::pin(stop));
        self
    }
}

impl<L: Listener> Listener for Resilient<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<L::Io>> {
        if let Some(stop) = &mut self.stop {
            if stop.as_mut().poll(cx).is_ready() {
                self.stop = None;
                self.inner = None;
                tracing::info!("stopped accepting connections");
            }
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if let Some(sleep) = &mut self.backoff {
                ready!(sleep.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(inner.poll_accept(cx)) {
                Ok(stream) => return Poll::Ready(Ok(stream)),
                Err(e) => {
                    tracing::warn!("accept failed, retrying in 100 ms: {e}");
                    self.backoff = Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))));
                }
            }
        }
    }
}

pub type AnyListener = EitherListener<NodelayListener, UnixListener>;

/// Bind the configured socket. A stale unix socket file is removed first; anything else at
/// that path is left alone and reported.
pub async fn bind(spec: &SocketSpec, mode: u32) -> io::Result<AnyListener> {
    match spec {
        SocketSpec::Inet { host, port } => {
            let listener = TcpListener::bind((host.as_str(), *port)).await?;
            Ok(EitherListener::Tcp(NodelayListener(listener)))
        }
        SocketSpec::Unix(path) => {
            match std::fs::symlink_metadata(path) {
                Ok(meta) => {
                    use std::os::unix::fs::FileTypeExt;
                    if meta.file_type().is_socket() {
                        std::fs::remove_file(path)?;
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let listener = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(EitherListener::Unix(listener))
        }
    }
}
