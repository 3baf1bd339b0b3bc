//! The sampling thread's loop without root or perf: a recording replayed through the
//! daemon's engine, symbolizer and state machine into a temporary store, under a clock
//! that advances one loop turn per reading.

use super::*;
use crate::daemon::config::FileSettings;
use crate::daemon::windows::Now;
use sprof_core::{CommEvent, Event, Mapping, MmapEvent, Sample, Tid};
use sprof_engine::replay::{Recorder, ReplaySource};
use sprof_store::Retention;
use sprof_testkit::FileLoader;

/// A fresh store in a temporary directory (removed with the returned guard).
fn temp_store() -> (tempfile::TempDir, WindowStore) {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 30,
    };
    let (store, _) = WindowStore::open(&dir.path().join("data"), retention).unwrap();
    (dir, store)
}

/// Loop turns of [`POLL`] from a wall time 3 s past a multiple of 10 s (near now, so that
/// retention keeps what is written); at the turns listed, `at_turn` runs first (a request
/// arriving while the loop waited).
struct StepClock {
    t0: Now,
    turn: u32,
    at_turn: Vec<(u32, Box<dyn FnOnce()>)>,
}

impl StepClock {
    fn new() -> StepClock {
        let now = sprof_store::unix_millis(SystemTime::now());
        StepClock {
            t0: Now {
                mono: Instant::now(),
                wall: UNIX_EPOCH + Duration::from_millis(now - now % 10_000 - 7_000),
            },
            turn: 0,
            at_turn: Vec::new(),
        }
    }
}

impl Clock for StepClock {
    fn now(&mut self) -> Now {
        let turn = self.turn;
        self.turn += 1;
        while let Some(i) = self.at_turn.iter().position(|(t, _)| *t == turn) {
            (self.at_turn.remove(i).1)();
        }
        Now {
            mono: self.t0.mono + POLL * turn,
            wall: self.t0.wall + POLL * turn,
        }
    }
}

#[inline(never)]
fn alpha(n: u64) -> u64 {
    (0..n).fold(1, |a, i| {
        std::hint::black_box(a.wrapping_mul(31).wrapping_add(i))
    })
}

#[inline(never)]
fn beta(n: u64) -> u64 {
    (0..n).fold(7, |a, i| std::hint::black_box(a.wrapping_mul(17) ^ i))
}

/// A process that is not this one (the daemon leaves itself out) and no process at all.
const PID: u32 = 3_999_999;

/// A recording of `samples` samples of [`PID`], running this test binary's code: every
/// other one in `alpha` called from `beta`, the others in `beta`.
fn recording(samples: usize) -> Vec<u8> {
    let maps = std::fs::read("/proc/self/maps").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mappings: Vec<Mapping> = sprof_core::parse_maps(&maps[..])
        .unwrap()
        .mappings
        .into_iter()
        .filter(|m| m.executable && std::path::Path::new(&m.path) == exe)
        .collect();
    assert!(!mappings.is_empty(), "this test's code is mapped");
    let (a, b) = (
        alpha as fn(u64) -> u64 as usize as u64,
        beta as fn(u64) -> u64 as usize as u64,
    );
    let chains = [[a + 1, b + 8], [b + 1, 0]];
    let mut r = Recorder::new(Vec::new()).unwrap();
    let (pid, tid) = (Pid(PID), Tid(PID));
    let comm = "replayed".to_string();
    let exec = false;
    r.write(&Event::Comm(CommEvent {
        pid,
        tid,
        comm,
        exec,
    }))
    .unwrap();
    for mapping in mappings {
        r.write(&Event::Mmap(MmapEvent { pid, tid, mapping }))
            .unwrap();
    }
    for i in 0..samples {
        let chain = &chains[i % 2];
        r.write(&Event::Sample(Sample {
            kind: sprof_core::SampleKind::Timer,
            pid,
            tid,
            time: i as u64,
            cpu: 0,
            period: 1_000_000,
            ip: chain[0],
            kernel_chain: &[],
            user_chain: if i % 2 == 0 { &chain[..] } else { &chain[..1] },
            user_regs: None,
            user_stack: &[],
            user_stack_requested: 0,
            addr: 0,
        }))
        .unwrap();
    }
    r.finish().unwrap()
}

fn config() -> DaemonConfig {
    let settings = FileSettings {
        python: Some(false),
        window: Some(10),
        ..Default::default()
    };
    DaemonConfig::resolve(settings, None, None).unwrap()
}

fn sampling(
    shared: &Arc<Shared>,
    rx: mpsc::Receiver<Control>,
    clock: StepClock,
) -> Sampling<StepClock> {
    let meta = SourceMeta {
        meta: sprof_core::ProfileMeta {
            target: "host replay".into(),
            frequency: 19,
            event: "cpu-clock".into(),
            ..Default::default()
        },
        sample_bytes: 0,
    };
    let notifier = Arc::new(Notifier::from_env());
    Sampling::new(&config(), shared.clone(), notifier, rx, meta, clock)
}

/// 400 samples replayed 10 per drain (a drain per turn of 250 ms, ~10 s): the windows stored
/// hold every sample once, named, on the 10 s grid; a scrape's tap opened at turn 12 and
/// closed at turn 20 holds exactly the 8 drains between; metrics count what was written.
#[test]
fn a_replayed_recording_goes_through_slices_windows_and_a_tap_into_the_store() {
    let (_dir, store) = temp_store();
    let (shared, rx) = Shared::new(store);
    let mut clock = StepClock::new();
    let t0 = clock.t0;
    let (open_tx, mut open_rx) = tokio::sync::oneshot::channel();
    let keep: StackFilter = Box::new(|_, _| true);
    let s = shared.clone();
    clock.at_turn.push((
        12,
        Box::new(move || {
            assert!(s.send(Control::Windows(Request::OpenTap {
                keep,
                reply: open_tx
            })));
        }),
    ));
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel();
    let s = shared.clone();
    clock.at_turn.push((
        20,
        Box::new(move || {
            let id = open_rx.try_recv().expect("the tap opened at turn 12");
            assert!(s.send(Control::Windows(Request::CloseTap {
                id,
                reply: close_tx
            })));
        }),
    ));
    let engine = engine_spec(&config(), false).build_with(Box::new(FileLoader));
    sampling(&shared, rx, clock).run(ReplaySource::new(recording(400), 10).unwrap(), engine);

    let tap = close_rx.try_recv().expect("the tap closed at turn 20");
    assert_eq!(tap.total_samples(), 80);
    let store = shared.lock_store();
    let windows = store.windows().to_vec();
    assert_eq!(windows.len(), 2, "{windows:?}");
    // The first window ends at the first multiple of 10 s, 7 s (28 turns) in.
    let grid = sprof_store::unix_millis(t0.wall) + 7_000;
    assert_eq!(windows[0].end_ms, grid);
    assert_eq!(windows[1].start_ms, grid);
    let profiles: Vec<SymbolizedProfile> = windows
        .iter()
        .map(|w| WindowStore::load(w).unwrap())
        .collect();
    let total: u64 = profiles.iter().map(|p| p.total_samples()).sum();
    assert_eq!(total, 400);
    for p in &profiles {
        assert_eq!(p.meta.target, "host replay");
        let named = |f: &str| p.frames.iter().any(|fr| fr.function.contains(f));
        assert!(named("alpha") && named("beta"), "{:?}", p.frames);
    }
    let m = &shared.metrics;
    assert_eq!((m.samples.get(), m.windows_written.get()), (400, 2));
    assert_eq!(m.window_encode_errors.get(), 0);
    assert_eq!(shared.open_taps.load(Ordering::SeqCst), 0);
    assert!(shared.window.lock().unwrap().slices.is_empty());
}

/// A window that cannot be encoded is counted and said, and nothing is stored for it
/// (it used to be written as an empty window).
#[test]
fn a_window_that_fails_to_encode_is_counted_not_stored_empty() {
    let (_dir, store) = temp_store();
    let (shared, rx) = Shared::new(store);
    let mut sampling = sampling(&shared, rx, StepClock::new());
    let start = SystemTime::now() - Duration::from_secs(10);
    let broken = SymbolizedProfile {
        // A stack naming a frame the profile does not have.
        stacks: vec![sprof_core::SampledStack {
            frames: vec![3],
            samples: 1,
            period: 1,
            thread: None,
        }],
        ..Default::default()
    };
    assert!(encode(&broken, start).is_err());
    let window = EndedWindow {
        start,
        end: start + Duration::from_secs(10),
        profile: broken,
    };
    sampling.store(window, SystemTime::now());
    let m = &shared.metrics;
    assert_eq!(m.window_encode_errors.get(), 1);
    assert_eq!(
        (m.windows_written.get(), m.window_write_errors.get()),
        (0, 0)
    );
    assert!(shared.lock_store().windows().is_empty());
}

#[test]
fn health_turns_bad_when_the_loop_stalls_or_the_thread_ends() {
    let (_dir, store) = temp_store();
    let (shared, _rx) = Shared::new(store);
    let mut shared = Arc::into_inner(shared).unwrap();
    // As if the daemon had started 3 s ago and the loop never turned since.
    shared.epoch = Instant::now() - Duration::from_secs(3);
    match shared.health() {
        Health::Stalled(d) => assert!(d >= Duration::from_secs(3), "{d:?}"),
        h => panic!("{h:?}"),
    }
    shared.beat();
    assert_eq!(shared.health(), Health::Ok);
    shared.alive.store(false, Ordering::SeqCst);
    assert_eq!(shared.health(), Health::Dead);
    assert!(shared.sampler_ended());
}
