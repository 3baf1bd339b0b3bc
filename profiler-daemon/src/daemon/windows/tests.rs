use super::*;
use sprof_core::{Frame, FrameKind, ThreadRef};
use std::time::UNIX_EPOCH;

/// The loop's turn length in these tests.
const TURN: Duration = Duration::from_millis(250);

/// A run of the loop's schedule against a fake clock: the monotonic clock advances by
/// `TURN` each turn, the wall clock with it plus `step` from turn `step_at` on. Returns
/// the windows' wall-clock labels and the monotonic instants they were cut at.
fn run(turns: u32, step_at: u32, step: i64) -> Vec<((SystemTime, SystemTime), Duration)> {
    let window = Duration::from_secs(10);
    let t0 = Instant::now();
    let wall0 = UNIX_EPOCH + Duration::from_millis(1_796_000_003_000);
    let wall = |turn: u32| {
        let w = wall0 + TURN * turn;
        match (turn >= step_at, step) {
            (false, _) => w,
            (true, s) if s >= 0 => w + Duration::from_secs(s.unsigned_abs()),
            (true, s) => w - Duration::from_secs(s.unsigned_abs()),
        }
    };
    let mut s = Schedule::new(window, t0, wall(0));
    let mut windows = Vec::new();
    let mut slices = 0;
    for turn in 1..=turns {
        let now = t0 + TURN * turn;
        match s.due(now) {
            Due::Window => {
                s.end_slice(now);
                windows.push((s.end_window(now, wall(turn)), now - t0));
            }
            Due::Slice => {
                let (a, b) = s.end_slice(now);
                assert!(b >= a);
                slices += 1;
            }
            Due::Nothing => {}
        }
    }
    assert!(
        slices >= turns / 4 - windows.len() as u32 - 1,
        "{slices} slices"
    );
    windows
}

#[test]
fn windows_are_cut_on_schedule_when_the_wall_clock_steps_back_or_forward() {
    // 70 s, the wall clock set back an hour after 15 s (the review's reproduction).
    let back = run(280, 60, -3600);
    assert_eq!(back.len(), 7, "{back:?}");
    for ((start, end), _) in &back {
        let len = end.duration_since(*start).unwrap();
        assert!(len <= Duration::from_secs(10), "a window of {len:?}");
    }
    // Cut every 10 s of monotonic time: the first at the 10 s boundary (7 s in), the
    // rest 10 s apart, the step notwithstanding.
    let cut: Vec<u64> = back.iter().map(|(_, at)| at.as_millis() as u64).collect();
    assert_eq!(cut[0], 7000);
    for pair in cut.windows(2) {
        assert!((9000..=10250).contains(&(pair[1] - pair[0])), "{cut:?}");
    }
    // After the step the labels follow the new wall time.
    let last = back.last().unwrap().0 .0;
    assert!(last < UNIX_EPOCH + Duration::from_millis(1_796_000_003_000));
    // Forward an hour: no window spans the hour.
    let fwd = run(280, 60, 3600);
    assert_eq!(fwd.len(), 7, "{fwd:?}");
    for ((start, end), _) in &fwd {
        assert!(end.duration_since(*start).unwrap() <= Duration::from_secs(10));
    }
    assert!(fwd.last().unwrap().0 .0 > UNIX_EPOCH + Duration::from_secs(1_796_003_600));
}

#[test]
fn windows_end_on_multiples_of_their_length_in_unix_time() {
    let w = Duration::from_secs(10);
    let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
    assert_eq!(
        until_aligned(w, at(1_796_000_003_000)),
        Duration::from_secs(7)
    );
    assert_eq!(until_aligned(w, at(1_796_000_000_000)), w);
    let t0 = Instant::now();
    let mut s = Schedule::new(w, t0, at(1_796_000_003_000));
    assert_eq!(s.due(t0 + Duration::from_millis(999)), Due::Nothing);
    assert_eq!(s.due(t0 + SLICE), Due::Slice);
    assert_eq!(s.due(t0 + Duration::from_secs(7)), Due::Window);
    let (a, b) = s.end_window(t0 + Duration::from_secs(7), at(1_796_000_010_000));
    assert_eq!((a, b), (at(1_796_000_003_000), at(1_796_000_010_000)));
    assert_eq!(s.due(t0 + Duration::from_secs(16)), Due::Slice);
    assert_eq!(s.due(t0 + Duration::from_secs(17)), Due::Window);
}

/// A slice as the caller would cut it: one sample per millisecond of its span, half in
/// process 1 and half in process 2, so every count says which stretch of time it covers.
fn slice_profile(start: SystemTime, end: SystemTime) -> SymbolizedProfile {
    let ms = end.duration_since(start).unwrap().as_millis() as u64;
    let stack = |pid: u32, samples| SampledStack {
        frames: vec![0, pid],
        samples,
        period: samples * 1_000_000,
        thread: Some(ThreadRef { pid, tid: pid }),
    };
    SymbolizedProfile {
        frames: vec![
            Frame::bare("main", FrameKind::Native),
            Frame::bare("one", FrameKind::Native),
            Frame::bare("two", FrameKind::Native),
        ],
        stacks: vec![stack(1, ms / 2), stack(2, ms - ms / 2)],
        ..Default::default()
    }
}

/// The machine under a fake clock: turns of `TURN`, from a wall time 3 s past a multiple of
/// 10 s. Returns the machine, the shared window and the clock at turn 0.
fn machine() -> (Windows, Arc<Mutex<OpenWindow>>, Now) {
    let now = Now {
        mono: Instant::now(),
        wall: UNIX_EPOCH + Duration::from_millis(1_796_000_003_000),
    };
    let open = Arc::new(Mutex::new(OpenWindow::default()));
    let meta = ProfileMeta {
        target: "host test".into(),
        frequency: 1000,
        ..Default::default()
    };
    (
        Windows::new(Duration::from_secs(10), now, open.clone(), meta),
        open,
        now,
    )
}

fn at(t0: Now, turn: u32) -> Now {
    Now {
        mono: t0.mono + TURN * turn,
        wall: t0.wall + TURN * turn,
    }
}

/// Slices, windows and a tap over 20 s of fake time: every millisecond is in exactly one
/// stored window (or the one in progress), the tap holds exactly the time between its
/// requests, a window keeps the machine's meta, and a stop ends the turn.
#[test]
fn slices_windows_and_taps_cover_the_time_exactly_once() {
    let (mut w, open, t0) = machine();
    let mut cuts = 0;
    let mut cut = |a: SystemTime, b: SystemTime| {
        cuts += 1;
        slice_profile(a, b)
    };
    let (tap_tx, mut tap_rx) = tokio::sync::oneshot::channel();
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel();
    let keep: StackFilter = Box::new(|_, s| s.thread.is_some_and(|t| t.pid == 1));
    let mut open_tap = Some(Request::OpenTap {
        keep,
        reply: tap_tx,
    });
    let mut close_tx = Some(close_tx);
    let (mut stored, mut taps) = (Vec::new(), Vec::new());
    for turn in 1..=80 {
        let requests = match turn {
            // 2.5 s in, and closed 6 s later, across the window boundary at 7 s.
            10 => vec![open_tap.take().unwrap()],
            34 => vec![Request::CloseTap {
                id: tap_rx.try_recv().unwrap(),
                reply: close_tx.take().unwrap(),
            }],
            _ => Vec::new(),
        };
        for a in w.tick(at(t0, turn), requests, &mut cut) {
            match a {
                Action::Store(window) => stored.push(*window),
                Action::Taps(n) => taps.push(n),
                Action::Stop => panic!("no stop was asked"),
            }
        }
    }
    assert_eq!(taps, vec![1, 0]);
    let tap = close_rx.try_recv().unwrap();
    // Process 1's half of 6 s, to the millisecond.
    assert_eq!(tap.total_samples(), 3000);
    assert!(tap.stacks.iter().all(|s| s.thread.unwrap().pid == 1));
    // Windows end at 7 s and 17 s (multiples of 10 s in unix time); 3 s are in progress.
    let ms = |w: &EndedWindow| w.end.duration_since(w.start).unwrap().as_millis() as u64;
    assert_eq!(stored.iter().map(ms).collect::<Vec<_>>(), vec![7000, 10000]);
    for window in &stored {
        assert_eq!(window.profile.total_samples(), ms(window));
        assert_eq!(window.profile.meta.target, "host test");
        assert_eq!(window.profile.meta.frequency, 1000);
        assert_eq!(
            window.profile.meta.duration_secs,
            ms(window) as f64 / 1000.0
        );
    }
    assert_eq!(stored[0].start, t0.wall);
    assert_eq!(stored[1].start, stored[0].end);
    {
        let open = open.lock().unwrap();
        assert_eq!(open.window_start, Some(stored[1].end));
        let in_progress: u64 = open.slices.iter().map(|s| s.profile.total_samples()).sum();
        assert_eq!(in_progress, 3000);
    }
    // A stop ends the turn, whatever is due; the caller then finishes.
    let mut stop = w.tick(at(t0, 81), vec![Request::Stop], &mut cut);
    assert!(matches!(stop.pop(), Some(Action::Stop)) && stop.is_empty());
    let end = w.finish(at(t0, 81), &mut cut);
    let Some(Action::Store(last)) = end.into_iter().next() else {
        panic!("the window in progress is stored at the end");
    };
    assert_eq!(last.start, stored[1].end);
    assert_eq!(last.profile.total_samples(), 3250);
    assert!(open.lock().unwrap().slices.is_empty());
    // A slice a second, one per tap request and one at the end: no more.
    assert!(cuts <= 20 + 2 + 1, "{cuts} cuts");
}
