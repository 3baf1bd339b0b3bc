//! The HTTP server loop: accepts connections and serves the router on each, with the limits
//! a daemon that any local user can reach needs, which `axum::serve` does not have.
//!
//! * At most [`ServerLimits::connections`] connections at once. When a new one arrives at the
//!   cap, the connection that has been idle longest (no request in progress: an idle
//!   keep-alive, or a client still trickling its headers) is closed to make room; if every
//!   connection has a request in progress, the new one is closed at once. So a flood of idle
//!   or slow sockets can neither exhaust the daemon's file descriptors nor keep a health
//!   check out.
//! * A connection without a request in progress for [`ServerLimits::idle`] is closed: this is
//!   the header-read timeout (a request is in progress only once its headers are complete)
//!   and the keep-alive timeout at once. hyper's own header-read timeout is set too.
//! * Who is asking: under [`Visibility::Own`] each connection's peer is identified
//!   ([`Peer`]) and its requests carry the [`Viewer`] it may be.
//! * Shutdown: connections are asked to finish (idle ones close at once); those that have not
//!   within the grace period are dropped, slow clients included.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

use super::query::Viewer;
use super::visibility::{self, Visibility};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// How many connections, and how long without a request.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub connections: usize,
    pub idle: Duration,
    /// How long connections get to finish at shutdown.
    pub grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            // Far below systemd's default soft limit of 1024 file descriptors, which the
            // sampler's per-CPU events, the store and the symbolizer's files share.
            connections: 256,
            idle: Duration::from_secs(10),
            grace: Duration::from_millis(500),
        }
    }
}

/// The server's metrics (handles onto the daemon's registry).
#[derive(Clone, Default)]
pub struct ConnMetrics {
    pub open: Gauge,
    pub refused: Counter,
    pub closed_idle: Counter,
}

/// One open connection, as the accept loop sees it.
struct Conn {
    opened: Instant,
    /// Requests in progress on it, and when the last one ended.
    activity: Arc<Activity>,
    /// Closes it (dropping the sender does too).
    close: oneshot::Sender<()>,
}

struct Activity {
    in_progress: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Activity {
    /// Since when the connection has had no request in progress; `None` if it has one.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_progress.load(Ordering::SeqCst) == 0)
            .then(|| *self.last_end.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Marks a request in progress until dropped (answered, or abandoned with its connection).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn new(a: &Arc<Activity>) -> InProgress {
        a.in_progress.fetch_add(1, Ordering::SeqCst);
        InProgress(a.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_progress.fetch_sub(1, Ordering::SeqCst);
    }
}

type Conns = Arc<Mutex<HashMap<u64, Conn>>>;

/// How a connection's peer is identified, for [`Visibility`].
pub trait Peer {
    /// The peer's uid, when it can be known.
    fn peer_uid(&self) -> Option<u32>;
}

impl Peer for tokio::net::UnixStream {
    fn peer_uid(&self) -> Option<u32> {
        self.peer_cred().ok().map(|c| c.uid())
    }
}

impl Peer for tokio::net::TcpStream {
    /// The owner of the client's socket: known for loopback clients (the same network
    /// namespace's `/proc/net/tcp`).
    fn peer_uid(&self) -> Option<u32> {
        visibility::tcp_peer_uid(self.peer_addr().ok()?, self.local_addr().ok()?)
    }
}

/// Serves `app` on `listener` until `stop` resolves, then lets connections finish for
/// `limits.grace` and returns.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    limits: ServerLimits,
    visibility: Visibility,
    metrics: ConnMetrics,
    stop: impl Future<Output = ()>,
) where
    L::Io: Peer,
{
    let conns: Conns = Arc::new(Mutex::new(HashMap::new()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut next_id = 0u64;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, _addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        // Looked up only when it matters: a /proc/net/tcp read per connection.
        let viewer = match visibility {
            Visibility::Host => Viewer::All,
            Visibility::Own { .. } => visibility.viewer(io.peer_uid()),
        };
        if !make_room(&conns, limits.connections, &metrics) {
            // Every connection is busy with a request: this one is closed unanswered.
            metrics.refused.inc();
            drop(io);
            continue;
        }
        next_id += 1;
        let id = next_id;
        let activity = Arc::new(Activity {
            in_progress: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        });
        let (close_tx, close_rx) = oneshot::channel();
        {
            let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
            c.insert(
                id,
                Conn {
                    opened: Instant::now(),
                    activity: activity.clone(),
                    close: close_tx,
                },
            );
            metrics.open.set(c.len() as i64);
        }
        tokio::spawn(connection(
            io,
            app.clone(),
            viewer,
            activity,
            close_rx,
            shutdown_rx.clone(),
            limits.idle,
            ConnGuard {
                id,
                conns: conns.clone(),
                metrics: metrics.clone(),
            },
        ));
    }
    // No more connections; those open finish what they are doing, or are dropped.
    drop(listener);
    let _ = shutdown_tx.send(true);
    let deadline = Instant::now() + limits.grace;
    while Instant::now() < deadline && !conns.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Below the cap, or made so by closing the connection idle longest: whether a new one fits.
fn make_room(conns: &Conns, cap: usize, m: &ConnMetrics) -> bool {
    let mut c = conns.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() < cap {
        return true;
    }
    let idlest = c
        .iter()
        .filter_map(|(&id, conn)| Some((conn.activity.idle_since()?, conn.opened, id)))
        .min()
        .map(|(_, _, id)| id);
    match idlest {
        Some(id) => {
            if let Some(conn) = c.remove(&id) {
                let _ = conn.close.send(());
            }
            m.closed_idle.inc();
            true
        }
        None => false,
    }
}

/// Takes a connection off the list when its task ends.
struct ConnGuard {
    id: u64,
    conns: Conns,
    metrics: ConnMetrics,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        c.remove(&self.id);
        self.metrics.open.set(c.len() as i64);
    }
}

/// Serves one connection until it ends, is closed to make room, idles past `idle`, or the
/// server shuts down.
#[allow(clippy::too_many_arguments)]
async fn connection<I>(
    io: I,
    app: Router,
    viewer: Viewer,
    activity: Arc<Activity>,
    mut close: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
    idle: Duration,
    guard: ConnGuard,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let in_service = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let busy = InProgress::new(&in_service);
        let app = app.clone();
        async move {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(viewer);
            let response = app.oneshot(req).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut check = tokio::time::interval(idle.min(Duration::from_secs(1)));
    let mut shutting_down = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                // hyper's own header-read timeout got there first.
                if done.is_err_and(|e| e.is_timeout()) {
                    guard.metrics.closed_idle.inc();
                }
                break;
            }
            _ = &mut close => break,
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = check.tick() => {
                if activity.idle_since().is_some_and(|t| t.elapsed() >= idle) {
                    guard.metrics.closed_idle.inc();
                    break;
                }
            }
        }
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use axum::routing::get;

    use super::*;

    /// A server on a free loopback port with `limits`, a `/slow` route that takes 600 ms.
    async fn start(limits: ServerLimits) -> (String, ConnMetrics, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = Router::new().route("/", get(|| async { "ok\n" })).route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "slow\n"
            }),
        );
        let metrics = ConnMetrics::default();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            Visibility::Host,
            metrics.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        (addr, metrics, stop_tx)
    }

    /// GET over a blocking socket, on the blocking pool: the answer, or "" if the server
    /// closed the connection without one.
    async fn fetch(addr: &str, path: &str) -> String {
        let (addr, path) = (addr.to_string(), path.to_string());
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out
        })
        .await
        .unwrap()
    }

    /// Whether the server has closed `s` (read returns end of file or an error).
    fn closed(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_makes_room_and_busy_ones_are_kept() {
        let limits = ServerLimits {
            connections: 3,
            idle: Duration::from_secs(30),
            grace: Duration::from_millis(100),
        };
        let (addr, m, _stop) = start(limits).await;
        // Three idle sockets fill the server.
        let mut idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.open.get(), 3);
        // A request still gets in: the oldest idle socket is closed for it.
        assert!(fetch(&addr, "/").await.ends_with("ok\n"));
        assert!(closed(&mut idle[0]), "the oldest idle connection was kept");
        assert!(!closed(&mut idle[2]), "a newer idle connection was closed");
        assert!(m.closed_idle.get() >= 1);
        // Three requests in progress: a fourth connection is closed unanswered.
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move { fetch(&addr, "/slow").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fetch(&addr, "/").await, "");
        assert_eq!(m.refused.get(), 1);
        for s in slow {
            assert!(s.await.unwrap().ends_with("slow\n"));
        }
    }

    #[tokio::test]
    async fn connections_without_a_request_are_closed_after_the_idle_timeout() {
        let limits = ServerLimits {
            connections: 16,
            idle: Duration::from_millis(300),
            grace: Duration::from_millis(100),
        };
        let (addr, m, stop) = start(limits).await;
        let mut silent = TcpStream::connect(&addr).unwrap();
        let mut trickle = TcpStream::connect(&addr).unwrap();
        trickle
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .unwrap();
        // A request in progress longer than the timeout is not cut.
        let slow = {
            let addr = addr.clone();
            tokio::spawn(async move { fetch(&addr, "/slow").await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            closed(&mut silent),
            "a silent connection outlived the timeout"
        );
        let _ = trickle.write_all(b"X-Slow: 1\r\n");
        assert!(
            closed(&mut trickle),
            "unfinished headers outlived the timeout"
        );
        assert!(slow.await.unwrap().ends_with("slow\n"));
        assert!(m.closed_idle.get() >= 2);
        // Shutdown drops what is left within the grace period.
        let mut last = TcpStream::connect(&addr).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(closed(&mut last));
    }
}
