//! Off-CPU time: how long threads stayed switched out, and where.
//!
//! Two streams meet here. **Switch records** (`PERF_RECORD_SWITCH`, every switch, a few dozen
//! bytes each) time every off-CPU interval of every thread exactly: switch-out to switch-in.
//! **Context-switch samples** carry the stack where a thread blocked, but the kernel thins
//! them on threads that switch often (frequency mode: about `-F` samples per thread and
//! second, each standing for `period` switches), so the cost of stack copies stays bounded on
//! a target switching 100 000 times a second.
//!
//! Each interval goes to the stack of the sample taken at its switch-out; an interval whose
//! switch-out was not sampled goes to the thread's most recent sampled stack (the thinned
//! switches are statistically like the sampled ones), or to `[off-cpu: not sampled]` before
//! the thread's first sample. Totals per thread are therefore exact whatever the thinning,
//! and stacks are exact where every switch is sampled.
//!
//! Within one drain the sampler delivers switch records before samples, and an interval may
//! end in a later drain than it starts, so intervals and samples wait here until
//! [`OffCpu::end_of_drain`] pairs them by time.

use std::collections::HashMap;

use sprof_core::{FrameKey, Marker, Pid, ProfileBuilder, StackId, SwitchEvent, Tid};

/// How far before its switch-out record a context-switch sample may be stamped (both are
/// taken in the same scheduler call, microseconds apart).
const MATCH_SLACK_NS: u64 = 200_000;
/// Closed intervals and samples held per thread between drains; beyond it the oldest
/// intervals are attributed at once.
const MAX_HELD: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Sampled {
    pid: Pid,
    stack: StackId,
    time: u64,
}

#[derive(Debug, Default)]
struct ThreadState {
    pid: Option<Pid>,
    /// Switched out at this time, not yet back; with the sample taken then, once known.
    open: Option<(u64, Option<Sampled>)>,
    /// Closed intervals of this drain: (out, in, sample taken at out).
    closed: Vec<(u64, u64, Option<Sampled>)>,
    /// Samples of this drain not yet paired.
    samples: Vec<Sampled>,
    /// The last sampled stack: where unsampled intervals go.
    last: Option<Sampled>,
}

/// Counters for footers and `-v`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffCpuStats {
    /// Context-switch samples.
    pub samples: u64,
    /// Off-CPU intervals timed by switch records.
    pub intervals: u64,
    /// Intervals whose switch-out was sampled (their stack is exact).
    pub sampled_intervals: u64,
    /// Largest period of a context-switch sample: more than 1 means the kernel sampled one
    /// switch in `period` (a busy switcher).
    pub max_period: u64,
    /// Off-CPU nanoseconds attributed.
    pub attributed_ns: u64,
}

/// The pairing of switch intervals with switch-out samples.
#[derive(Debug, Default)]
pub struct OffCpu {
    threads: HashMap<Tid, ThreadState>,
    unsampled: Option<StackId>,
    pub stats: OffCpuStats,
}

impl OffCpu {
    /// A switch-out sample of `pid/tid` at `time` whose stack is `stack`.
    pub fn on_sample(&mut self, (pid, tid): (Pid, Tid), stack: StackId, time: u64, period: u64) {
        self.stats.samples += 1;
        self.stats.max_period = self.stats.max_period.max(period);
        let t = self.threads.entry(tid).or_default();
        t.pid = Some(pid);
        t.samples.push(Sampled { pid, stack, time });
    }

    /// A switch record.
    pub fn on_switch(&mut self, profile: &mut ProfileBuilder, sw: &SwitchEvent) -> Vec<(Pid, Tid)> {
        let t = self.threads.entry(sw.tid).or_default();
        t.pid.get_or_insert(sw.pid);
        if sw.out {
            t.open = Some((sw.time, None));
        } else if let Some((out, sampled)) = t.open.take() {
            t.closed.push((out, sw.time.max(out), sampled));
            if t.closed.len() > MAX_HELD {
                return self.pair(profile, sw.tid);
            }
        }
        Vec::new()
    }

    /// Pairs what this drain delivered; returns threads that entered the profile.
    pub fn end_of_drain(&mut self, profile: &mut ProfileBuilder) -> Vec<(Pid, Tid)> {
        let tids: Vec<Tid> = self
            .threads
            .iter()
            .filter(|(_, t)| !t.closed.is_empty() || !t.samples.is_empty())
            .map(|(tid, _)| *tid)
            .collect();
        tids.into_iter()
            .flat_map(|tid| self.pair(profile, tid))
            .collect()
    }

    fn pair(&mut self, profile: &mut ProfileBuilder, tid: Tid) -> Vec<(Pid, Tid)> {
        let Some(t) = self.threads.get_mut(&tid) else {
            return Vec::new();
        };
        let mut samples = std::mem::take(&mut t.samples);
        samples.sort_by_key(|s| s.time);
        let mut next = 0;
        let mut attributed = Vec::new();
        for (out, inn, mut sampled) in std::mem::take(&mut t.closed) {
            // Samples before this interval's switch-out belong to earlier, unrecorded switches
            // (records lost): they only update the thread's last stack.
            while next < samples.len() && samples[next].time + MATCH_SLACK_NS < out {
                t.last = Some(samples[next]);
                next += 1;
            }
            if sampled.is_none() && next < samples.len() && samples[next].time < inn {
                sampled = Some(samples[next]);
                next += 1;
            }
            attributed.push((out, inn, sampled.is_some(), sampled.or(t.last)));
            if sampled.is_some() {
                t.last = sampled;
            }
        }
        // A sample taken at the switch-out of the interval still open waits for its end.
        for s in &samples[next..] {
            match &mut t.open {
                Some((out, slot @ None)) if s.time + MATCH_SLACK_NS >= *out => *slot = Some(*s),
                _ => t.last = Some(*s),
            }
        }
        let pid = t.pid.unwrap_or(Pid(tid.0));
        let mut named = Vec::new();
        for (out, inn, exact, sampled) in attributed {
            let (pid, stack) = match sampled {
                Some(s) => (s.pid, s.stack),
                None => (pid, self.unsampled_stack(profile)),
            };
            self.stats.intervals += 1;
            self.stats.sampled_intervals += u64::from(exact);
            self.stats.attributed_ns += inn - out;
            if profile.add_counts(pid, tid, stack, 1, inn - out).new_thread {
                named.push((pid, tid));
            }
        }
        named
    }

    fn unsampled_stack(&mut self, profile: &mut ProfileBuilder) -> StackId {
        *self.unsampled.get_or_insert_with(|| {
            profile
                .intern_stack_leaf_first(&[FrameKey::Marker(Marker::OffCpuUnsampled)])
                .expect("a one-frame stack interns")
        })
    }

    /// Threads still switched out at `now` (CLOCK_MONOTONIC ns) were off the CPU until now:
    /// closes their intervals and pairs everything. Call once at the end of a session.
    pub fn settle(&mut self, profile: &mut ProfileBuilder, now: u64) -> Vec<(Pid, Tid)> {
        for t in self.threads.values_mut() {
            if let Some((out, sampled)) = t.open.take() {
                t.closed.push((out, now.max(out), sampled));
            }
        }
        self.end_of_drain(profile)
    }

    /// Forgets an exited thread.
    pub fn forget(&mut self, tid: Tid) {
        self.threads.remove(&tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(b: &mut ProfileBuilder, n: u64) -> StackId {
        b.intern_stack_leaf_first(&[FrameKey::Kernel(n)]).unwrap()
    }

    fn switch(tid: u32, time: u64, out: bool) -> SwitchEvent {
        SwitchEvent {
            pid: Pid(1),
            tid: Tid(tid),
            time,
            out,
            preempted: false,
        }
    }

    /// Period per stack of thread `tid`.
    fn periods(b: &ProfileBuilder) -> Vec<(u32, u32, u64)> {
        let p = b.snapshot();
        let mut v: Vec<_> = p
            .samples
            .iter()
            .map(|c| {
                let frame = p.stacks[c.stack.0 as usize].1;
                let n = match p.frames[frame.0 as usize] {
                    FrameKey::Kernel(n) => n as u32,
                    _ => 0,
                };
                (p.threads[c.thread].tid.0, n, c.counts.period)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn intervals_take_the_stack_sampled_at_their_switch_out() {
        let mut b = ProfileBuilder::new();
        let (sleep, read) = (stack(&mut b, 1), stack(&mut b, 2));
        let mut o = OffCpu::default();
        // One drain: records first (two intervals of thread 1), then both samples.
        o.on_switch(&mut b, &switch(1, 1000, true));
        o.on_switch(&mut b, &switch(1, 4000, false));
        o.on_switch(&mut b, &switch(1, 5000, true));
        o.on_switch(&mut b, &switch(1, 6000, false));
        o.on_sample((Pid(1), Tid(1)), sleep, 1000, 1);
        o.on_sample((Pid(1), Tid(1)), read, 5001, 1);
        // An interval that ends in a later drain, its sample in this one.
        o.on_switch(&mut b, &switch(1, 7000, true));
        o.on_sample((Pid(1), Tid(1)), sleep, 7000, 1);
        o.end_of_drain(&mut b);
        o.on_switch(&mut b, &switch(1, 9000, false));
        o.end_of_drain(&mut b);
        assert_eq!(periods(&b), vec![(1, 1, 3000 + 2000), (1, 2, 1000)]);
        assert_eq!((o.stats.intervals, o.stats.sampled_intervals), (3, 3));
    }

    #[test]
    fn thinned_switches_take_the_last_sampled_stack_and_totals_stay_exact() {
        let mut b = ProfileBuilder::new();
        let s = stack(&mut b, 1);
        let mut o = OffCpu::default();
        // An interval before any sample, then one sampled switch in three.
        o.on_switch(&mut b, &switch(2, 0, true));
        o.on_switch(&mut b, &switch(2, 10, false));
        for k in 0..9u64 {
            o.on_switch(&mut b, &switch(2, 100 * k + 50, true));
            o.on_switch(&mut b, &switch(2, 100 * k + 90, false));
            if k % 3 == 0 {
                o.on_sample((Pid(1), Tid(2)), s, 100 * k + 50, 3);
            }
        }
        o.end_of_drain(&mut b);
        let p = periods(&b);
        assert_eq!(p, vec![(2, 0, 10), (2, 1, 9 * 40)], "{p:?}");
        assert_eq!(o.stats.max_period, 3);
        assert_eq!(o.stats.sampled_intervals, 3);
    }

    #[test]
    fn threads_still_out_are_settled_at_the_end() {
        let mut b = ProfileBuilder::new();
        let s = stack(&mut b, 1);
        let mut o = OffCpu::default();
        o.on_switch(&mut b, &switch(3, 1000, true));
        o.on_sample((Pid(1), Tid(3)), s, 1000, 1);
        o.end_of_drain(&mut b);
        assert!(periods(&b).is_empty());
        assert_eq!(o.settle(&mut b, 3000), vec![(Pid(1), Tid(3))]);
        assert_eq!(periods(&b), vec![(3, 1, 2000)]);
    }
}
