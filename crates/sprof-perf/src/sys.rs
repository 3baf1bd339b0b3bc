//! The kernel interface: `perf_event_open`, its ioctls, and ring-buffer mappings.
//!
//! This module and [`crate::spawn`] hold this crate's system-call `unsafe` (perf_event_open
//! and its ioctls, the ring-buffer mappings, poll, fork and exec); plain system calls go
//! through rustix. Everything above works with the safe types defined here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use perf_event_open_sys::{self as perf, bindings as sys};

use crate::record::{SampleLayout, REGS_MASK};

/// The event that drives sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Software CPU clock: works everywhere, including VMs without a PMU.
    CpuClock,
    /// Software task clock.
    TaskClock,
    /// Hardware CPU cycles: needs a PMU.
    Cycles,
    /// Software context switches: a sample each time a thread is switched out (off-CPU time).
    ContextSwitches,
    /// Software dummy: counts nothing, samples nothing; carries side records (mmap, comm,
    /// task) in a ring buffer of their own.
    Dummy,
    /// Software page faults: a sample every `n` faults, at the faulting thread's stack
    /// (`--mode memory`).
    PageFaults,
    /// A kernel tracepoint, by its tracefs id (the syscalls that give memory back).
    Tracepoint(u64),
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::CpuClock => "cpu-clock",
            EventKind::TaskClock => "task-clock",
            EventKind::Cycles => "cycles",
            EventKind::ContextSwitches => "context-switches",
            EventKind::Dummy => "dummy",
            EventKind::PageFaults => "page-faults",
            EventKind::Tracepoint(_) => "tracepoint",
        }
    }

    fn type_and_config(self) -> (u32, u64) {
        match self {
            EventKind::CpuClock => (sys::PERF_TYPE_SOFTWARE, sys::PERF_COUNT_SW_CPU_CLOCK as u64),
            EventKind::TaskClock => (
                sys::PERF_TYPE_SOFTWARE,
                sys::PERF_COUNT_SW_TASK_CLOCK as u64,
            ),
            EventKind::Cycles => (
                sys::PERF_TYPE_HARDWARE,
                sys::PERF_COUNT_HW_CPU_CYCLES as u64,
            ),
            EventKind::ContextSwitches => (
                sys::PERF_TYPE_SOFTWARE,
                sys::PERF_COUNT_SW_CONTEXT_SWITCHES as u64,
            ),
            EventKind::Dummy => (sys::PERF_TYPE_SOFTWARE, sys::PERF_COUNT_SW_DUMMY as u64),
            EventKind::PageFaults => (
                sys::PERF_TYPE_SOFTWARE,
                sys::PERF_COUNT_SW_PAGE_FAULTS as u64,
            ),
            EventKind::Tracepoint(id) => (sys::PERF_TYPE_TRACEPOINT, id),
        }
    }
}

/// How events are opened.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    pub kind: EventKind,
    pub frequency: u64,
    pub layout: SampleLayout,
    /// Count while the thread runs in the kernel too (needs privilege unless paranoid <= 1).
    pub count_kernel: bool,
    /// Include kernel frames in callchains.
    pub kernel_callchain: bool,
    /// Include user frames in callchains (the frame-pointer walk); off when user stacks are
    /// unwound from copied stack bytes instead.
    pub user_callchain: bool,
    /// Start disabled and enable when the task execs (for a launched command).
    pub enable_on_exec: bool,
    /// Wake the reader on every sample rather than at the half-buffer watermark.
    pub wakeup_per_sample: bool,
    /// The first event of each CPU reports mmap, comm and task records (one channel of a
    /// session does, so that each arrives once).
    pub task_records: bool,
    /// Every event reports its thread's context switches in and out (`PERF_RECORD_SWITCH`).
    pub switch_records: bool,
    /// Sample every `n`-th event instead of at `frequency`.
    pub fixed_period: Option<u64>,
    /// Follow threads and children created later through the kernel (`inherit`). Without it
    /// the sampler opens the event for each new thread itself (its fork record says when), so
    /// that every instance can be retuned (an ioctl reaches no inherited copy).
    pub inherit: bool,
}

/// An open perf event.
#[derive(Debug)]
pub struct PerfEvent {
    fd: OwnedFd,
}

impl AsRawFd for PerfEvent {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PerfEvent {
    /// Opens a sampling event for thread `tid` on `cpu`, following its future threads and
    /// children (`inherit`). The first event of each CPU also reports mmap, comm and task
    /// events (`with_side_records`); the others only sample, so each side record arrives once.
    pub fn open(
        spec: &EventSpec,
        tid: i32,
        cpu: i32,
        with_side_records: bool,
    ) -> io::Result<PerfEvent> {
        // SAFETY: perf_event_attr is a plain C struct for which all-zero is the documented
        // "nothing requested" value.
        let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        let (type_, config) = spec.kind.type_and_config();
        attr.type_ = type_;
        attr.config = config;
        attr.size = std::mem::size_of::<sys::perf_event_attr>() as u32;
        match spec.fixed_period {
            Some(period) => attr.__bindgen_anon_1.sample_period = period,
            None => {
                attr.__bindgen_anon_1.sample_freq = spec.frequency;
                attr.set_freq(1);
            }
        }
        attr.sample_type = spec.layout.sample_type();
        attr.set_inherit(u64::from(spec.inherit));
        // Sample times on CLOCK_MONOTONIC, so they compare with the reader's own clock (how
        // late an interpreter's frames were read after the sample).
        attr.set_use_clockid(1);
        attr.clockid = libc::CLOCK_MONOTONIC;
        attr.set_exclude_kernel(u64::from(!spec.count_kernel));
        attr.set_exclude_hv(1);
        attr.set_exclude_callchain_kernel(u64::from(!spec.kernel_callchain));
        attr.set_exclude_callchain_user(u64::from(!spec.user_callchain));
        if spec.enable_on_exec {
            attr.set_disabled(1);
            attr.set_enable_on_exec(1);
        }
        if with_side_records && spec.task_records {
            // The kernel counts mmap listeners by the `mmap` bit alone; `mmap2` only picks
            // the richer record format.
            attr.set_mmap(1);
            attr.set_mmap2(1);
            attr.set_comm(1);
            attr.set_comm_exec(1);
            attr.set_task(1);
        }
        // Switch records are per task: every thread's events report its own switches.
        if spec.switch_records {
            attr.set_context_switch(1);
        }
        // Side records then carry a timestamp, so those of several CPUs can be ordered.
        attr.set_sample_id_all(1);
        if spec.layout.regs_user {
            attr.sample_regs_user = REGS_MASK;
        }
        attr.sample_stack_user = spec.layout.stack_user;
        if spec.wakeup_per_sample {
            attr.__bindgen_anon_2.wakeup_events = 1;
        } else {
            // Wake the reader when half the buffer is full (a zero watermark means half)
            // rather than per sample; the reader also polls with a timeout, so low rates
            // drain promptly.
            attr.set_watermark(1);
        }
        // SAFETY: attr is fully initialised and outlives the call; the kernel copies it.
        let fd = unsafe {
            perf::perf_event_open(
                &mut attr,
                tid,
                cpu,
                -1,
                sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PerfEvent { fd })
    }

    /// Sends this event's records to `target`'s ring buffer (both on the same CPU).
    pub fn set_output(&self, target: &PerfEvent) -> io::Result<()> {
        // SAFETY: both fds are open perf events owned by us.
        let r = unsafe { perf::ioctls::SET_OUTPUT(self.fd.as_raw_fd(), target.fd.as_raw_fd()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn enable(&self) -> io::Result<()> {
        // SAFETY: the fd is an open perf event owned by us.
        let r = unsafe { perf::ioctls::ENABLE(self.fd.as_raw_fd(), 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Changes the sampling period (`PERF_EVENT_IOC_PERIOD`) of an event opened with a fixed
    /// period.
    pub fn set_period(&self, period: u64) -> io::Result<()> {
        let p = period;
        // The kernel reads the new period through a pointer (`_IOW('$', 4, __u64 *)`); the
        // binding types the argument as a plain u64, so the pointer travels as one.
        let arg = &p as *const u64 as u64;
        // SAFETY: the fd is an open perf event owned by us; the ioctl reads one u64 at `arg`,
        // which points at `p`, alive for the duration of the call.
        let r = unsafe { perf::ioctls::PERIOD(self.fd.as_raw_fd(), arg) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn disable(&self) -> io::Result<()> {
        // SAFETY: the fd is an open perf event owned by us.
        let r = unsafe { perf::ioctls::DISABLE(self.fd.as_raw_fd(), 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// A perf ring buffer mapped from an event: one metadata page and a power-of-two data area.
pub struct RingBuffer {
    event: PerfEvent,
    base: *mut u8,
    map_len: usize,
    data_offset: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by this value and only accessed through &mut self.
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    /// Maps `data_pages` (a power of two) data pages for `event`, which then owns the buffer.
    /// On failure the event is handed back, so the caller can retry with fewer pages.
    pub fn new(event: PerfEvent, data_pages: usize) -> Result<RingBuffer, (io::Error, PerfEvent)> {
        let page = page_size();
        let map_len = (data_pages + 1) * page;
        // SAFETY: mapping a perf fd with these flags is the documented way to get its ring
        // buffer; we check the result and unmap in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                event.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err((io::Error::last_os_error(), event));
        }
        let base = base.cast::<u8>();
        let meta = base.cast::<sys::perf_event_mmap_page>();
        // SAFETY: the first page of the mapping is the metadata page written by the kernel.
        let (off, size) = unsafe {
            (
                std::ptr::addr_of!((*meta).data_offset).read_volatile() as usize,
                std::ptr::addr_of!((*meta).data_size).read_volatile() as usize,
            )
        };
        // Kernels before 4.1 leave these zero: the data area then starts at the second page.
        let (data_offset, data_size) = if size == 0 {
            (page, data_pages * page)
        } else {
            (off, size)
        };
        Ok(RingBuffer {
            event,
            base,
            map_len,
            data_offset,
            data_size,
        })
    }

    pub fn event(&self) -> &PerfEvent {
        &self.event
    }

    fn meta(&self) -> *mut sys::perf_event_mmap_page {
        self.base.cast()
    }

    /// Where the kernel has written up to. Records up to this point can be read.
    pub fn head(&self) -> u64 {
        // SAFETY: data_head lives in our metadata page and is written by the kernel.
        let head = unsafe { std::ptr::addr_of!((*self.meta()).data_head).read_volatile() };
        // Order our reads of the records after the read of data_head (perf_event_open(2)).
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        head
    }

    fn tail(&self) -> u64 {
        // SAFETY: data_tail lives in our metadata page; only we write it.
        unsafe { std::ptr::addr_of!((*self.meta()).data_tail).read_volatile() }
    }

    /// Calls `f(type, misc, body)` for every complete record before `head`, without freeing
    /// them, so a reader can make several passes. A record that wraps around the end of the
    /// data area is copied into `scratch` (u64s, so the body stays 8-byte aligned); all others
    /// are borrowed in place.
    pub fn for_each(&self, head: u64, scratch: &mut Vec<u64>, mut f: impl FnMut(u32, u16, &[u8])) {
        let mut tail = self.tail();
        // SAFETY: the data area is data_size bytes at data_offset inside our mapping.
        let data =
            unsafe { std::slice::from_raw_parts(self.base.add(self.data_offset), self.data_size) };
        let mask = (self.data_size - 1) as u64;
        while tail + 8 <= head {
            let start = (tail & mask) as usize;
            let mut hdr = [0u8; 8];
            copy_wrapped(data, start, &mut hdr);
            let kind = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let misc = u16::from_ne_bytes([hdr[4], hdr[5]]);
            let size = u16::from_ne_bytes([hdr[6], hdr[7]]) as usize;
            if size < 8 || tail + size as u64 > head {
                // A corrupt header: nothing after it can be trusted.
                return;
            }
            let body_start = (start + 8) & mask as usize;
            let body_len = size - 8;
            if body_start + body_len <= self.data_size {
                f(kind, misc, &data[body_start..body_start + body_len]);
            } else {
                scratch.clear();
                scratch.resize(body_len.div_ceil(8), 0);
                // SAFETY: scratch holds at least body_len bytes and u8 has no alignment needs.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<u8>(), body_len)
                };
                copy_wrapped(data, body_start, dst);
                f(kind, misc, dst);
            }
            tail += size as u64;
        }
    }

    /// Frees everything before `head` for the kernel to reuse.
    pub fn advance(&mut self, head: u64) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: data_tail is ours to write; publishing it frees the space.
        unsafe { std::ptr::addr_of_mut!((*self.meta()).data_tail).write_volatile(head) };
    }
}

fn copy_wrapped(data: &[u8], start: usize, dst: &mut [u8]) {
    let first = (data.len() - start).min(dst.len());
    dst[..first].copy_from_slice(&data[start..start + first]);
    let rest = dst.len() - first;
    dst[first..].copy_from_slice(&data[..rest]);
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: base/map_len describe the mapping created in new(), unmapped only here.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// Waits until one of `fds` is readable or `timeout_ms` passes. Interrupted waits return early.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP) != 0)
        .collect())
}

/// A pidfd for watching a process we did not start, so its exit is noticed at once.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// The bytes of this process's vdso. The kernel maps the same vdso image into every process
/// of an architecture, so sprofd symbolizes a target's `[vdso]` frames with its own copy.
pub fn own_vdso() -> Option<Vec<u8>> {
    // SAFETY: getauxval has no preconditions; 0 means "not present".
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let parsed = sprof_core::parse_maps(maps.as_bytes()).ok()?;
    let m = parsed.mappings.iter().find(|m| m.start as usize == base)?;
    let len = (m.end - m.start) as usize;
    // SAFETY: [base, base + len) is our own vdso mapping, readable for the life of the process.
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
    Some(bytes.to_vec())
}

/// Sends `sig` (a signal number that names a signal) to a process.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(io::ErrorKind::InvalidInput)?;
    let sig = rustix::process::Signal::from_named_raw(sig).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::kill_process(pid, sig)?)
}

/// The effective uid of sprofd.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of sample times (events are opened with
/// `use_clockid`), so a reader can tell how long ago a sample was taken.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64
}
