//! The event vocabulary shared by the live sampler and recorded fixtures.
//!
//! Samples borrow their callchain and stack bytes from wherever they were read (a ring
//! buffer, a scratch buffer, a fixture file), so the hot path never copies them.

use crate::{Mapping, Pid, Tid};

/// User-space registers captured with a sample: the three an unwinder needs on x86_64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// Which event a sample comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleKind {
    /// A clock (cpu-clock, task-clock) or hardware counter: the thread was on a CPU; the
    /// period is CPU time (nanoseconds for the clocks).
    #[default]
    Timer,
    /// The thread was switched out (context-switch event): its stack is where it blocked or was
    /// preempted; the period is how many switches this sample stands for.
    Switch,
    /// The thread took page faults (`--mode memory`): its stack is where it touched memory
    /// first; the period is the bytes of those faults (faults times the page size), and
    /// [`Sample::addr`] the faulting address.
    Fault,
    /// A syscall tracepoint that gives memory back (`munmap`, `madvise`, `brk`): the sampler
    /// delivers it as an [`Event::Release`], never as a sample.
    Release,
}

/// One sample of one thread.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub kind: SampleKind,
    pub pid: Pid,
    pub tid: Tid,
    /// Kernel clock (perf's `CLOCK_MONOTONIC` by default), nanoseconds.
    pub time: u64,
    pub cpu: u32,
    /// The event period this sample stands for; for `cpu-clock`, nanoseconds of CPU time.
    pub period: u64,
    /// The sampled instruction pointer (user or kernel).
    pub ip: u64,
    /// The kernel part of the callchain, leaf first, context markers removed (split when the
    /// record is decoded). Empty when not requested.
    pub kernel_chain: &'a [u64],
    /// The user part of the kernel's frame-pointer callchain, leaf first. Empty when not
    /// requested (DWARF unwinding walks `user_stack` instead).
    pub user_chain: &'a [u64],
    /// User registers at the time of the sample, when requested and the thread was in user
    /// space or entered the kernel from it.
    pub user_regs: Option<UserRegs>,
    /// The copied top of the user stack, starting at `user_regs.sp`.
    pub user_stack: &'a [u8],
    /// The size of the user-stack copy that was requested; a copy that filled it may have
    /// cut the stack short.
    pub user_stack_requested: u64,
    /// The data address of the event (`PERF_SAMPLE_ADDR`): the faulting address of a page
    /// fault; 0 when not sampled.
    pub addr: u64,
}

/// A new mapping in a process (`PERF_RECORD_MMAP2`, or synthesized from `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmapEvent {
    pub pid: Pid,
    pub tid: Tid,
    pub mapping: Mapping,
}

/// A thread changed its name, or its process exec'd (`exec == true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommEvent {
    pub pid: Pid,
    pub tid: Tid,
    pub comm: String,
    pub exec: bool,
}

/// A new thread or process (`PERF_RECORD_FORK`). A new process has `pid == tid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkEvent {
    pub pid: Pid,
    pub ppid: Pid,
    pub tid: Tid,
    pub ptid: Tid,
    pub time: u64,
}

/// A thread or process ended (`PERF_RECORD_EXIT`). The process is gone when `pid == tid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitEvent {
    pub pid: Pid,
    pub tid: Tid,
    pub time: u64,
}

/// A thread was switched out of or into a CPU (`PERF_RECORD_SWITCH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchEvent {
    pub pid: Pid,
    pub tid: Tid,
    pub time: u64,
    /// Switched out (else in).
    pub out: bool,
    /// Switched out while still runnable (preempted), rather than blocked.
    pub preempted: bool,
}

/// A process gave memory back (`--mode memory`, from the syscall tracepoints): resident pages
/// in the range are freed, so what faulted them in was transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseEvent {
    pub pid: Pid,
    pub tid: Tid,
    pub time: u64,
    pub release: Release,
}

/// What a [`ReleaseEvent`] gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// `munmap`, or `madvise` with `MADV_DONTNEED`/`MADV_FREE`/`MADV_REMOVE`: `len` bytes at
    /// `addr`.
    Range { addr: u64, len: u64 },
    /// `brk` returned this program break: a break lower than the last one frees the heap
    /// above it.
    BrkTo(u64),
}

/// Everything a sampling source can report.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Sample(Sample<'a>),
    Mmap(MmapEvent),
    Comm(CommEvent),
    Fork(ForkEvent),
    Exit(ExitEvent),
    Switch(SwitchEvent),
    Release(ReleaseEvent),
    /// The kernel dropped `count` records because a ring buffer was full.
    Lost {
        count: u64,
    },
    /// The kernel throttled (or unthrottled) the event for exceeding its interrupt budget.
    Throttle {
        unthrottle: bool,
    },
}

/// Callchain context markers (`enum perf_callchain_context`) sit at the top of the address
/// space: `PERF_CONTEXT_USER` separates a callchain's kernel part from its user part.
pub const PERF_CONTEXT_USER: u64 = -512i64 as u64;
/// Every value at or above this is a context marker, not an address.
pub const PERF_CONTEXT_MAX: u64 = -4095i64 as u64;

/// Splits a perf callchain into its kernel and user parts, without the context markers.
/// Borrowed, because it runs once per sample.
pub fn split_callchain(chain: &[u64]) -> (&[u64], &[u64]) {
    let (kernel, user) = match chain.iter().position(|&ip| ip == PERF_CONTEXT_USER) {
        Some(p) => (&chain[..p], &chain[p + 1..]),
        None => (chain, &chain[chain.len()..]),
    };
    let first = kernel
        .iter()
        .position(|&ip| ip < PERF_CONTEXT_MAX)
        .unwrap_or(kernel.len());
    let kernel = &kernel[first..];
    let end = kernel
        .iter()
        .position(|&ip| ip >= PERF_CONTEXT_MAX)
        .unwrap_or(kernel.len());
    (&kernel[..end], user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_and_user_parts_split() {
        let kctx = -128i64 as u64;
        let chain = [
            kctx,
            0xffff_ffff_8100_0000,
            PERF_CONTEXT_USER,
            0x401000,
            0x401234,
        ];
        let (k, u) = split_callchain(&chain);
        assert_eq!(k, &[0xffff_ffff_8100_0000]);
        assert_eq!(u, &[0x401000, 0x401234]);
        let (k, u) = split_callchain(&[PERF_CONTEXT_USER, 0x401000]);
        assert!(k.is_empty());
        assert_eq!(u, &[0x401000]);
        assert_eq!(split_callchain(&[]), (&[][..], &[][..]));
    }
}
