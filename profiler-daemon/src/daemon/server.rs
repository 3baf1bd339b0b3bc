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

/// Serves `app` on `listener` until `stop` resolves, then lets connections finish for
/// `limits.grace` and returns.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    limits: ServerLimits,
    metrics: ConnMetrics,
    stop: impl Future<Output = ()>,
) {
    let conns: Conns = Arc::new(Mutex::new(HashMap::new()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut next_id = 0u64;
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, _addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
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
async fn connection<I>(
    io: I,
    app: Router,
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
            let response = app.oneshot(req.map(Body::new)).await;
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
            _ = conn.as_mut() => break,
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
