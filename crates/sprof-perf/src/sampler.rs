//! A sampling session over one process tree: per-thread, per-CPU events sharing one ring
//! buffer per CPU, drained into [`Event`]s.
//!
//! The kernel refuses to `mmap` an inherited per-task event opened for any CPU, so following
//! threads and children created later (`inherit`) takes one event per (thread, CPU); all the
//! events of a CPU write into that CPU's buffer through `PERF_EVENT_IOC_SET_OUTPUT`.
//!
//! The sampler is an [`EventSource`]: the state of a process it attaches to (thread names,
//! executable mappings from `/proc`) comes out of the first drain as synthetic comm and mmap
//! events, so nothing downstream has a path of its own for "already running".

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use sprof_core::{CommEvent, Event, EventSource, MmapEvent, Pid, SampleKind, SourceStats, Tid};

use crate::procfs;
use crate::record::parse_record;
use crate::sys::{EventKind, EventSpec, PerfEvent, RingBuffer};

/// Why sampling could not start.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("perf_event_open for PID {pid}: {source}")]
    Open { pid: Pid, source: io::Error },
    #[error("mmap of the perf ring buffer: {0}")]
    Mmap(io::Error),
    #[error(transparent)]
    Proc(#[from] procfs::ProcError),
}

impl SamplerError {
    /// The errno behind the error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SamplerError::Open { source, .. } | SamplerError::Mmap(source) => source.raw_os_error(),
            SamplerError::Proc(_) => None,
        }
    }
}

/// Per-thread, per-CPU sampling of one process tree.
pub struct Sampler {
    /// The events opened per thread and CPU, with the kind of their samples.
    channels: Vec<(EventSpec, SampleKind)>,
    /// One ring buffer per (channel, CPU), channel-major; `kinds[i]` is buffer i's kind.
    buffers: Vec<RingBuffer>,
    kinds: Vec<SampleKind>,
    /// The event of each buffer: its sample layout (channels may differ: see
    /// `SampleLayout::period`), its kind (a dummy event's buffer carries side records only; a
    /// tracepoint's records decode by its id) and its fixed period.
    specs: Vec<EventSpec>,
    follower_kinds: Vec<SampleKind>,
    followers: Vec<PerfEvent>,
    threads: BTreeSet<Tid>,
    /// Online CPUs, read once: every thread gets one event on each.
    cpus: Vec<u32>,
    data_pages: usize,
    scratch: Vec<u64>,
    heads: Vec<u64>,
    side: Vec<(u64, Event<'static>)>,
    /// Other fds that end a wait when readable (a pidfd that signals the target's exit).
    watched: Vec<RawFd>,
    /// Buffer fds and watched fds, as `wait` polls them (rebuilt when either changes).
    wait_fds: Vec<RawFd>,
    /// Synthetic events for state that existed before sampling, delivered first.
    pending: Vec<Event<'static>>,
    /// Things the caller should tell the user (e.g. maps unreadable: no symbols).
    pub warnings: Vec<String>,
    pub stats: SourceStats,
    thinning: SwitchThinning,
    /// One event per CPU for every task on it ([`Sampler::host_wide`]): the kernel reports
    /// every thread's switches there, so nothing is opened per thread.
    host_wide: bool,
}

/// Keeps context-switch samples within a budget: every switch is sampled until the rate goes
/// over it, then one in `period` (switch records still time every switch; the engine gives
/// unsampled switches the thread's last sampled stack).
#[derive(Debug)]
struct SwitchThinning {
    /// Switch samples per second allowed over all threads.
    budget: u64,
    period: u64,
    seen: u64,
    since: std::time::Instant,
}

impl SwitchThinning {
    /// The new period if the rate since the last check calls for one.
    fn check(&mut self) -> Option<u64> {
        let elapsed = self.since.elapsed().as_secs_f64();
        if elapsed < 0.1 {
            return None;
        }
        let rate = self.seen as f64 / elapsed;
        self.seen = 0;
        self.since = std::time::Instant::now();
        let budget = self.budget as f64;
        let next = if rate > budget {
            // At the current period the true switch rate is `rate * period`.
            ((rate * self.period as f64 / budget).ceil() as u64).min(1 << 20)
        } else if rate < budget / 4.0 && self.period > 1 {
            (self.period / 2).max(1)
        } else {
            return None;
        };
        (next != self.period).then(|| {
            self.period = next;
            next
        })
    }
}

impl Sampler {
    /// An empty session of one timer event; threads are added with [`Sampler::add_thread`].
    pub fn new(spec: EventSpec, data_pages: usize) -> Sampler {
        Sampler::with_channels(vec![(spec, SampleKind::Timer)], data_pages)
    }

    /// An empty session opening each of `channels` per thread and CPU (see
    /// [`crate::SamplingPolicy::channels`]).
    pub fn with_channels(channels: Vec<(EventSpec, SampleKind)>, data_pages: usize) -> Sampler {
        Sampler {
            channels,
            buffers: Vec::new(),
            kinds: Vec::new(),
            specs: Vec::new(),
            follower_kinds: Vec::new(),
            followers: Vec::new(),
            threads: BTreeSet::new(),
            cpus: procfs::online_cpus(),
            data_pages: data_pages.next_power_of_two(),
            scratch: Vec::new(),
            heads: Vec::new(),
            side: Vec::new(),
            pending: Vec::new(),
            watched: Vec::new(),
            wait_fds: Vec::new(),
            warnings: Vec::new(),
            stats: SourceStats::default(),
            thinning: SwitchThinning {
                budget: 2000,
                period: 1,
                seen: 0,
                since: std::time::Instant::now(),
            },
            host_wide: false,
        }
    }

    /// Samples every task on every online CPU, including processes and threads created
    /// later: one event per (channel, CPU) with `pid = -1`, each with its own ring buffer.
    /// Every process running now is described by synthetic events, as [`Sampler::attach`]
    /// does for one; processes whose `/proc` files cannot be read are counted in
    /// `warnings` once, in total. Kernel threads are skipped (they have no user stacks).
    pub fn host_wide(&mut self) -> Result<(), SamplerError> {
        self.host_wide = true;
        for c in 0..self.channels.len() {
            let (spec, kind) = self.channels[c];
            // Per-CPU events see every task, so inheritance means nothing (and enable_on_exec
            // would wait for an exec of nobody in particular).
            let spec = EventSpec {
                inherit: false,
                enable_on_exec: false,
                ..spec
            };
            for i in 0..self.cpus.len() {
                let cpu = self.cpus[i];
                let event = PerfEvent::open(&spec, -1, cpu as i32, true).map_err(|source| {
                    SamplerError::Open {
                        pid: Pid(0),
                        source,
                    }
                })?;
                let buffer = self.map_buffer(event)?;
                self.buffers.push(buffer);
                self.kinds.push(kind);
                self.specs.push(spec);
            }
        }
        let mut unreadable: Vec<String> = Vec::new();
        for pid in procfs::processes().map_err(|e| {
            SamplerError::Proc(procfs::ProcError::Io {
                path: "/proc".into(),
                source: e,
            })
        })? {
            let comm = match procfs::stat(pid) {
                Ok(st) if st.is_kernel_thread() || st.is_zombie() => continue,
                Ok(st) => st.comm,
                Err(_) => continue,
            };
            let warnings = self.warnings.len();
            self.queue_existing_state(pid);
            if self.warnings.len() > warnings {
                self.warnings.truncate(warnings);
                unreadable.push(format!("{pid} {comm}"));
            }
        }
        if !unreadable.is_empty() {
            let n = unreadable.len();
            let shown: Vec<&str> = unreadable.iter().take(5).map(String::as_str).collect();
            let more = if n > 5 { ", ..." } else { "" };
            let hint = if crate::sys::euid() == 0 {
                "root may be refused them too: a process that made itself undumpable"
            } else {
                "run as root or with CAP_SYS_PTRACE"
            };
            self.warnings.push(format!(
                "the mappings of {n} process{} could not be read ({}{more}); their frames will have no names ({hint})",
                if n == 1 { "" } else { "es" },
                shown.join(", ")
            ));
        }
        Ok(())
    }

    /// Opens events for one thread on every online CPU.
    pub fn add_thread(&mut self, pid: Pid, tid: Tid) -> Result<(), SamplerError> {
        if !self.threads.insert(tid) {
            return Ok(());
        }
        self.open_channels(pid, tid, false)
    }

    /// Opens the events of every channel (or, with `uninherited_only`, of the channels the
    /// kernel does not follow into new threads) for `tid` on every online CPU.
    fn open_channels(
        &mut self,
        pid: Pid,
        tid: Tid,
        uninherited_only: bool,
    ) -> Result<(), SamplerError> {
        let ncpus = self.cpus.len();
        for c in 0..self.channels.len() {
            let (spec, kind) = self.channels[c];
            if uninherited_only && spec.inherit {
                continue;
            }
            // A thread that appears while sampling runs is sampled at once, not at an exec.
            let spec = EventSpec {
                enable_on_exec: spec.enable_on_exec && !uninherited_only,
                ..spec
            };
            for i in 0..ncpus {
                let cpu = self.cpus[i];
                let slot = c * ncpus + i;
                let first = self.buffers.len() <= slot;
                let event = PerfEvent::open(&spec, tid.0 as i32, cpu as i32, first)
                    .map_err(|source| SamplerError::Open { pid, source })?;
                if first {
                    let buffer = self.map_buffer(event)?;
                    self.buffers.push(buffer);
                    self.kinds.push(kind);
                    self.specs.push(spec);
                } else {
                    event
                        .set_output(self.buffers[slot].event())
                        .map_err(|source| SamplerError::Open { pid, source })?;
                    if kind == SampleKind::Switch && self.thinning.period > 1 {
                        let _ = event.set_period(self.thinning.period);
                    }
                    self.followers.push(event);
                    self.follower_kinds.push(kind);
                }
            }
        }
        Ok(())
    }

    /// Whether one of the channels samples events of `kind`.
    pub fn samples(&self, kind: SampleKind) -> bool {
        self.channels.iter().any(|&(_, k)| k == kind)
    }

    /// Maps a ring buffer, halving its size while the kernel refuses it for exceeding the
    /// locked-memory budget (non-root users get `perf_event_mlock_kb` per CPU).
    fn map_buffer(&mut self, mut event: PerfEvent) -> Result<RingBuffer, SamplerError> {
        let mut pages = self.data_pages;
        loop {
            match RingBuffer::new(event, pages) {
                Ok(b) => {
                    self.data_pages = pages;
                    return Ok(b);
                }
                Err((e, ev)) if e.raw_os_error() == Some(libc::EPERM) && pages > 8 => {
                    pages /= 2;
                    event = ev;
                }
                Err((e, _)) => return Err(SamplerError::Mmap(e)),
            }
        }
    }

    /// Attaches to every thread of a running process. Threads created while we attach are
    /// either inherited from an already-attached thread or found by the next scan of
    /// `/proc/PID/task`, which is repeated until it finds nothing new.
    ///
    /// The process's thread names and executable mappings are queued as synthetic events.
    pub fn attach(&mut self, pid: Pid) -> Result<(), SamplerError> {
        self.open_all_threads(pid)?;
        self.queue_existing_state(pid);
        Ok(())
    }

    /// Synthetic comm and mmap events describing `pid` as it is now.
    fn queue_existing_state(&mut self, pid: Pid) {
        self.queue_comms(pid);
        if let Err(e) = self.queue_mappings(pid) {
            self.warnings.push(format!("{e}; symbols will be missing"));
        }
    }

    /// Synthetic comm events: the names of `pid`'s threads as they are now.
    fn queue_comms(&mut self, pid: Pid) {
        for tid in procfs::tasks(pid).unwrap_or_default() {
            if let Ok(comm) = procfs::thread_comm(pid, tid) {
                self.pending.push(Event::Comm(CommEvent {
                    pid,
                    tid,
                    comm,
                    exec: false,
                }));
            }
        }
    }

    /// Synthetic mmap events for `pid`'s executable mappings as they are now.
    fn queue_mappings(&mut self, pid: Pid) -> Result<(), procfs::ProcError> {
        let maps = procfs::exec_mappings(pid)?;
        self.pending.extend(maps.into_iter().map(|mapping| {
            Event::Mmap(MmapEvent {
                pid,
                tid: Tid(pid.0),
                mapping,
            })
        }));
        Ok(())
    }

    fn open_all_threads(&mut self, pid: Pid) -> Result<(), SamplerError> {
        for _round in 0..100 {
            let tids = procfs::tasks(pid)?;
            let new: Vec<Tid> = tids
                .into_iter()
                .filter(|t| !self.threads.contains(t))
                .collect();
            if new.is_empty() {
                return Ok(());
            }
            for tid in new {
                match self.add_thread(pid, tid) {
                    Ok(()) => {}
                    // The thread exited between the scan and the open.
                    Err(SamplerError::Open { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) =>
                    {
                        if tid.0 == pid.0 {
                            return Err(SamplerError::Proc(procfs::ProcError::Gone(pid)));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Makes [`EventSource::wait`] return as soon as `fd` is readable too.
    pub fn watch(&mut self, fd: RawFd) {
        self.watched.push(fd);
    }

    /// The current context-switch sampling period (1: every switch).
    pub fn switch_period(&self) -> u64 {
        self.thinning.period
    }

    /// Applies a new period to every context-switch event.
    fn set_switch_period(&mut self, period: u64) {
        for (b, kind) in self.buffers.iter().zip(&self.kinds) {
            if *kind == SampleKind::Switch {
                let _ = b.event().set_period(period);
            }
        }
        for (e, kind) in self.followers.iter().zip(&self.follower_kinds) {
            if *kind == SampleKind::Switch {
                let _ = e.set_period(period);
            }
        }
    }

    /// The size of each CPU's data area, in pages (after any reduction).
    pub fn data_pages(&self) -> usize {
        self.data_pages
    }
}

impl EventSource for Sampler {
    fn wait(&mut self, timeout: std::time::Duration) {
        if self.wait_fds.len() != self.buffers.len() + self.watched.len() {
            self.wait_fds = self.poll_fds();
            self.wait_fds.extend_from_slice(&self.watched);
        }
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let _ = crate::sys::poll_readable(&self.wait_fds, ms);
    }

    /// The ring-buffer fds, for polling.
    fn poll_fds(&self) -> Vec<RawFd> {
        self.buffers.iter().map(|b| b.event().as_raw_fd()).collect()
    }

    /// Stops counting on every event (records already written stay readable).
    fn disable(&mut self) {
        for b in &self.buffers {
            let _ = b.event().disable();
        }
        for e in &self.followers {
            let _ = e.disable();
        }
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Reads `pid`'s thread names and mappings again (a gone process has none: nothing to
    /// say). Side records lost in a flood may include an exec's comm as well as its mmaps:
    /// without the names, the new program's samples would go under its parent's name.
    fn resync(&mut self, pid: Pid) {
        self.queue_comms(pid);
        let _ = self.queue_mappings(pid);
    }

    /// Delivers the synthetic events of attached processes, then every record now in the
    /// buffers: first the side records (mmap, comm, fork, exit) of all CPUs in time order,
    /// then the samples, then exits. Samples that arrive in the same drain as the mmap of
    /// their code thus find it, whatever CPU recorded it, and the last samples of an exiting
    /// process still find its address space.
    fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
        let before = self.stats.records;
        let mut delivered = self.pending.len();
        for e in self.pending.drain(..) {
            on_event(e);
        }
        self.heads.clear();
        self.heads.extend(self.buffers.iter().map(|b| b.head()));
        self.collect_side_records();
        // Exits wait until this drain's samples are delivered: a thread's last samples sit
        // in the buffer beside its exit record and still need its address space.
        let mut exits = Vec::new();
        let mut forks = Vec::new();
        for (_, e) in self.side.drain(..) {
            match e {
                Event::Exit(_) => exits.push(e),
                Event::Fork(f) => {
                    forks.push((f.pid, f.tid));
                    on_event(e)
                }
                e => on_event(e),
            }
        }
        self.follow_new_threads(forks);
        self.deliver_samples(on_event);
        for (b, &head) in self.buffers.iter_mut().zip(&self.heads) {
            b.advance(head);
        }
        for e in exits {
            on_event(e);
        }
        if let Some(period) = self.thinning.check() {
            self.set_switch_period(period);
        }
        delivered += (self.stats.records - before) as usize;
        delivered
    }
}

impl Sampler {
    /// Decodes the side records (everything but samples) of every buffer up to `heads`, into
    /// `side`, in time order.
    fn collect_side_records(&mut self) {
        self.side.clear();
        let side = &mut self.side;
        let stats = &mut self.stats;
        let buffers = self.buffers.iter().zip(&self.heads).zip(&self.specs);
        for ((b, &head), spec) in buffers {
            let (layout, side_only) = (&spec.layout, spec.kind == EventKind::Dummy);
            b.for_each(head, &mut self.scratch, |kind, misc, body| {
                if kind == perf_event_open_sys::bindings::PERF_RECORD_SAMPLE {
                    return;
                }
                stats.records += 1;
                match parse_record(kind, misc, body, layout) {
                    // Not lost samples: the engine reads the maps of a process sampled in
                    // unknown code again.
                    Some(Event::Lost { count }) if side_only => {
                        stats.lost_side_records += count;
                    }
                    Some(e) => side.push((trailer_time(body), into_owned(e))),
                    None => stats.unparsed += 1,
                }
            });
        }
        self.side.sort_by_key(|(t, _)| *t);
    }

    /// Opens the channels the kernel does not inherit for threads that just appeared.
    fn follow_new_threads(&mut self, forks: Vec<(Pid, Tid)>) {
        if self.host_wide || self.channels.iter().all(|(spec, _)| spec.inherit) {
            return;
        }
        for (pid, tid) in forks {
            // The thread may be gone already; its samples are then moot.
            if self.threads.insert(tid) {
                let _ = self.open_channels(pid, tid, true);
            }
        }
    }

    /// Delivers the samples of every buffer up to `heads`, each tagged with its event's kind.
    fn deliver_samples(&mut self, on_event: &mut dyn FnMut(Event<'_>)) {
        let switch_period = self.thinning.period;
        let page = crate::sys::page_size() as u64;
        let buffers = self
            .buffers
            .iter()
            .zip(&self.heads)
            .zip(&self.kinds)
            .zip(&self.specs);
        for (((b, &head), &sample_kind), spec) in buffers {
            let layout = &spec.layout;
            b.for_each(head, &mut self.scratch, |kind, misc, body| {
                if kind != perf_event_open_sys::bindings::PERF_RECORD_SAMPLE {
                    return;
                }
                self.stats.records += 1;
                if sample_kind == SampleKind::Release {
                    match release_event(spec, body) {
                        Some(r) => on_event(Event::Release(r)),
                        None => self.stats.unparsed += 1,
                    }
                    return;
                }
                match parse_record(kind, misc, body, layout) {
                    Some(Event::Sample(mut s)) => {
                        s.kind = sample_kind;
                        match sample_kind {
                            SampleKind::Switch => {
                                self.thinning.seen += 1;
                                s.period = switch_period;
                            }
                            // Bytes: each fault maps one page (a transparent huge page maps
                            // more; see docs/memory.md).
                            SampleKind::Fault => {
                                s.period = spec.fixed_period.unwrap_or(1).saturating_mul(page);
                            }
                            _ => {}
                        }
                        on_event(Event::Sample(s))
                    }
                    Some(e) => on_event(e),
                    None => self.stats.unparsed += 1,
                }
            });
        }
    }
}

/// A tracepoint sample of a syscall that gives memory back, decoded; `None` for advice that
/// keeps the pages and for records that do not parse.
fn release_event(spec: &EventSpec, body: &[u8]) -> Option<sprof_core::ReleaseEvent> {
    let EventKind::Tracepoint(id) = spec.kind else {
        return None;
    };
    let (s, raw) = crate::record::parse_raw_sample(body, &spec.layout)?;
    let release = crate::tracepoints::release_syscalls()
        .ok()?
        .decode(id, raw)?;
    Some(sprof_core::ReleaseEvent {
        pid: s.pid,
        tid: s.tid,
        time: s.time,
        release,
    })
}

/// The timestamp in the `sample_id` trailer of a side record: with our sample type (TID,
/// TIME, CPU) the trailer is `pid, tid: u32; time: u64; cpu, res: u32`, the record's last
/// 24 bytes.
fn trailer_time(body: &[u8]) -> u64 {
    body.len()
        .checked_sub(16)
        .and_then(|at| body.get(at..at + 8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

/// Side records own their data already; this only changes the borrowed lifetime.
fn into_owned(e: Event<'_>) -> Event<'static> {
    match e {
        Event::Mmap(m) => Event::Mmap(m),
        Event::Comm(c) => Event::Comm(c),
        Event::Fork(f) => Event::Fork(f),
        Event::Exit(x) => Event::Exit(x),
        Event::Switch(x) => Event::Switch(x),
        Event::Lost { count } => Event::Lost { count },
        Event::Throttle { unthrottle } => Event::Throttle { unthrottle },
        Event::Release(r) => Event::Release(r),
        Event::Sample(_) => Event::Lost { count: 0 },
    }
}
