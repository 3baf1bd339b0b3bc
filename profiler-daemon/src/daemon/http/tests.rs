//! The router driven without sockets over a fake [`Backend`](super::Backend): every
//! endpoint, every refusal (bad queries, foreign hosts, caps) and the answers' types.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, StatusCode};
use axum::Router;

use super::super::query::{Selection, Sources};
use super::super::test_api::{
    app, app_with, empty_store, get, get_method, json_of, profile, request,
};
use super::params::{MAX_QUERY, MAX_WINDOWS};
use super::*;

const RANGE: &str = "from=1795999990&to=1796000020";

#[tokio::test]
async fn stored_windows_answer_by_range_pid_and_name_in_every_format() {
    let (app, dir) = app("range", true);
    let (status, ctype, body) = get(&app, &format!("/api/v1/profile?{RANGE}&format=folded")).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "text/plain; charset=utf-8")
    );
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("app;main;hot 30") && text.contains("db;query 5"),
        "{text}"
    );
    let (_, _, body) = get(
        &app,
        &format!("/api/v1/profile?{RANGE}&format=folded&pid=2"),
    )
    .await;
    assert_eq!(String::from_utf8(body).unwrap().trim(), "db;query 5");
    let (_, _, body) = get(
        &app,
        &format!("/api/v1/profile?{RANGE}&format=folded&comm=%5Eap"),
    )
    .await;
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("db") && text.contains("hot 30"), "{text}");
    // Outside the range: nothing.
    let (_, _, body) = get(
        &app,
        "/api/v1/profile?from=1700000000&to=1700000001&format=folded",
    )
    .await;
    assert!(body.is_empty());
    let (_, ctype, body) = get(&app, &format!("/api/v1/profile?{RANGE}")).await;
    assert_eq!(ctype, "image/svg+xml");
    assert!(String::from_utf8(body).unwrap().contains("hot"));
    let (_, _, body) = get(&app, &format!("/api/v1/profile?{RANGE}&format=pprof")).await;
    let p = flamegraph_out::read_pprof(&body).unwrap();
    assert_eq!(p.total_samples(), 45);
    let (_, ctype, body) = get(&app, &format!("/api/v1/processes?{RANGE}")).await;
    assert_eq!(ctype, "application/json");
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list[0]["pid"], 1);
    assert_eq!(list[0]["comm"], "app");
    assert_eq!(list[0]["samples"], 40);
    assert_eq!(list[1]["comm"], "db");
    let (status, ctype, body) = get(&app, &format!("/?{RANGE}")).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "text/html; charset=utf-8")
    );
    assert!(String::from_utf8(body).unwrap().contains(">app<"));
    // A pid in the page's URL chooses its flamegraph: the table still lists every process.
    let (status, _, body) = get(&app, &format!("/?{RANGE}&pid=2&q=hot&group=1")).await;
    let html = String::from_utf8(body).unwrap();
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">app<") && html.contains(">db<"), "{html}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_scrape_answers_the_tap_as_gzipped_pprof() {
    let (app, dir) = app("scrape", true);
    let (status, ctype, body) = get(&app, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/octet-stream")
    );
    let p = flamegraph_out::decode_pprof(&body).unwrap();
    let names: Vec<&str> = p
        .sample_type
        .iter()
        .map(|t| p.string_table[t.r#type as usize].as_str())
        .collect();
    assert_eq!(names, ["samples", "cpu"]);
    assert!(p.duration_nanos >= 900_000_000, "{}", p.duration_nanos);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Mutated query strings (what any local user can send) never panic the router nor
/// get a 5xx other than a busy 503: a 4xx with one line, or an answer.
#[tokio::test]
async fn mutated_queries_get_an_answer_or_a_4xx() {
    use sprofd_tests::fuzz;
    let (app, dir) = app("fuzz", true);
    let seeds: [&[u8]; 6] = [
        b"/api/v1/profile?from=-1h&to=now&pid=42&comm=web.*&format=folded&view=mixed",
        b"/api/v1/processes?from=2026-12-01T03:00:00Z&to=-5m&format=json",
        b"/?from=-10m&comm=%5Bpy%5D&pid=3&q=hot&zoom=a%3Bb&compare=before&group=1",
        b"/api/v1/timeline?from=-1h&to=now&step=10s&by=comm&pid=1&comm=x",
        b"/api/v1/diff?from=-10m&base_from=-1h&base_to=-50m&format=json&view=mixed",
        // A valid scrape would wait its seconds: the seed is one mutation away from one.
        b"/debug/pprof/profile?seconds=0&pid=7",
    ];
    let mut rng = fuzz::Rng::new(7);
    for i in 0..fuzz::iterations(2000) {
        let raw = fuzz::mutate(&mut rng, seeds[i % seeds.len()]);
        // Whatever the bytes, a request line carries them percent-encoded.
        let mut uri = String::from("/");
        for &b in raw.iter().skip(1) {
            if b.is_ascii_alphanumeric() || b"/?&=-_.:%".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        if axum::http::Uri::try_from(uri.as_str()).is_err() {
            continue;
        }
        let (status, _, body) = get(&app, &uri).await;
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_timeline_gives_cpus_busy_by_process_and_by_name() {
    let (app, dir) = app("timeline", true);
    let range = "from=1796000000&to=1796000010";
    let (status, ctype, body) = get(&app, &format!("/api/v1/timeline?{range}&step=10")).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json")
    );
    let t = json_of(&body);
    assert_eq!(t["times"], serde_json::json!([1_796_000_000_000u64]));
    assert_eq!(t["step_ms"], 10_000);
    // app: 40 samples of 10 ms over the 10 s window, 0.04 CPUs; db: 5 samples.
    assert_eq!(t["series"][0]["key"], "1");
    assert_eq!(t["series"][0]["comm"], "app");
    assert!(
        (t["series"][0]["values"][0].as_f64().unwrap() - 0.04).abs() < 1e-9,
        "{t}"
    );
    assert!(
        (t["series"][1]["values"][0].as_f64().unwrap() - 0.005).abs() < 1e-9,
        "{t}"
    );
    assert!(
        (t["total"][0].as_f64().unwrap() - 0.045).abs() < 1e-9,
        "{t}"
    );
    // Finer steps than the window spread it evenly; by name; one process.
    let (_, _, body) = get(&app, &format!("/api/v1/timeline?{range}&step=5s&by=comm")).await;
    let t = json_of(&body);
    assert_eq!(t["series"][0]["key"], "app");
    assert_eq!(t["series"][0]["values"], serde_json::json!([0.04, 0.04]));
    let (_, _, body) = get(&app, &format!("/api/v1/timeline?{range}&pid=2")).await;
    let t = json_of(&body);
    assert_eq!(t["series"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t["series"][0]["comm"], "db");
    // The default step is the stored resolution.
    assert_eq!(t["step_ms"], 10_000);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_diff_of_two_ranges_shows_what_grew() {
    let (app, dir, fake) = app_with("diff", true, Duration::ZERO, Limits::default());
    // A second window where `hot` doubled.
    let mut grown = profile();
    grown.stacks[0].samples = 60;
    grown.stacks[0].period = 60 * 10_000_000;
    let start = UNIX_EPOCH + Duration::from_secs(1_796_000_010);
    fake.store
        .lock()
        .unwrap()
        .write(
            start,
            start + Duration::from_secs(10),
            &super::super::sampling::encode(&grown, start).unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    let range = "from=1796000011&to=1796000019&base_from=1796000001&base_to=1796000009";
    let (status, ctype, body) = get(&app, &format!("/api/v1/diff?{range}&format=json")).await;
    assert_eq!(
        (status, ctype.as_str()),
        (StatusCode::OK, "application/json")
    );
    let d = json_of(&body);
    assert_eq!(
        (d["before_samples"].as_u64(), d["after_samples"].as_u64()),
        (Some(45), Some(75))
    );
    let first = &d["changes"][0];
    assert!(first["name"] == "hot" || first["name"] == "cold", "{d}");
    let hot = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hot")
        .unwrap();
    assert!(hot["delta"].as_f64().unwrap() > 10.0, "{d}");
    let (_, _, body) = get(&app, &format!("/api/v1/diff?{range}&format=folded")).await;
    let text = String::from_utf8(body).unwrap();
    // Before scaled to the after total: 30 × 75/45 = 50.
    assert!(text.lines().any(|l| l == "app;main;hot 50 60"), "{text}");
    let (_, ctype, body) = get(&app, &format!("/api/v1/diff?{range}")).await;
    assert_eq!(ctype, "image/svg+xml");
    assert!(String::from_utf8(body).unwrap().contains("hot"));
    let (_, _, body) = get(&app, &format!("/api/v1/diff?{range}&format=txt")).await;
    assert!(String::from_utf8(body).unwrap().contains("hot"));
    // Without a base: the same length just before.
    let (_, _, body) = get(
        &app,
        "/api/v1/diff?from=1796000011&to=1796000019&format=json",
    )
    .await;
    let d = json_of(&body);
    assert_eq!(d["base_from_ms"], 1_796_000_003_000u64);
    assert_eq!(d["base_to_ms"], 1_796_000_011_000u64);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_one_line() {
    let (app, dir) = app("bad", false);
    for (uri, status) in [
        ("/healthz", StatusCode::SERVICE_UNAVAILABLE),
        ("/api/v1/profile?from=yesterday", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?from=now&to=-1h", StatusCode::BAD_REQUEST),
        (
            "/api/v1/profile?to=2026-13-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/profile?pid=-1", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?pid=99999999999", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?format=exe", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?view=weird", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?comm=%28", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?x=1", StatusCode::BAD_REQUEST),
        ("/api/v1/profile?from=-1h&from=-2h", StatusCode::BAD_REQUEST),
        ("/api/v1/processes?format=svg", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?step=0", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?step=50ms", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?step=abc", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?step=NaN", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?from=-1d&step=1", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?by=thread", StatusCode::BAD_REQUEST),
        ("/api/v1/timeline?format=svg", StatusCode::BAD_REQUEST),
        ("/api/v1/diff?base_from=-2h", StatusCode::BAD_REQUEST),
        (
            "/api/v1/diff?base_from=x&base_to=now",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/diff?format=pprof", StatusCode::BAD_REQUEST),
        ("/api/v1/diff?pid=0", StatusCode::BAD_REQUEST),
        ("/?view=raw", StatusCode::BAD_REQUEST),
        ("/?by=thread", StatusCode::BAD_REQUEST),
        ("/?zzz=1", StatusCode::BAD_REQUEST),
        ("/debug/pprof/profile?seconds=0", StatusCode::BAD_REQUEST),
        ("/debug/pprof/profile?seconds=1000", StatusCode::BAD_REQUEST),
        ("/debug/pprof/profile?seconds=1.5", StatusCode::BAD_REQUEST),
        ("/..%2f..%2fetc/passwd", StatusCode::NOT_FOUND),
        ("/api/v2/profile", StatusCode::NOT_FOUND),
    ] {
        let (got, ctype, body) = get(&app, uri).await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(got, status, "{uri}: {text}");
        assert_eq!(ctype, "text/plain; charset=utf-8", "{uri}");
        assert!(
            text.starts_with("error: ") && text.matches('\n').count() == 1,
            "{uri}: {text:?}"
        );
    }
    let long = format!("/api/v1/profile?comm={}", "x".repeat(MAX_QUERY));
    assert_eq!(get(&app, &long).await.0, StatusCode::URI_TOO_LONG);
    for method in ["POST", "PUT", "DELETE"] {
        let (got, _, body) = get_method(&app, method, "/api/v1/profile").await;
        assert_eq!(
            got,
            StatusCode::METHOD_NOT_ALLOWED,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn concurrent_queries_are_all_answered() {
    let (app, dir) = app("concurrent", true);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let uri = match i % 3 {
            0 => format!("/api/v1/profile?{RANGE}&format=folded"),
            1 => format!("/api/v1/processes?{RANGE}"),
            _ => "/debug/pprof/profile?seconds=1".to_string(),
        };
        tasks.push(tokio::spawn(async move { get(&app, &uri).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn only_addresses_and_localhost_are_answered_and_nothing_is_sniffed() {
    let (app, dir) = app("host", true);
    for host in [
        Some("127.0.0.1:7171"),
        Some("localhost:7171"),
        Some("LOCALHOST"),
        Some("[::1]:7171"),
        Some("10.1.2.3:9000"),
        None,
    ] {
        let (status, headers, _) = request(&app, "GET", "/healthz", host).await;
        assert_eq!(status, StatusCode::OK, "{host:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{host:?}");
    }
    for host in [
        "evil.example",
        "evil.example:7171",
        "127.0.0.1.nip.io:7171",
        "localhost.evil.example",
        "[::1]x",
        "127.0.0.1:abc",
        "",
    ] {
        let (status, headers, body) = request(&app, "GET", "/api/v1/processes", Some(host)).await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host:?}: {text}");
        assert!(
            text.starts_with("error: Host ") && text.matches('\n').count() == 1,
            "{text:?}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    // An absolute URI names a host too.
    let (status, _, _) = request(
        &app,
        "GET",
        "http://evil.example/healthz",
        Some("127.0.0.1:7171"),
    )
    .await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    // The page's icon is there (a 404 would be a console error on every visit).
    for icon in ["/favicon.ico", "/favicon.svg"] {
        let (status, headers, body) = request(&app, "GET", icon, Some("localhost")).await;
        assert_eq!(status, StatusCode::OK, "{icon}");
        assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
        assert!(String::from_utf8(body).unwrap().starts_with("<svg"));
    }
    // Every answer carries nosniff: errors, pages, data.
    for uri in [
        "/",
        "/nope",
        "/metrics",
        "/api/v1/profile?format=speedscope&comm=%3C%2Ftitle%3E",
    ] {
        let (_, headers, _) = request(&app, "GET", uri, Some("localhost")).await;
        assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn healthz_says_why_sampling_is_unhealthy() {
    let (app, dir) = app("health", false);
    let (status, headers, body) = request(&app, "GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "error: the sampling loop has not turned for 2.5 s\n"
    );
    assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn scrapes_beyond_the_cap_get_503_with_retry_after() {
    let limits = Limits {
        taps: 3,
        ..Limits::default()
    };
    let (app, dir, fake) = app_with("taps", true, Duration::ZERO, limits);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            request(&app, "GET", "/debug/pprof/profile?seconds=1", None).await
        }));
    }
    let mut by_status: HashMap<StatusCode, usize> = HashMap::new();
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        *by_status.entry(status).or_default() += 1;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains("3 scrapes are already running"), "{text}");
        }
    }
    assert_eq!(by_status[&StatusCode::OK], 3, "{by_status:?}");
    assert_eq!(
        by_status[&StatusCode::SERVICE_UNAVAILABLE],
        5,
        "{by_status:?}"
    );
    assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 5);
    // Permits come back when scrapes end.
    let (status, _, _) = request(&app, "GET", "/debug/pprof/profile?seconds=1", None).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The review's follow-up to D5: many short queries at once are capped too.
#[tokio::test]
async fn queries_beyond_the_cap_on_all_queries_get_503() {
    let limits = Limits {
        queries: 1,
        ..Limits::default()
    };
    let (app, dir, fake) = app_with("queries", true, Duration::from_millis(400), limits);
    let uri = "/api/v1/processes?from=1700000000&to=1700000001";
    one_of_three_answered(&app, uri, "range queries are already running").await;
    assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The timeline goes through the same cap (its summaries are read on the blocking pool).
#[tokio::test]
async fn timelines_beyond_the_cap_on_all_queries_get_503() {
    let limits = Limits {
        queries: 1,
        ..Limits::default()
    };
    let (app, dir, fake) = app_with("tl-cap", true, Duration::from_millis(400), limits);
    let uri = format!("/api/v1/timeline?{RANGE}");
    one_of_three_answered(&app, &uri, "range queries are already running").await;
    assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Sends `uri` three times at once: one is answered, two get 503 with `Retry-After` and
/// a line containing `why`.
async fn one_of_three_answered(app: &Router, uri: &str, why: &str) {
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (app, uri) = (app.clone(), uri.to_string());
        tasks.push(tokio::spawn(async move {
            request(&app, "GET", &uri, None).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER);
            let text = String::from_utf8(body).unwrap();
            assert!(text.contains(why), "{text}");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
    );
}

#[tokio::test]
async fn long_range_queries_beyond_the_cap_get_503_and_short_ones_do_not_count() {
    let limits = Limits {
        long_queries: 1,
        long_windows: 0,
        ..Limits::default()
    };
    let (app, dir, fake) = app_with("long", true, Duration::from_millis(600), limits);
    let uri = format!("/api/v1/profile?{RANGE}&format=folded");
    one_of_three_answered(&app, &uri, "long range queries").await;
    assert_eq!(fake.busy.load(std::sync::atomic::Ordering::SeqCst), 2);
    // A range with no stored window is not long: never refused.
    let (app, dir2, _) = app_with(
        "short",
        true,
        Duration::from_millis(300),
        Limits {
            long_queries: 1,
            ..Limits::default()
        },
    );
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            request(
                &app,
                "GET",
                "/api/v1/processes?from=1700000000&to=1700000001",
                None,
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(dir2).unwrap();
}

#[test]
fn a_query_over_too_many_bytes_is_refused() {
    let (dir, mut store, start) = empty_store("bytes");
    store
        .write(
            start,
            start + Duration::from_secs(10),
            &[0u8; 4096],
            SystemTime::now(),
        )
        .unwrap();
    let sel = Selection {
        from_ms: 0,
        to_ms: u64::MAX,
        ..Default::default()
    };
    let e = Sources::gather(&store, Vec::new(), &sel, MAX_WINDOWS, 1024)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("MiB of stored windows"), "{e}");
    assert!(Sources::gather(&store, Vec::new(), &sel, MAX_WINDOWS, 4096).is_ok());
    std::fs::remove_dir_all(dir).unwrap();
}
