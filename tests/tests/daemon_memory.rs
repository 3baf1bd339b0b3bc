//! The daemon's record of each process's resident memory, end to end: a fixture whose RSS
//! grows to 150 MiB under a host-wide daemon. Its series in `/api/v1/processes` must peak
//! within 10% of the fixture's own `ru_maxrss`, live and after a restart (read back from the
//! stored windows); the memory timeline and `/metrics` must say the same, and a stored
//! window carrying the series must still read as a pprof in `go tool pprof`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sprofd_tests::daemon::*;
use sprofd_tests::*;

const MIB: f64 = 1048576.0;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn json(r: &Response) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn total(p: &serde_json::Value) -> f64 {
    ["anon", "file", "shmem"]
        .iter()
        .map(|k| p[k].as_f64().unwrap_or_else(|| panic!("no {k} in {p}")))
        .sum()
}

/// The fixture's memory as `/api/v1/processes` gives it: checks the series' shape and
/// returns its peak (bytes) and the time of the peak (unix ms).
fn series_peak(d: &Daemon, from: u64, pid: u32, maxrss: f64, when: &str) -> (f64, u64) {
    let list = json(&d.get(&format!("/api/v1/processes?from={from}&to=now&pid={pid}")));
    let p = &list[0];
    assert_eq!(p["pid"], pid, "{when}: {list}");
    let rss = &p["rss"];
    assert!(rss.is_object(), "{when}: no rss for the fixture: {p}");
    let peak = total(&rss["peak"]);
    eprintln!(
        "{when}: peak {:.1} MiB, ru_maxrss {:.1} MiB, {} points",
        peak / MIB,
        maxrss / MIB,
        rss["times"].as_array().unwrap().len()
    );
    assert!(
        (peak - maxrss).abs() <= 0.10 * maxrss,
        "{when}: peak {:.1} MiB against ru_maxrss {:.1} MiB: {rss}",
        peak / MIB,
        maxrss / MIB
    );
    let times: Vec<u64> = rss["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert!(times.len() >= 3, "{when}: {rss}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{when}: {times:?}");
    // It grew: the first reading is well below the peak, and each column is as long as times.
    let first = ["anon", "file", "shmem"]
        .iter()
        .map(|k| {
            let col = rss[k].as_array().unwrap();
            assert_eq!(col.len(), times.len(), "{when}: {k}");
            col[0].as_f64().unwrap()
        })
        .sum::<f64>();
    assert!(first < 0.8 * peak, "{when}: first {first}, peak {peak}");
    assert!(total(&rss["latest"]) > 0.0);
    (peak, rss["peak"]["t_ms"].as_u64().unwrap())
}

#[live_test]
fn daemon_records_each_process_rss_over_time() {
    let _serial = serial();
    let dir = TempDir::new("daemon-memory");
    let data = dir.join("data");
    let args = ["-F", "99", "--window", "2"];
    let d = Daemon::start(&data, &args);
    // The daemon's first slices name what was running when it started (this test binary's
    // DWARF among it): on a loaded CI host that took seconds, the first memory reading came
    // after the fixture had grown, and the series was flat. Start the fixture once a slice
    // has been cut.
    let warm = std::time::Instant::now() + Duration::from_secs(20);
    while d.metric("sprofd_samples_total") == 0.0 && std::time::Instant::now() < warm {
        std::thread::sleep(Duration::from_millis(100));
    }
    let from = unix_now().floor() as u64 - 1;
    let out = dir.join("maxrss");
    // 150 MiB over 3 s, held 6 s; busy all along so that the daemon samples it. The series
    // has a point per 2 s window: 4 or 5 of them, where 3 are needed.
    let mut target = Target::spawn(
        &c_fixture("rssgrow", FP),
        &["150", "3", "6", out.to_str().unwrap()],
    );
    let pid = target.pid;

    // At the peak: /metrics has the fixture among the processes using the most.
    std::thread::sleep(Duration::from_secs(5));
    let metrics = d.get("/metrics").text();
    let gauge = |kind: &str| {
        metric(
            &metrics,
            &format!(
                "sprofd_sampled_process_resident_bytes{{pid=\"{pid}\",comm=\"rssgrow\",kind=\"{kind}\"}}"
            ),
        )
        .unwrap_or_else(|| panic!("no {kind} gauge for the fixture:\n{metrics}"))
    };
    let anon = gauge("anon");
    assert!(
        (anon / MIB - 150.0).abs() < 15.0,
        "anon {:.1} MiB",
        anon / MIB
    );
    assert!(gauge("file") > 0.0);

    assert!(target.wait_exit(Duration::from_secs(20)), "fixture hung");
    let maxrss = std::fs::read_to_string(&out)
        .expect("the fixture's ru_maxrss")
        .trim()
        .parse::<f64>()
        .unwrap()
        * 1024.0;
    // The fixture's last window cut and stored.
    std::thread::sleep(Duration::from_millis(3500));
    let (peak, peak_ms) = series_peak(&d, from, pid, maxrss, "live");

    // The memory timeline of the fixture peaks there too.
    let t = json(&d.get(&format!(
        "/api/v1/timeline?from={from}&to=now&metric=memory&pid={pid}"
    )));
    assert_eq!(t["metric"], "memory");
    let top = t["series"][0]["peak_bytes"].as_f64().unwrap();
    assert!(
        (top - peak).abs() <= 0.01 * peak,
        "timeline {top} vs {peak}"
    );

    // The window holding the peak carries the series and still reads as a pprof.
    let window = d
        .windows()
        .into_iter()
        .find(|w| {
            let name = w.file_name().unwrap().to_string_lossy().into_owned();
            let (a, b) = name.trim_end_matches(".pb.gz").split_once('-').unwrap();
            (a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()).contains(&peak_ms)
        })
        .unwrap_or_else(|| panic!("no window holds {peak_ms}: {:?}", d.windows()));
    let go = go_pprof(&["-top", window.to_str().unwrap()]);
    assert!(
        go.status.success() && go.stdout.contains("rssgrow_spin"),
        "go tool pprof on {}{}",
        window.display(),
        go.describe()
    );

    // After a restart the series come back from the stored windows.
    let (status, _, log) = d.terminate();
    assert!(status.success(), "{log}");
    let d = Daemon::start(&data, &args);
    let (again, _) = series_peak(&d, from, pid, maxrss, "after a restart");
    assert!((again - peak).abs() < 1.0, "{again} vs {peak}");
}

/// `sprofd daemon --mode memory` (opt-in): the windows weigh new resident memory in bytes,
/// stored as pprof `space/bytes`; the range query gives grow_big and grow_small 75/25 of
/// memgrow.c's growth, and leak_keep/leak_free land under `[kept]`/`[freed]`.
#[live_test(kernel)]
fn daemon_memory_mode_stores_growth_by_stack() {
    let _serial = serial();
    let dir = TempDir::new("daemon-memory-mode");
    let data = dir.join("data");
    let exe = c_fixture("memgrow", NO_FP);
    // memgrow waits 1.5 s before growing: the daemon attaches to it by pid first.
    let mut target = Target::spawn(&exe, &["1.5", "grow"]);
    let pid = target.pid.to_string();
    let d = Daemon::start(&data, &["--mode", "memory", "--window", "2", "--pid", &pid]);
    let from = unix_now().floor() as u64 - 2;
    assert!(target.wait_exit(Duration::from_secs(20)), "fixture hung");
    std::thread::sleep(Duration::from_millis(4500));
    let r = d.get(&format!("/api/v1/profile?from={from}&to=now&format=folded"));
    assert_eq!(r.status, 200, "{}", r.text());
    let folded = Folded::parse(&r.text()).unwrap();
    let under = |name: &str| folded.count_where(|f| f.iter().any(|x| frame_is(x, name)));
    let (big, small) = (under("grow_big"), under("grow_small"));
    let share = big as f64 / (big + small).max(1) as f64;
    let total = (big + small) as f64 / MIB;
    assert!(
        (share - 0.75).abs() <= 0.05 && (300.0..=480.0).contains(&total),
        "grow_big share {share:.3} of {total:.1} MiB:\n{}\n{}",
        folded.excerpt(),
        d.log()
    );
    assert!(
        folded.count_containing("[kept]") > 0,
        "{}",
        folded.excerpt()
    );
    // The stored window says what it measures.
    let pb = d.get(&format!("/api/v1/profile?from={from}&to=now&format=pprof"));
    let p = flamegraph_out::read_pprof(&pb.body).unwrap();
    assert_eq!(p.meta.measure, sprof_core::Measure::Memory);
    let (status, _, _) = d.terminate();
    assert!(status.success());
}
