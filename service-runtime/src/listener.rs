//! Listeners that hold up against clients that misbehave: a bound on the connections open at once
//! (beyond it a new connection is closed at once, and counted), a read deadline that closes a
//! connection from which nothing arrived for the idle timeout (one that never sends a byte
//! included), and accept errors (out of file descriptors and kin) backed off and logged once a
//! while instead of retried in a busy loop.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::register;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// Connections open at once; a further one is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A connection from which nothing arrived for this long is closed.
    pub idle_timeout: Duration,
}

/// The first accept error after a success waits this long; each further one twice as long.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A kind of trouble (refusals, accept errors) is logged at most once in this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// Every listener's connection figures, by listener name.
#[derive(Clone, Default)]
pub struct ListenerMetrics {
    open: Family<ListenerLabel, Gauge>,
    refused: Family<ListenerLabel, Counter>,
    idle_closed: Family<ListenerLabel, Counter>,
    accept_errors: Family<ListenerLabel, Counter>,
}

impl ListenerMetrics {
    /// Registers the figures as `{prefix}_connections_open`, `..._refused`, `..._idle_closed`
    /// and `{prefix}_accept_errors`.
    #[rustfmt::skip]
    pub fn register(r: &mut Registry, prefix: &str) -> Self {
        let name = |suffix: &str| format!("{prefix}_{suffix}");
        Self {
            open: register(r, &name("connections_open"), "Connections open now, by listener."),
            refused: register(r, &name("connections_refused"), "Connections closed at once because the listener had as many open as it allows."),
            idle_closed: register(r, &name("connections_idle_closed"), "Connections closed because nothing arrived from the client for the idle timeout."),
            accept_errors: register(r, &name("accept_errors"), "Failed accepts (out of file descriptors and kin), each followed by a pause."),
        }
    }
}

/// Logs one kind of trouble at most once per [`LOG_EVERY`], with how often it happened between.
struct Every {
    last: Option<Instant>,
    since: u64,
}

impl Every {
    fn new() -> Self {
        Self {
            last: None,
            since: 0,
        }
    }

    /// How many times it happened since the last line, if a line is due now.
    fn due(&mut self) -> Option<u64> {
        self.since += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

struct Accepting {
    listener: TcpListener,
    name: &'static str,
    guard: Guard,
    slots: Arc<Semaphore>,
    metrics: ListenerMetrics,
    backoff: Duration,
    refusals: Every,
    failures: Every,
}

/// The connections `listener` accepts, under `guard`, as a stream (what tonic's
/// `serve_with_incoming` takes, and what [`Connections::next`] walks).
pub fn incoming(
    listener: TcpListener,
    name: &'static str,
    guard: Guard,
    metrics: ListenerMetrics,
) -> impl Stream<Item = io::Result<Connection>> + Send {
    let state = Accepting {
        slots: Arc::new(Semaphore::new(guard.max_connections.max(1))),
        listener,
        name,
        guard,
        metrics,
        backoff: BACKOFF_FIRST,
        refusals: Every::new(),
        failures: Every::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        let connection = state.next().await;
        Some((Ok(connection), state))
    })
}

impl Accepting {
    async fn next(&mut self) -> Connection {
        let label = ListenerLabel {
            listener: self.name,
        };
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if per_connection(&e) => continue,
                Err(e) => {
                    self.metrics.accept_errors.get_or_create(&label).inc();
                    if let Some(times) = self.failures.due() {
                        tracing::warn!(listener = self.name, error = %e, times, pause_ms = self.backoff.as_millis() as u64, "cannot accept connections; pausing (times: since the last such line)");
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.backoff = BACKOFF_FIRST;
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.refused.get_or_create(&label).inc();
                if let Some(times) = self.refusals.due() {
                    tracing::warn!(listener = self.name, max_connections = self.guard.max_connections, times, "connection refused: as many open as allowed (times: since the last such line)");
                }
                continue;
            };
            // Replies are small and written at once: Nagle's algorithm would hold them back for
            // the peer's delayed ACK.
            let _ = stream.set_nodelay(true);
            let open = self.metrics.open.get_or_create(&label).clone();
            open.inc();
            return Connection {
                stream,
                _slot: slot,
                open,
                idle_closed: self.metrics.idle_closed.get_or_create(&label).clone(),
                idle_timeout: self.guard.idle_timeout,
                deadline: Box::pin(tokio::time::sleep(self.guard.idle_timeout)),
            };
        }
    }
}

/// Errors of one connection that ended before it was accepted: the next accept is fine.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// An accepted connection: holds its listener's slot until dropped, and fails a read once nothing
/// arrived for the idle timeout, which ends the connection.
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    open: Gauge,
    idle_closed: Counter,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// What tonic's services may ask of a connection (the peer's address).
impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + this.idle_timeout;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.idle_closed.inc();
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nothing arrived for the idle timeout",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// File descriptors this process may open (its soft limit), if the system says.
pub fn descriptor_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listening(
        guard: Guard,
    ) -> (
        std::net::SocketAddr,
        impl Stream<Item = io::Result<Connection>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (
            addr,
            incoming(listener, "test", guard, ListenerMetrics::default()),
        )
    }

    #[tokio::test]
    async fn a_connection_beyond_the_bound_is_closed_and_a_freed_slot_is_taken_again() {
        let guard = Guard {
            max_connections: 1,
            idle_timeout: Duration::from_secs(60),
        };
        let (addr, incoming) = listening(guard).await;
        let mut incoming = Box::pin(incoming);
        let _first_client = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn(async move {
            let next = incoming.next().await.unwrap().unwrap();
            (incoming, next)
        });
        // Accepted, then closed at once: the client reads the end of the stream.
        let mut byte = [0_u8; 1];
        assert_eq!(refused.read(&mut byte).await.unwrap(), 0);
        drop(first);
        let mut third = TcpStream::connect(addr).await.unwrap();
        let (_incoming, mut served) = accepting.await.unwrap();
        third.write_all(b"x").await.unwrap();
        served.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_fails_its_read_after_the_idle_timeout_and_a_talking_one_does_not()
    {
        let guard = Guard {
            max_connections: 4,
            idle_timeout: Duration::from_secs(5),
        };
        let (addr, incoming) = listening(guard).await;
        let mut incoming = Box::pin(incoming);
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut served = incoming.next().await.unwrap().unwrap();
        let mut byte = [0_u8; 1];
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(4)).await;
            client.write_all(b"y").await.unwrap();
            served.read_exact(&mut byte).await.unwrap();
        }
        let silent = served.read(&mut byte).await.unwrap_err();
        assert_eq!(silent.kind(), io::ErrorKind::TimedOut);
    }
}
