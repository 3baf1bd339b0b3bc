//! A drain thread between the kernel's ring buffers and the engine.
//!
//! The engine's thread does slow things between drains: it parses modules the first time a
//! process maps them, symbolizes, compresses and writes windows. While it does, the ring
//! buffers fill, and the kernel drops what does not fit. [`spawn`] moves the draining to a
//! thread of its own that does nothing else: it copies each drain's events, in the
//! recording format of [`crate::replay`], into a queue bounded in bytes, and the engine
//! reads them from the [`QueuedSource`] it gets back, which is an [`EventSource`] like any
//! other. When the queue is full, samples and mmap records are dropped and counted
//! ([`Handoff::dropped`], [`Handoff::dropped_mappings`]): a process whose mmap records were
//! dropped is described again from /proc when it is next sampled in unknown code (see
//! [`EventSource::resync`]). Comm, fork and exit records are always kept: they are few, and
//! without them names and address spaces would go wrong for good.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sprof_core::{Event, EventSource, Pid, SourceStats};

use crate::replay::{Recorder, ReplaySource};

/// What the two threads share.
#[derive(Default)]
struct Shared {
    /// Bytes in the queue now.
    queued: AtomicUsize,
    /// Samples dropped because the queue was full.
    dropped: AtomicU64,
    /// Mmap records dropped because the queue was full.
    dropped_mappings: AtomicU64,
    /// Milliseconds since `epoch` at the end of the drain thread's last turn.
    heartbeat_ms: AtomicU64,
    /// CPU the drain thread has used, nanoseconds (updated every turn).
    cpu_ns: AtomicU64,
    stop: AtomicBool,
    /// The inner source has nothing more to give (a recording at its end).
    exhausted: AtomicBool,
    resyncs: Mutex<Vec<Pid>>,
    stats: Mutex<SourceStats>,
}

/// What a driver keeps to watch the drain thread.
#[derive(Clone)]
pub struct Handoff {
    shared: Arc<Shared>,
    epoch: Instant,
    wake: Sender<Vec<u8>>,
}

impl Handoff {
    /// CPU time the drain thread has used so far (as of its last turn).
    pub fn drain_cpu(&self) -> Duration {
        Duration::from_nanos(self.shared.cpu_ns.load(Ordering::Relaxed))
    }

    /// Samples dropped so far because the engine fell behind by more than the queue holds.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Mmap records dropped so far because the queue was full (an mmap flood outpacing the
    /// engine).
    pub fn dropped_mappings(&self) -> u64 {
        self.shared.dropped_mappings.load(Ordering::Relaxed)
    }

    /// The inner source's counters as of the drain thread's last turn.
    pub fn source_stats(&self) -> SourceStats {
        *lock(&self.shared.stats)
    }

    /// Bytes waiting for the engine now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// How long ago the drain thread last finished a turn: a turn takes at most its poll
    /// interval, so an age well beyond it means the thread is stuck or gone.
    pub fn since_last_drain(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.shared.heartbeat_ms.load(Ordering::Relaxed)))
    }

    /// Ends the engine's current wait at once (a request arrived for its thread).
    pub fn wake(&self) {
        let _ = self.wake.send(Vec::new());
    }
}

/// The engine's side: events as the drain thread copied them.
pub struct QueuedSource {
    rx: Receiver<Vec<u8>>,
    /// A batch received by `wait`, delivered by the next `drain`.
    held: Option<Vec<u8>>,
    handoff: Handoff,
    thread: Option<JoinHandle<()>>,
}

/// Starts the drain thread on `source`; `max_queued` bounds the bytes waiting for the
/// engine, `poll` how long the thread waits for records at most.
pub fn spawn<S: EventSource + Send + 'static>(
    mut source: S,
    max_queued: usize,
    poll: Duration,
) -> std::io::Result<(QueuedSource, Handoff)> {
    let (tx, rx) = mpsc::channel();
    let handoff = Handoff {
        shared: Arc::new(Shared::default()),
        epoch: Instant::now(),
        wake: tx.clone(),
    };
    let mine = handoff.clone();
    let thread = std::thread::Builder::new()
        .name("sprofd-drain".into())
        .spawn(move || {
            while !mine.shared.stop.load(Ordering::Acquire) && !source.exhausted() {
                let resyncs = std::mem::take(&mut *lock(&mine.shared.resyncs));
                for pid in resyncs {
                    source.resync(pid);
                }
                source.wait(poll);
                mine.pass_on(&mut source, &tx, max_queued);
                let cpu = sprof_core::thread_cpu_time().as_nanos();
                mine.shared
                    .cpu_ns
                    .store(u64::try_from(cpu).unwrap_or(u64::MAX), Ordering::Relaxed);
            }
            // What the kernel still holds, whatever the queue's size: the engine is ending.
            source.disable();
            mine.pass_on(&mut source, &tx, usize::MAX);
            mine.shared.exhausted.store(true, Ordering::Release);
        })?;
    Ok((
        QueuedSource {
            rx,
            held: None,
            handoff: handoff.clone(),
            thread: Some(thread),
        },
        handoff,
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handoff {
    /// One drain of `source` into the queue.
    fn pass_on<S: EventSource>(&self, source: &mut S, tx: &Sender<Vec<u8>>, max_queued: usize) {
        let full = self.shared.queued.load(Ordering::Acquire) >= max_queued;
        let Ok(mut recorder) = Recorder::new(Vec::new()) else {
            return;
        };
        let (mut dropped, mut dropped_mappings) = (0, 0);
        source.drain(&mut |e| match e {
            Event::Sample(_) if full => dropped += 1,
            Event::Mmap(_) if full => dropped_mappings += 1,
            // Writing into a Vec cannot fail.
            e => {
                let _ = recorder.write(&e);
            }
        });
        self.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.shared
            .dropped_mappings
            .fetch_add(dropped_mappings, Ordering::Relaxed);
        *lock(&self.shared.stats) = source.stats();
        if recorder.events > 0 {
            if let Ok(batch) = recorder.finish() {
                self.shared.queued.fetch_add(batch.len(), Ordering::AcqRel);
                let _ = tx.send(batch);
            }
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.shared.heartbeat_ms.store(now, Ordering::Relaxed);
    }
}

impl QueuedSource {
    fn deliver(&mut self, batch: Vec<u8>, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
        if batch.is_empty() {
            return 0;
        }
        self.handoff
            .shared
            .queued
            .fetch_sub(batch.len(), Ordering::AcqRel);
        match ReplaySource::new(batch, usize::MAX) {
            Ok(mut replay) => replay.drain(on_event),
            Err(_) => 0,
        }
    }
}

impl EventSource for QueuedSource {
    fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        if let Some(batch) = self.held.take() {
            n += self.deliver(batch, on_event);
        }
        while let Ok(batch) = self.rx.try_recv() {
            n += self.deliver(batch, on_event);
        }
        n
    }

    fn wait(&mut self, timeout: Duration) {
        if self.held.is_some() {
            return;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(batch) => self.held = Some(batch),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }

    /// Stops the drain thread after one last drain of what the kernel holds; the events
    /// queued until then are still delivered.
    fn disable(&mut self) {
        self.handoff.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn exhausted(&self) -> bool {
        self.held.is_none()
            && self.handoff.shared.exhausted.load(Ordering::Acquire)
            && self.handoff.queued_bytes() == 0
    }

    fn resync(&mut self, pid: Pid) {
        lock(&self.handoff.shared.resyncs).push(pid);
    }

    fn stats(&self) -> SourceStats {
        self.handoff.source_stats()
    }
}

impl Drop for QueuedSource {
    fn drop(&mut self) {
        self.disable();
    }
}
