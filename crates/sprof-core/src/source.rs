//! Where events come from: the one trait that the live perf sampler, a replayed recording
//! and any later source (host-wide per-CPU sampling, context switches) implement, so the
//! engine's loop never knows which one it drives.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::Event;

/// Counters a source keeps about what it delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records read.
    pub records: u64,
    /// Records that could not be decoded (dropped, counted).
    pub unparsed: u64,
    /// Side records (mmap, comm, fork, exit) the kernel dropped from a ring buffer of their
    /// own (a buffer shared with samples counts its losses as lost samples instead).
    pub lost_side_records: u64,
}

/// A stream of [`Event`]s.
///
/// Samples borrow their bytes from the source (a ring buffer, a recording), so they are
/// delivered through a callback rather than returned: the callee must finish with a sample
/// before the callback returns.
pub trait EventSource {
    /// Delivers every event available now, in order, and returns how many were delivered.
    /// Events describing existing state (a process's mappings and thread names when it was
    /// attached to) come first, as synthetic events.
    fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize;

    /// Blocks until events may be waiting, something the source watches is ready, or
    /// `timeout` passes. A source that is always ready (a recording) returns at once.
    fn wait(&mut self, _timeout: Duration) {}

    /// File descriptors that become readable when events are waiting; empty for a source
    /// that is always ready (a recording).
    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Describes `pid`'s executable mappings again, as they are now, as synthetic events at
    /// the next drain: for a process sampled in code no known mapping covers (its mmap
    /// records were lost). A source without a live system behind it ignores this.
    fn resync(&mut self, _pid: crate::Pid) {}

    /// Stops producing new events; those already produced can still be drained.
    fn disable(&mut self) {}

    /// True when the source will never deliver another event (a recording at its end).
    fn exhausted(&self) -> bool {
        false
    }

    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}
