//! The daemon's slices, windows and scrape taps, as a state machine that reads no clock and
//! does no I/O.
//!
//! [`Windows::tick`] is told the time ([`Now`], from a [`Clock`] the caller owns) and the
//! requests that arrived, and answers what to do ([`Action`]): store a window that ended,
//! say how many taps are open, stop. To cut a slice it calls back into its caller, which
//! takes the engine's window and symbolizes it; the machine hands the slice to the window
//! in progress (shared with the HTTP side) and to every open tap. The thread, the engine,
//! /proc and the disk stay with the caller (`sampling`), so the machine runs under a fake
//! clock in tests, alone or driven by a replayed recording.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sprof_core::{ProfileMerger, ProfileMeta, SampledStack, SymbolizedProfile};

/// Length of a slice: the resolution of the window in progress and of taps.
pub const SLICE: Duration = Duration::from_secs(1);

/// An instant on both clocks: the monotonic one decides when slices and windows end, the
/// wall clock labels them.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

/// Where the loop reads the time.
pub trait Clock {
    fn now(&mut self) -> Now;
}

/// The system's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&mut self) -> Now {
        Now {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// A symbolized stretch of the window in progress.
pub struct Slice {
    pub start: SystemTime,
    pub end: SystemTime,
    pub profile: Arc<SymbolizedProfile>,
}

/// The window in progress, as the HTTP side sees it.
#[derive(Default)]
pub struct OpenWindow {
    pub window_start: Option<SystemTime>,
    pub slices: Vec<Slice>,
}

/// Which stacks a tap keeps.
pub type StackFilter = Box<dyn Fn(&SymbolizedProfile, &SampledStack) -> bool + Send>;

/// A request the machine answers.
pub enum Request {
    /// Start collecting every slice from now on into a tap; answers its id.
    OpenTap {
        keep: StackFilter,
        reply: tokio::sync::oneshot::Sender<u64>,
    },
    /// End a tap now and answer what it gathered.
    CloseTap {
        id: u64,
        reply: tokio::sync::oneshot::Sender<SymbolizedProfile>,
    },
    /// Stop: the caller drains what is left and calls [`Windows::finish`].
    Stop,
}

/// A window that ended, its slices merged.
pub struct EndedWindow {
    pub start: SystemTime,
    pub end: SystemTime,
    pub profile: SymbolizedProfile,
}

/// What the caller must do, in order.
pub enum Action {
    /// Encode and store this window.
    Store(Box<EndedWindow>),
    /// This many taps are open now.
    Taps(usize),
    /// Leave the loop (a [`Request::Stop`]); later requests of the tick were not looked at.
    Stop,
}

/// Cuts the slice in progress, labelled with its wall-clock start and end: the caller takes
/// the engine's window and symbolizes it.
pub type Cut<'a> = dyn FnMut(SystemTime, SystemTime) -> SymbolizedProfile + 'a;

/// The state machine (see the module doc).
pub struct Windows {
    schedule: Schedule,
    open: Arc<Mutex<OpenWindow>>,
    taps: HashMap<u64, (StackFilter, ProfileMerger)>,
    next_tap: u64,
    /// What stored windows say they are (target, event, frequency, what is measured).
    meta: ProfileMeta,
}

impl Windows {
    /// Windows of length `window` from `now` on, the one in progress shared as `open`.
    pub fn new(
        window: Duration,
        now: Now,
        open: Arc<Mutex<OpenWindow>>,
        meta: ProfileMeta,
    ) -> Windows {
        let windows = Windows {
            schedule: Schedule::new(window, now.mono, now.wall),
            open,
            taps: HashMap::new(),
            next_tap: 1,
            meta,
        };
        windows.lock_open().window_start = Some(windows.schedule.window_wall);
        windows
    }

    /// One turn of the loop at `now`: the requests in order (each cuts a slice first, so a
    /// tap covers exactly the time between its requests), then the slice or window that is
    /// due.
    pub fn tick(&mut self, now: Now, requests: Vec<Request>, cut: &mut Cut<'_>) -> Vec<Action> {
        let mut actions = Vec::new();
        for r in requests {
            match r {
                Request::OpenTap { keep, reply } => {
                    self.cut(now.mono, cut);
                    let id = self.next_tap;
                    self.next_tap += 1;
                    self.taps.insert(id, (keep, ProfileMerger::new()));
                    let _ = reply.send(id);
                }
                Request::CloseTap { id, reply } => {
                    self.cut(now.mono, cut);
                    if let Some((_, merger)) = self.taps.remove(&id) {
                        let _ = reply.send(merger.finish());
                    }
                }
                Request::Stop => {
                    actions.push(Action::Stop);
                    return actions;
                }
            }
            actions.push(Action::Taps(self.taps.len()));
        }
        match self.schedule.due(now.mono) {
            Due::Window => {
                self.cut(now.mono, cut);
                actions.push(Action::Store(Box::new(self.end_window(now))));
            }
            Due::Slice => self.cut(now.mono, cut),
            Due::Nothing => {}
        }
        actions
    }

    /// The loop has ended: the window in progress ends now and is stored. Open taps end
    /// with it: their replies are dropped, which their handlers take as "answer with what
    /// there is" (see http.rs).
    pub fn finish(&mut self, now: Now, cut: &mut Cut<'_>) -> Vec<Action> {
        self.cut(now.mono, cut);
        let window = self.end_window(now);
        self.taps.clear();
        vec![Action::Store(Box::new(window)), Action::Taps(0)]
    }

    /// Ends the slice in progress at `now`: hands it to the taps and the window in progress.
    fn cut(&mut self, now: Instant, cut: &mut Cut<'_>) {
        let (start, end) = self.schedule.end_slice(now);
        let profile = cut(start, end);
        for (keep, merger) in self.taps.values_mut() {
            merger.add(&profile, |p, s| keep(p, s));
        }
        let slice = Slice {
            start,
            end,
            profile: Arc::new(profile),
        };
        self.lock_open().slices.push(slice);
    }

    /// Ends the window in progress at `now` (its last slice already cut): its slices merged.
    fn end_window(&mut self, now: Now) -> EndedWindow {
        let (start, end) = self.schedule.end_window(now.mono, now.wall);
        let slices = {
            let mut open = self.lock_open();
            open.window_start = Some(self.schedule.window_wall);
            std::mem::take(&mut open.slices)
        };
        let mut merger = ProfileMerger::new();
        for s in &slices {
            merger.add(&s.profile, |_, _| true);
        }
        let mut profile = merger.finish();
        profile.meta = ProfileMeta {
            stats: profile.meta.stats,
            notes: profile.meta.notes,
            duration_secs: end.duration_since(start).unwrap_or_default().as_secs_f64(),
            ..self.meta.clone()
        };
        EndedWindow {
            start,
            end,
            profile,
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, OpenWindow> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is due at a turn of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Nothing,
    Slice,
    Window,
}

/// When slices and windows end. Boundaries follow the monotonic clock, so a step of the wall
/// clock (NTP, `date -s`) neither stops the cutting for the length of a backwards step nor
/// makes a window span a forward one. The wall clock only labels them: it is read when a
/// window starts, and every later instant of the window is that reading plus monotonic time.
/// After a step the next window's labels follow the new wall time (so after a backwards step
/// two windows can cover the same wall-clock range).
struct Schedule {
    window: Duration,
    window_start: Instant,
    /// The wall time the window in progress started at.
    window_wall: SystemTime,
    window_end: Instant,
    slice_start: Instant,
}

impl Schedule {
    fn new(window: Duration, now: Instant, wall: SystemTime) -> Schedule {
        Schedule {
            window,
            window_start: now,
            window_wall: wall,
            window_end: now + until_aligned(window, wall),
            slice_start: now,
        }
    }

    fn due(&self, now: Instant) -> Due {
        if now >= self.window_end {
            Due::Window
        } else if now.saturating_duration_since(self.slice_start) >= SLICE {
            Due::Slice
        } else {
            Due::Nothing
        }
    }

    /// The wall-clock label of an instant of the window in progress.
    fn wall(&self, at: Instant) -> SystemTime {
        self.window_wall + at.saturating_duration_since(self.window_start)
    }

    /// Ends the slice in progress at `now`: its wall-clock start and end.
    fn end_slice(&mut self, now: Instant) -> (SystemTime, SystemTime) {
        let span = (self.wall(self.slice_start), self.wall(now));
        self.slice_start = now;
        span
    }

    /// Ends the window in progress at `now`: its wall-clock start and end. The next one
    /// starts now, labelled `wall` (the wall clock read now), and ends at the next multiple
    /// of the window length in unix time, so windows of every host line up.
    fn end_window(&mut self, now: Instant, wall: SystemTime) -> (SystemTime, SystemTime) {
        let span = (self.window_wall, self.wall(now));
        *self = Schedule::new(self.window, now, wall);
        span
    }
}

/// From `wall` to the next multiple of `window` in unix time (a whole window at a multiple).
fn until_aligned(window: Duration, wall: SystemTime) -> Duration {
    let len = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let ms = sprof_store::unix_millis(wall);
    Duration::from_millis(len - ms % len)
}

#[cfg(test)]
mod tests;
