//! A sampling thread that dies, seen from the HTTP side and from the daemon's exit: without
//! root or perf, the thread is the daemon's own (`sampling::spawn_thread`) with a body that
//! panics.

use super::*;
use axum::body::{to_bytes, Body};
use axum::http::{header, Request};
use tower::ServiceExt;

/// A fresh store in a temporary directory (removed with the returned guard).
fn store() -> (tempfile::TempDir, WindowStore) {
    let dir = tempfile::tempdir().unwrap();
    let retention = sprof_store::Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 20,
    };
    let (store, _) = WindowStore::open(&dir.path().join("data"), retention).unwrap();
    (dir, store)
}

async fn healthz(app: &axum::Router) -> (StatusCode, String) {
    let req = Request::builder()
        .uri("/healthz")
        .header(header::HOST, "127.0.0.1:7171")
        .body(Body::empty())
        .unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let body = to_bytes(r.into_body(), 1 << 16).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A sampling thread that starts, then panics when told to.
fn doomed_thread(
    shared: &Arc<Shared>,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (die, told) = std::sync::mpsc::channel::<()>();
    let thread = sampling::spawn_thread(shared.clone(), move |_| {
        let _ = told.recv();
        panic!("the sampling thread dies (a test)");
    })
    .unwrap();
    (die, thread)
}

/// /healthz answers 503 within a second of the sampling thread's death (it answered `ok`
/// until the watchdog fired, before the thread marked itself ended), and the daemon's exit
/// code is then 1.
#[tokio::test]
async fn healthz_answers_503_within_a_second_of_the_sampling_thread_dying() {
    let (_dir, store) = store();
    let (shared, _rx) = Shared::new(store);
    let backend = Arc::new(DaemonBackend {
        shared: shared.clone(),
        running: AtomicBool::new(true),
    });
    let (_tx, shutdown) = watch::channel(false);
    let app = http::router_with(backend, shutdown, http::Limits::default(), Arc::default());
    let (die, thread) = doomed_thread(&shared);
    assert_eq!(healthz(&app).await, (StatusCode::OK, "ok\n".into()));
    die.send(()).unwrap();
    let died = Instant::now();
    let (status, body) = loop {
        let (status, body) = healthz(&app).await;
        if status != StatusCode::OK || died.elapsed() > Duration::from_secs(1) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("sampling thread has ended"), "{body}");
    assert!(
        died.elapsed() < Duration::from_secs(1),
        "{:?}",
        died.elapsed()
    );
    assert_eq!(wind_down(Stopped::SamplerEnded, &shared, thread), 1);
}

/// The HTTP side stops serving once the sampling thread is dead, as a stop caused by it
/// (which `run` turns into exit code 1), within a second.
#[test]
fn the_server_stops_within_a_second_of_the_sampling_thread_dying() {
    let (_dir, store) = store();
    let (shared, _rx) = Shared::new(store);
    let backend = Arc::new(DaemonBackend {
        shared: shared.clone(),
        running: AtomicBool::new(true),
    });
    let settings = FileSettings {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let config = DaemonConfig::resolve(settings, None, None).unwrap();
    let listener = Bound::bind(&config).unwrap();
    let (die, thread) = doomed_thread(&shared);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let died = std::cell::Cell::new(None);
    let stopped = runtime.block_on(serve(listener, backend, &config, || {
        die.send(()).unwrap();
        died.set(Some(Instant::now()));
    }));
    let took = died.get().unwrap().elapsed();
    assert_eq!(stopped.unwrap(), Stopped::SamplerEnded);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(wind_down(Stopped::SamplerEnded, &shared, thread), 1);
}
