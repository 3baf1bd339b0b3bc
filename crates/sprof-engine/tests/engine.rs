//! The engine driven from recorded events, without root or perf: a real sample (registers
//! and stack bytes that a fixture recorded of itself, as a perf sample with
//! `PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER` carries them) replayed through the
//! recording format, with the fork, exec and exit records around it that a live session
//! sees.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sprof_core::{
    CommEvent, Event, EventSource, ExitEvent, ForkEvent, MmapEvent, Pid, ProfileMeta, Tid,
};
use sprof_engine::replay::{Recorder, ReplayError, ReplaySource};
use sprof_engine::{Engine, EngineConfig};
use sprof_symbolizer::SymbolService;
use sprof_testkit::{record, FileLoader, Recorded};
use sprof_unwind::UnwindMode;

/// Counts allocations made by the thread that armed it.
struct CountingAlloc;
static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local!(static COUNT_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) && COUNT_HERE.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The unwinder's self-recording fixture, built without frame pointers and run once.
fn record_fixture() -> Recorded {
    record("cc", "selfdump.c", &["-O2", "-g", "-fomit-frame-pointer"])
}

fn sample(rec: &Recorded, pid: u32, tid: u32, time: u64) -> Event<'_> {
    Event::Sample(rec.sample(pid, tid, time, &rec.stack))
}

fn comm(pid: u32, tid: u32, name: &str, exec: bool) -> Event<'static> {
    Event::Comm(CommEvent {
        pid: Pid(pid),
        tid: Tid(tid),
        comm: name.into(),
        exec,
    })
}

/// A session as the sampler delivers it: existing state, samples of the main thread and of
/// a second thread, a forked child process that samples and exits, then an exec.
fn session_events(rec: &Recorded) -> Vec<Event<'_>> {
    let mut ev = vec![comm(100, 100, "selfdump", false)];
    for m in rec.maps.iter().filter(|m| m.executable) {
        ev.push(Event::Mmap(MmapEvent {
            pid: Pid(100),
            tid: Tid(100),
            mapping: m.clone(),
        }));
    }
    for t in 0..30 {
        ev.push(sample(rec, 100, 100, t));
    }
    ev.push(Event::Fork(ForkEvent {
        pid: Pid(100),
        ppid: Pid(100),
        tid: Tid(101),
        ptid: Tid(100),
        time: 40,
    }));
    ev.push(comm(100, 101, "worker", false));
    for t in 0..10 {
        ev.push(sample(rec, 100, 101, 50 + t));
    }
    ev.push(Event::Fork(ForkEvent {
        pid: Pid(200),
        ppid: Pid(100),
        tid: Tid(200),
        ptid: Tid(100),
        time: 70,
    }));
    for t in 0..20 {
        ev.push(sample(rec, 200, 200, 80 + t));
    }
    ev.push(Event::Lost { count: 3 });
    ev.push(Event::Exit(ExitEvent {
        pid: Pid(200),
        tid: Tid(200),
        time: 120,
    }));
    ev.push(comm(100, 100, "after-exec", true));
    ev
}

fn recording(events: &[Event<'_>]) -> Vec<u8> {
    let mut r = Recorder::new(Vec::new()).unwrap();
    for e in events {
        r.write(e).unwrap();
    }
    r.finish().unwrap()
}

fn engine() -> Engine {
    Engine::new(
        EngineConfig {
            unwind: UnwindMode::Auto,
            kernel_frames: false,
            time_unwind: false,
        },
        Box::new(FileLoader),
    )
}

/// Replays `data` through the engine, `per_drain` events per drain, as a driver would.
fn replay(data: Vec<u8>, per_drain: usize) -> (Engine, usize) {
    let mut source = ReplaySource::new(data, per_drain).unwrap();
    let mut engine = engine();
    let mut ticks = 0;
    sprof_engine::run(&mut source, &mut engine, Duration::ZERO, |_| {
        ticks += 1;
        ControlFlow::<()>::Continue(())
    });
    (engine, ticks)
}

fn folded_of(engine: &Engine, raw: &sprof_core::RawProfile) -> Vec<(String, u64)> {
    let mut symbols = SymbolService::new(false);
    let p = symbols.symbolize(raw, engine.modules(), ProfileMeta::default());
    p.stacks
        .iter()
        .map(|s| {
            let names: Vec<&str> = s
                .frames
                .iter()
                .map(|&f| p.frames[f as usize].function.as_str())
                .collect();
            (names.join(";"), s.samples)
        })
        .collect()
}

#[test]
fn a_replayed_session_is_unwound_named_and_counted() {
    let rec = record_fixture();
    let (engine, ticks) = replay(recording(&session_events(&rec)), 7);
    assert!(ticks > 5, "the driver ticked between drains ({ticks})");
    let raw = engine.snapshot();
    assert_eq!(raw.stats.samples, 60);
    assert_eq!(raw.stats.lost, 3);
    assert_eq!(raw.stats.truncated, 0, "every replayed stack reaches main");
    let stacks = folded_of(&engine, &raw);
    let count = |prefix: &str| -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    };
    // Names are the ones each thread had when it was sampled; the exec renames the process.
    assert_eq!(count("after-exec;_start;"), 30, "{stacks:?}");
    assert_eq!(count("after-exec;worker;_start;"), 10, "{stacks:?}");
    // The forked child inherited its parent's address space and name.
    assert_eq!(count("selfdump;_start;"), 20, "{stacks:?}");
    for (s, _) in &stacks {
        let order = ["main", "cmp", "level1", "level2", "level3", "leaf_dump"];
        let pos: Vec<usize> = order
            .iter()
            .map(|w| {
                s.split(';')
                    .position(|f| f == *w)
                    .unwrap_or_else(|| panic!("{w} in {s}"))
            })
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{s}");
    }
}

#[test]
fn exit_and_exec_prune_address_spaces_and_windows_release_modules() {
    let rec = record_fixture();
    let events = session_events(&rec);
    let mut engine = engine();
    for e in events.iter().cloned() {
        engine.handle(e);
    }
    // Process 200 exited and 100 exec'd: no address space is left.
    assert_eq!(engine.stats().processes, 0);
    assert_eq!(engine.walker().stats.spaces_dropped, 2);
    // A sample of the exited process finds no mappings: kept, marked truncated.
    engine.handle(sample(&rec, 200, 200, 200));
    let held = engine.stats().module_bytes;
    assert!(held > 0);
    let first = engine.take_window();
    assert_eq!(first.stats.samples, 61);
    assert_eq!(first.stats.truncated, 1);
    // The window just taken still needs its modules to be symbolized (modules no stack
    // refers to, such as the dynamic loader, are released at once)...
    let needed = first.referenced_modules();
    assert!(!needed.is_empty());
    for id in &needed {
        assert!(engine.modules().get(*id).unwrap().bytes.is_some());
    }
    assert!(engine.stats().module_bytes <= held);
    assert!(folded_of(&engine, &first)
        .iter()
        .any(|(s, _)| s.contains("leaf_dump")));
    // ...the next one does not: nothing maps them any more.
    let second = engine.take_window();
    assert_eq!(second.stats.samples, 0);
    assert!(second.samples.is_empty(), "counts start again");
    assert_eq!(engine.stats().module_bytes, 0);
    // Interned stacks survive windows: a module mapped again is read again.
    for e in session_events(&rec).into_iter().take(20) {
        engine.handle(e);
    }
    assert!(engine.stats().module_bytes > 0);
    let third = engine.take_window();
    assert_eq!(
        third.stacks.len(),
        first.stacks.len(),
        "stack ids are stable"
    );
}

#[test]
fn malformed_recordings_end_the_replay_cleanly() {
    assert!(matches!(
        ReplaySource::new(b"not a recording".to_vec(), 1),
        Err(ReplayError::BadMagic)
    ));
    let rec = record_fixture();
    let data = recording(&session_events(&rec));
    // Cut anywhere: every complete record before the cut is delivered, the rest counted.
    for cut in [9, 20, data.len() / 2, data.len() - 1] {
        let mut source = ReplaySource::new(data[..cut].to_vec(), 1000).unwrap();
        let mut n = 0;
        while !source.exhausted() {
            n += source.drain(&mut |_| {});
        }
        assert!(n < session_events(&rec).len());
        assert_eq!(source.stats().unparsed, 1, "cut at {cut}");
    }
    // A record of an unknown kind is skipped by its length.
    let mut odd = data[..8].to_vec();
    odd.extend_from_slice(&[99, 2, 0, 0, 0, 0xaa, 0xbb]);
    odd.extend_from_slice(&data[8..]);
    let (engine, _) = replay(odd, 1000);
    assert_eq!(engine.snapshot().stats.samples, 60);
}

#[test]
fn the_warm_per_sample_path_does_not_allocate() {
    let rec = record_fixture();
    let mut engine = engine();
    for e in session_events(&rec).into_iter().take(40) {
        engine.handle(e);
    }
    let before = engine.samples();
    COUNT_HERE.with(|c| c.set(true));
    ARMED.store(true, Ordering::SeqCst);
    for t in 0..2000 {
        engine.handle(sample(&rec, 100, 100, 1000 + t));
    }
    ARMED.store(false, Ordering::SeqCst);
    COUNT_HERE.with(|c| c.set(false));
    assert_eq!(engine.samples(), before + 2000);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the warm sample path"
    );
}

/// A source whose mmap records were lost (the red-team review's D11, an mmap flood): the
/// samples land in no known mapping, the engine asks the source to describe the process
/// again, once per interval, and the samples after that are unwound and named.
#[test]
fn samples_in_unknown_code_make_the_source_read_the_mappings_again() {
    struct LostMaps<'a> {
        rec: &'a Recorded,
        drains: usize,
        resynced: Vec<Pid>,
        queued: Vec<Event<'a>>,
    }
    impl<'a> EventSource for LostMaps<'a> {
        fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
            self.drains += 1;
            let mut n = 0;
            for e in self.queued.drain(..) {
                on_event(e);
                n += 1;
            }
            for i in 0..10 {
                on_event(sample(self.rec, 100, 100, (self.drains * 100 + i) as u64));
                n += 1;
            }
            n
        }
        fn resync(&mut self, pid: Pid) {
            self.resynced.push(pid);
            for m in self.rec.maps.iter().filter(|m| m.executable) {
                self.queued.push(Event::Mmap(MmapEvent {
                    pid,
                    tid: Tid(pid.0),
                    mapping: m.clone(),
                }));
            }
        }
    }
    let rec = record_fixture();
    let mut source = LostMaps {
        rec: &rec,
        drains: 0,
        resynced: Vec::new(),
        queued: vec![comm(100, 100, "selfdump", false)],
    };
    let mut engine = engine();
    let mut ticks = 0;
    sprof_engine::run(&mut source, &mut engine, Duration::ZERO, |_| {
        ticks += 1;
        if ticks >= 4 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    // Asked once (the interval is seconds), after the first drain's unknown samples.
    assert_eq!(source.resynced, vec![Pid(100)]);
    let raw = engine.snapshot();
    let stacks = folded_of(&engine, &raw);
    let named: u64 = stacks
        .iter()
        .filter(|(s, _)| s.contains(";main;"))
        .map(|(_, n)| n)
        .sum();
    // The first drain's 10 samples stay unknown; the rest (and the final drain) are named.
    assert!(named >= 30, "{stacks:?}");
}

/// Through the drain thread, the same session gives the same profile as when the engine
/// drains the source itself; with a queue too small for the engine's pace, samples are
/// dropped and counted, and the comm, fork and exit records are kept (the session's mmaps
/// come first, into the empty queue, so every kept sample is still named).
#[test]
fn the_drain_thread_hands_over_every_event_or_counts_the_dropped_samples() {
    let rec = record_fixture();
    let data = recording(&session_events(&rec));
    let (direct, _) = replay(data.clone(), 7);
    let expected = folded_of(&direct, &direct.snapshot());

    let inner = ReplaySource::new(data.clone(), 7).unwrap();
    let (mut source, handoff) =
        sprof_engine::handoff::spawn(inner, 64 << 20, Duration::from_millis(1)).unwrap();
    let mut eng = engine();
    sprof_engine::run(&mut source, &mut eng, Duration::from_millis(5), |_| {
        ControlFlow::<()>::Continue(())
    });
    assert_eq!(handoff.dropped(), 0);
    let mut got = folded_of(&eng, &eng.snapshot());
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // A queue of one byte: after the first batch, every drain finds it full until the slow
    // engine catches up, so samples go; comm, fork and exit records never do.
    let inner = ReplaySource::new(data, 7).unwrap();
    let (mut source, handoff) =
        sprof_engine::handoff::spawn(inner, 1, Duration::from_millis(1)).unwrap();
    let mut eng = engine();
    sprof_engine::run(&mut source, &mut eng, Duration::from_millis(5), |_| {
        std::thread::sleep(Duration::from_millis(20));
        ControlFlow::<()>::Continue(())
    });
    let raw = eng.snapshot();
    assert!(handoff.dropped() > 0);
    assert_eq!(
        raw.stats.samples + handoff.dropped(),
        direct.snapshot().stats.samples
    );
    let stacks = folded_of(&eng, &raw);
    assert!(
        stacks.iter().all(|(s, _)| s.contains(";main;")),
        "every kept sample is named: {stacks:?}"
    );
}
