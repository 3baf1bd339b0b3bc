//! Sampling policy: which sample fields a stack-capture mode needs and how large the ring
//! buffers must be for it. Drivers say *what* they want (frequency, how stacks are captured,
//! kernel frames); this module turns that into perf attributes.

use sprof_core::{Measure, SampleKind};

use crate::procfs;
use crate::record::SampleLayout;
use crate::sys::{EventKind, EventSpec};

/// How user stacks are captured per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackCapture {
    /// The kernel walks frame pointers and records the callchain: cheapest.
    FramePointer,
    /// The user registers and the top `bytes` of the user stack are copied, for an unwinder
    /// that walks DWARF CFI (or frame pointers) over the copy.
    UserStack { bytes: u32 },
}

/// What a driver asks of the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingPolicy {
    pub event: EventKind,
    pub frequency: u64,
    pub capture: StackCapture,
    /// Record kernel frames.
    pub kernel_frames: bool,
    /// Count while threads run in the kernel too (needs privilege unless paranoid <= 1).
    pub count_kernel: bool,
    /// Wake the reader after every sample instead of at the buffer's watermark, for readers
    /// that must look at the target while the sample is fresh (interpreter frames).
    pub wakeup_per_sample: bool,
    /// What time is measured: on-CPU samples (the clock), plus or instead of context-switch
    /// samples timed by switch records.
    pub time: Measure,
    /// Memory mode: the new resident bytes one page-fault sample stands for (rounded to whole
    /// pages).
    pub sample_bytes: u64,
}

/// Memory mode's default bytes per page-fault sample: 400 MiB of growth gives 1600 samples.
pub const DEFAULT_SAMPLE_BYTES: u64 = 256 << 10;

impl SamplingPolicy {
    /// The perf attributes for this policy; `enable_on_exec` for a launched command.
    pub fn event_spec(&self, event: EventKind, enable_on_exec: bool) -> EventSpec {
        let copy_stack = matches!(self.capture, StackCapture::UserStack { .. });
        EventSpec {
            kind: event,
            frequency: self.frequency,
            layout: SampleLayout {
                callchain: !copy_stack || self.kernel_frames,
                regs_user: copy_stack,
                stack_user: match self.capture {
                    StackCapture::UserStack { bytes } => bytes,
                    StackCapture::FramePointer => 0,
                },
                period: true,
                addr: false,
                raw: false,
            },
            count_kernel: self.count_kernel,
            kernel_callchain: self.kernel_frames,
            user_callchain: !copy_stack,
            enable_on_exec,
            wakeup_per_sample: self.wakeup_per_sample,
            task_records: true,
            switch_records: false,
            fixed_period: None,
            inherit: true,
        }
    }

    /// The events to open per thread and CPU, each with the kind of its samples: the clock for
    /// on-CPU time, context switches (with switch records) for off-CPU time. The first one
    /// also reports mmap, comm and task records.
    pub fn channels(&self, event: EventKind, enable_on_exec: bool) -> Vec<(EventSpec, SampleKind)> {
        let timer = self.event_spec(event, enable_on_exec);
        // Every switch is sampled (period 1) until the sampler sees more than its budget of
        // switch samples a second; then it raises the period (see `Sampler`). The kernel's own
        // frequency mode is no good here: it adjusts the period from bursts of switches and
        // then thins threads that switch a few times a second.
        let switches = EventSpec {
            kind: EventKind::ContextSwitches,
            switch_records: true,
            fixed_period: Some(1),
            inherit: false,
            layout: SampleLayout {
                period: false,
                ..timer.layout
            },
            ..timer
        };
        match self.time {
            Measure::Cpu => vec![(timer, SampleKind::Timer)],
            Measure::Wall => vec![
                (timer, SampleKind::Timer),
                (
                    EventSpec {
                        task_records: false,
                        ..switches
                    },
                    SampleKind::Switch,
                ),
            ],
            Measure::OffCpu => vec![(switches, SampleKind::Switch)],
            Measure::Memory => self.memory_channels(timer),
        }
    }

    /// The faults this policy samples once in (at least one).
    pub fn fault_period(&self) -> u64 {
        (self.sample_bytes / crate::sys::page_size() as u64).max(1)
    }

    /// Memory mode: page faults every [`SamplingPolicy::fault_period`] with the stack and the
    /// faulting address (no `PERF_SAMPLE_PERIOD`: a fixed-period software event that asks for
    /// it samples every fault), and the syscalls that give memory back, each without a stack,
    /// where tracefs names them ([`crate::tracepoints::release_syscalls`]).
    fn memory_channels(&self, timer: EventSpec) -> Vec<(EventSpec, SampleKind)> {
        let faults = EventSpec {
            kind: EventKind::PageFaults,
            fixed_period: Some(self.fault_period()),
            layout: SampleLayout {
                period: false,
                addr: true,
                ..timer.layout
            },
            ..timer
        };
        let mut channels = vec![(faults, SampleKind::Fault)];
        if let Ok(release) = crate::tracepoints::release_syscalls() {
            for id in release.ids() {
                let spec = EventSpec {
                    kind: EventKind::Tracepoint(id),
                    fixed_period: Some(1),
                    // A tracepoint fires in the kernel: excluding it would count nothing.
                    count_kernel: true,
                    kernel_callchain: false,
                    user_callchain: false,
                    task_records: false,
                    wakeup_per_sample: false,
                    layout: SampleLayout {
                        callchain: false,
                        regs_user: false,
                        stack_user: 0,
                        period: false,
                        addr: false,
                        raw: true,
                    },
                    ..timer
                };
                channels.push((spec, SampleKind::Release));
            }
        }
        channels
    }

    /// [`SamplingPolicy::channels`] with the side records (mmap, comm, task) moved to a
    /// dummy event's ring buffer of their own: a process that maps and unmaps in a loop then
    /// fills only that buffer, and costs the host's samples nothing. What it loses is
    /// counted apart ([`sprof_core::SourceStats::lost_side_records`]); the engine reads the
    /// maps of a process sampled in unknown code again.
    pub fn channels_with_side_band(
        &self,
        event: EventKind,
        enable_on_exec: bool,
    ) -> Vec<(EventSpec, SampleKind)> {
        let mut channels = self.channels(event, enable_on_exec);
        let Some(&(first, _)) = channels.first() else {
            return channels;
        };
        for (spec, _) in &mut channels {
            spec.task_records = false;
        }
        let side = EventSpec {
            kind: EventKind::Dummy,
            task_records: true,
            switch_records: false,
            wakeup_per_sample: false,
            ..first
        };
        channels.push((side, SampleKind::Timer));
        channels
    }

    /// Ring-buffer size per CPU in pages: room for about half a second of samples of one busy
    /// thread at the requested rate, within sane bounds, and at most 128 MiB over all CPUs
    /// on many-CPU hosts.
    pub fn data_pages(&self) -> usize {
        let page = crate::sys::page_size() as u64;
        let per_sample = match self.capture {
            StackCapture::FramePointer => 1024,
            StackCapture::UserStack { bytes } => u64::from(bytes) + 256,
        };
        // Memory mode samples as fast as the target faults: a writer faulting 1 GB/s at the
        // default 256 KiB per sample makes 4000 samples a second.
        let rate = match self.time {
            Measure::Memory => (4_000 * DEFAULT_SAMPLE_BYTES / self.sample_bytes.max(1)).max(1),
            _ => self.frequency.max(1),
        };
        let bytes = per_sample * rate / 2;
        let cpus = procfs::online_cpus().len().max(1) as u64;
        let cap = (32768 / cpus).clamp(64, 2048);
        ((bytes / page).clamp(64, cap) as usize).next_power_of_two()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(capture: StackCapture, kernel_frames: bool) -> SamplingPolicy {
        SamplingPolicy {
            event: EventKind::CpuClock,
            frequency: 999,
            capture,
            kernel_frames,
            count_kernel: true,
            wakeup_per_sample: false,
            time: Measure::Cpu,
            sample_bytes: DEFAULT_SAMPLE_BYTES,
        }
    }

    #[test]
    fn stack_copy_asks_for_registers_and_stack_not_the_user_callchain() {
        let p = policy(StackCapture::UserStack { bytes: 16384 }, false);
        let spec = p.event_spec(EventKind::CpuClock, false);
        assert!(spec.layout.regs_user && !spec.layout.callchain && !spec.user_callchain);
        assert_eq!(spec.layout.stack_user, 16384);
        let spec = policy(StackCapture::UserStack { bytes: 8192 }, true)
            .event_spec(EventKind::CpuClock, true);
        assert!(spec.layout.callchain && spec.kernel_callchain && spec.enable_on_exec);
        let fp = policy(StackCapture::FramePointer, false).event_spec(EventKind::CpuClock, false);
        assert!(fp.layout.callchain && fp.user_callchain && !fp.layout.regs_user);
    }

    #[test]
    fn time_modes_choose_their_events() {
        let mut p = policy(StackCapture::UserStack { bytes: 8192 }, false);
        let kinds = |p: &SamplingPolicy| -> Vec<(EventKind, SampleKind, bool, bool)> {
            p.channels(EventKind::CpuClock, false)
                .into_iter()
                .map(|(s, k)| (s.kind, k, s.task_records, s.switch_records))
                .collect()
        };
        assert_eq!(
            kinds(&p),
            vec![(EventKind::CpuClock, SampleKind::Timer, true, false)]
        );
        p.time = Measure::Wall;
        assert_eq!(
            kinds(&p),
            vec![
                (EventKind::CpuClock, SampleKind::Timer, true, false),
                (EventKind::ContextSwitches, SampleKind::Switch, false, true)
            ]
        );
        p.time = Measure::OffCpu;
        assert_eq!(
            kinds(&p),
            vec![(EventKind::ContextSwitches, SampleKind::Switch, true, true)]
        );
    }

    #[test]
    fn buffers_are_powers_of_two_within_bounds() {
        for capture in [
            StackCapture::FramePointer,
            StackCapture::UserStack { bytes: 65528 },
        ] {
            let pages = policy(capture, false).data_pages();
            assert!(
                pages.is_power_of_two() && (64..=2048).contains(&pages),
                "{pages}"
            );
        }
    }
}
