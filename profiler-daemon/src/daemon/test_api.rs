//! What the router's tests share: a fake [`Backend`] over a store holding one window of two
//! processes (`app`, pid 1, and `db`, pid 2), and requests through `tower::ServiceExt`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use sprof_core::{Frame, FrameKind, ProfileMeta, SampledStack, SymbolizedProfile, ThreadRef};
use sprof_store::{Retention, WindowStore};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

use super::http::{router_with, Backend, Limits};
use super::query::{QueryError, Selection, Sources, Viewer};
use super::rss::{ProcessRss, RssPoint, Target};
use super::sampling::StackFilter;

/// Two processes: 1 (`app`: main -> hot 30, main -> cold 10) and 2 (`db`: query 5).
pub fn profile() -> SymbolizedProfile {
    let f = |name: &str, kind| {
        let mut f = Frame::bare(name, kind);
        if kind == FrameKind::Native {
            f.module = Some("app".into());
            f.file = Some("app.c".into());
            f.line = Some(3);
        }
        f
    };
    let frames = vec![
        f("app", FrameKind::Root),
        f("main", FrameKind::Native),
        f("hot", FrameKind::Native),
        f("cold", FrameKind::Native),
        f("db", FrameKind::Root),
        f("query", FrameKind::Native),
    ];
    let stack = |frames: Vec<u32>, samples: u64, pid: u32| SampledStack {
        thread: Some(ThreadRef { pid, tid: pid }),
        ..sprof_testkit::stack(&frames, samples, samples * 10_000_000)
    };
    SymbolizedProfile {
        meta: ProfileMeta {
            frequency: 100,
            ..Default::default()
        },
        frames,
        stacks: vec![
            stack(vec![0, 1, 2], 30, 1),
            stack(vec![0, 1, 3], 10, 1),
            stack(vec![4, 5], 5, 2),
        ],
        ..Default::default()
    }
}

pub struct Fake {
    pub store: Mutex<WindowStore>,
    pub healthy: bool,
    /// How long moving a corrupt window aside takes: the part of a query that runs
    /// holding its permit (a long merge) in these tests.
    pub slow: Duration,
    pub busy: std::sync::atomic::AtomicUsize,
    /// The memory reader's last round, for `/metrics`.
    pub latest: Mutex<Vec<(Target, RssPoint)>>,
}

impl Backend for Fake {
    fn health(&self) -> Result<(), String> {
        if self.healthy {
            Ok(())
        } else {
            Err("the sampling loop has not turned for 2.5 s".into())
        }
    }
    fn sources(
        &self,
        sel: &Selection,
        max_windows: usize,
        max_bytes: u64,
    ) -> Result<Sources, QueryError> {
        Sources::gather(
            &self.store.lock().unwrap(),
            Vec::new(),
            sel,
            max_windows,
            max_bytes,
        )
    }
    fn count_busy(&self) {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn quarantine(&self, path: &std::path::Path, reason: &str) {
        std::thread::sleep(self.slow);
        self.store.lock().unwrap().quarantine(path, reason);
    }
    fn open_tap(&self, _keep: StackFilter) -> Option<oneshot::Receiver<u64>> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(7);
        Some(rx)
    }
    fn close_tap(&self, id: u64) -> Option<oneshot::Receiver<SymbolizedProfile>> {
        assert_eq!(id, 7);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(profile());
        Some(rx)
    }
    fn metrics(&self) -> String {
        "# EOF\n".into()
    }
    fn process_metrics(&self, viewer: Viewer) -> String {
        super::memory::exposition(&self.latest.lock().unwrap(), viewer)
    }
    fn describe(&self) -> String {
        "test".into()
    }
    fn count(&self, _: StatusCode) {}
}

pub fn app(name: &str, healthy: bool) -> (Router, std::path::PathBuf) {
    let (app, dir, _) = app_with(name, healthy, Duration::ZERO, Limits::default());
    (app, dir)
}

/// A fresh store under a temporary directory, and the start of its first window.
pub fn empty_store(name: &str) -> (std::path::PathBuf, WindowStore, SystemTime) {
    let dir = std::env::temp_dir().join(format!("sprofd-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let retention = Retention {
        max_age: Duration::from_secs(86400 * 365 * 100),
        max_bytes: 1 << 30,
    };
    let (store, _) = WindowStore::open(&dir, retention).unwrap();
    (dir, store, UNIX_EPOCH + Duration::from_secs(1_796_000_000))
}

pub fn app_with(
    name: &str,
    healthy: bool,
    slow: Duration,
    limits: Limits,
) -> (Router, std::path::PathBuf, Arc<Fake>) {
    app_with_rss(name, healthy, slow, limits, &[])
}

/// [`app_with`], its window carrying `rss` (see [`super::rss_window`]).
pub fn app_with_rss(
    name: &str,
    healthy: bool,
    slow: Duration,
    limits: Limits,
    rss: &[ProcessRss],
) -> (Router, std::path::PathBuf, Arc<Fake>) {
    let (dir, mut store, start) = empty_store(name);
    let mut bytes = super::sampling::encode(&profile(), start).unwrap();
    bytes.extend(super::rss_window::encode(rss));
    store
        .write(
            start,
            start + Duration::from_secs(10),
            &bytes,
            SystemTime::now(),
        )
        .unwrap();
    if !slow.is_zero() {
        let next = start + Duration::from_secs(10);
        store
            .write(
                next,
                next + Duration::from_secs(10),
                b"garbage",
                SystemTime::now(),
            )
            .unwrap();
    }
    let backend = Arc::new(Fake {
        store: Mutex::new(store),
        healthy,
        slow,
        busy: Default::default(),
        latest: Mutex::default(),
    });
    let (_tx, rx) = watch::channel(false);
    (
        router_with(backend.clone(), rx, limits, Arc::default()),
        dir,
        backend,
    )
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    get_method(app, "GET", uri).await
}

pub async fn get_method(app: &Router, method: &str, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let (status, headers, body) = request(app, method, uri, Some("127.0.0.1:7171")).await;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, body)
}

pub async fn request(
    app: &Router,
    method: &str,
    uri: &str,
    host: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        req = req.header(header::HOST, host);
    }
    let r = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = to_bytes(r.into_body(), 1 << 24).await.unwrap().to_vec();
    (status, headers, body)
}

pub fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}
