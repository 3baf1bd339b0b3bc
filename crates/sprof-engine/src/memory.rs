//! Memory mode's kept/freed split: which sampled page faults were given back.
//!
//! Every page-fault sample is counted at once under a `[kept]` root ([`Marker::Kept`]) and
//! its page remembered. When the process gives a range back (`munmap`, a dropping `madvise`,
//! a lower `brk`: [`Release`]), the samples of pages in it move to the `[freed]` twin of
//! their stack. What is kept at the end is what was still mapped then, as tracemalloc's
//! snapshot difference tells allocations still alive from those freed.
//!
//! Approximations, said in docs/memory.md: a sample stands for its period's faults but only
//! its own page is remembered; `mremap` and `MAP_FIXED` over a range are not followed; a
//! window (the daemon's) forgets its pages, so memory given back later stays `[kept]` in the
//! window that counted it (it was kept at that window's end).

use std::collections::{BTreeMap, HashMap};

use sprof_core::{
    FrameKey, Marker, Pid, ProfileBuilder, Release, ReleaseEvent, Sample, StackId, Tid,
};

/// Pages remembered at most (about 40 bytes each): at the default 256 KiB a sample, 64 GiB of
/// faults. Samples beyond it stay `[kept]` and are counted in
/// [`MemoryStats::untracked_bytes`].
const MAX_PAGES: usize = 1 << 18;

/// What the split saw, for the footer and `--verbose`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of sampled faults moved to `[freed]`.
    pub freed_bytes: u64,
    /// Release records seen (`munmap`, dropping `madvise`, `brk`).
    pub releases: u64,
    /// Bytes of samples not remembered (over the cap): they stay `[kept]`.
    pub untracked_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    tid: Tid,
    stack: StackId,
    bytes: u64,
    /// When it was sampled: a release frees only what faulted in before it. The sampler
    /// delivers a drain's fault samples before its release records, so a page unmapped and
    /// mapped again (malloc reusing the hole) may have a later fault than the release.
    time: u64,
}

/// The sampled pages of each process and its last program break.
#[derive(Default)]
pub(crate) struct Residency {
    /// Whether the source reports releases; without them nothing is marked kept or freed.
    pub tracking: bool,
    /// Faults by page (most pages have one; a page mapped again has more).
    pages: HashMap<Pid, BTreeMap<u64, Vec<Fault>>>,
    brk: HashMap<Pid, u64>,
    remembered: usize,
    pub stats: MemoryStats,
}

impl Residency {
    /// The marker a new fault sample's stack gets at its root, if any.
    pub fn root_marker(&self) -> Option<FrameKey> {
        self.tracking.then_some(FrameKey::Marker(Marker::Kept))
    }

    /// Remembers the page of a fault sample taken at `time`, counted in `stack` (a `[kept]`
    /// stack).
    pub fn on_fault(&mut self, s: &Sample<'_>, stack: StackId, bytes: u64) {
        let fault = Fault {
            tid: s.tid,
            stack,
            bytes,
            time: s.time,
        };
        self.remember(s.pid, s.addr, fault);
    }

    fn remember(&mut self, pid: Pid, addr: u64, fault: Fault) {
        if !self.tracking {
            return;
        }
        if self.remembered >= MAX_PAGES {
            self.stats.untracked_bytes += fault.bytes;
            return;
        }
        let pages = self.pages.entry(pid).or_default();
        pages.entry(addr & !0xfff).or_default().push(fault);
        self.remembered += 1;
    }

    /// Moves the samples of the pages `release` gives back to their `[freed]` stacks.
    pub fn on_release(&mut self, builder: &mut ProfileBuilder, r: &ReleaseEvent) {
        self.stats.releases += 1;
        let (start, end) = match r.release {
            Release::Range { addr, len } => (addr, addr.saturating_add(len)),
            Release::BrkTo(new) => match self.brk.insert(r.pid, new) {
                Some(old) if new < old => (new, old),
                _ => return,
            },
        };
        let Some(pages) = self.pages.get_mut(&r.pid) else {
            return;
        };
        let (mut freed, mut emptied) = (Vec::new(), Vec::new());
        for (&addr, faults) in pages.range_mut(start..end) {
            faults.retain(|f| {
                let before = f.time <= r.time;
                if before {
                    freed.push(*f);
                }
                !before
            });
            if faults.is_empty() {
                emptied.push(addr);
            }
        }
        for addr in emptied {
            pages.remove(&addr);
        }
        self.remembered -= freed.len();
        for f in freed {
            let moved = builder
                .with_root(f.stack, FrameKey::Marker(Marker::Freed))
                .is_some_and(|to| builder.move_counts(r.pid, f.tid, f.stack, to, 1, f.bytes));
            if moved {
                self.stats.freed_bytes += f.bytes;
            }
        }
    }

    /// Forgets a process that exited or exec'd: what it had is neither freed nor kept by
    /// anyone now.
    pub fn forget(&mut self, pid: Pid) {
        if let Some(pages) = self.pages.remove(&pid) {
            self.remembered -= pages.values().map(Vec::len).sum::<usize>();
        }
        self.brk.remove(&pid);
    }

    /// A window was taken: its counts are gone, so its pages cannot move any more.
    pub fn new_window(&mut self) {
        self.pages.clear();
        self.remembered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> FrameKey {
        FrameKey::Kernel(0xffff_ffff_8100_0000 + n)
    }

    #[test]
    fn released_ranges_move_their_samples_and_a_lower_break_frees_the_heap_above() {
        let mut b = ProfileBuilder::new();
        let mut r = Residency {
            tracking: true,
            ..Residency::default()
        };
        let (pid, tid) = (Pid(7), Tid(7));
        let kept = [key(1), r.root_marker().unwrap()];
        let add = |b: &mut ProfileBuilder, r: &mut Residency, addr, time| {
            b.add_sample(pid, tid, &kept, 4096);
            let stack = b.intern_stack_leaf_first(&kept).unwrap();
            let fault = Fault {
                tid,
                stack,
                bytes: 4096,
                time,
            };
            r.remember(pid, addr, fault);
        };
        for addr in [0x1000, 0x2000, 0x9000, 0x5_0000] {
            add(&mut b, &mut r, addr + 0x10, 10);
        }
        // Mapped again after the release below, and faulted in: that one stays kept.
        add(&mut b, &mut r, 0x1000, 30);
        let ev = |release| ReleaseEvent {
            pid,
            tid,
            time: 20,
            release,
        };
        r.on_release(
            &mut b,
            &ev(Release::Range {
                addr: 0x1000,
                len: 0x2000,
            }),
        );
        r.on_release(&mut b, &ev(Release::BrkTo(0x6_0000)));
        r.on_release(&mut b, &ev(Release::BrkTo(0x4_0000)));
        assert_eq!(
            r.stats.freed_bytes,
            3 * 4096,
            "two pages unmapped, one under the old break"
        );
        let p = b.snapshot();
        let by_root = |m: Marker| -> u64 {
            p.samples
                .iter()
                .filter(|s| {
                    let mut out = Vec::new();
                    p.stack_frames(s.stack, &mut out);
                    p.frames[out[0].0 as usize] == FrameKey::Marker(m)
                })
                .map(|s| s.counts.period)
                .sum()
        };
        assert_eq!(
            (by_root(Marker::Kept), by_root(Marker::Freed)),
            (2 * 4096, 3 * 4096),
            "the page mapped again after the release stays kept"
        );
        r.forget(pid);
        assert_eq!(r.remembered, 0);
    }
}
