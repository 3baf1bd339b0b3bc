//! Decoding of perf ring-buffer records into [`Event`]s.
//!
//! Pure functions over byte slices, so they are tested without perf. The sample layout is
//! fixed by the attributes sprofd opens its events with ([`SampleLayout`]); records of other
//! types are skipped. Every read is bounds-checked: a record that does not parse is dropped
//! and counted, never a panic.

use perf_event_open_sys::bindings as sys;
use sprof_core::{
    maps::classify, split_callchain, CommEvent, Event, ExitEvent, ForkEvent, Mapping, MmapEvent,
    Pid, Sample, SampleKind, SwitchEvent, Tid, UserRegs,
};

/// Which optional fields our sample records carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleLayout {
    pub callchain: bool,
    /// `PERF_SAMPLE_REGS_USER` with the mask bp, sp, ip (x86_64 register numbers 6, 7, 8).
    pub regs_user: bool,
    /// Requested `PERF_SAMPLE_STACK_USER` size, 0 when not sampled.
    pub stack_user: u32,
    /// `PERF_SAMPLE_PERIOD`. A software event with a fixed period that asks for it is sampled
    /// at every event whatever the period (the kernel's `perf_swevent_event`), so thinned
    /// context-switch sampling goes without (the sampler knows the period it set).
    pub period: bool,
    /// `PERF_SAMPLE_ADDR`: the faulting address of a page fault.
    pub addr: bool,
    /// `PERF_SAMPLE_RAW`: a tracepoint's record.
    pub raw: bool,
}

/// x86_64 perf register numbers (arch/x86/include/uapi/asm/perf_regs.h).
pub const REG_BP: u64 = 6;
pub const REG_SP: u64 = 7;
pub const REG_IP: u64 = 8;
/// The register mask sprofd samples; the kernel writes set bits in ascending order.
pub const REGS_MASK: u64 = (1 << REG_BP) | (1 << REG_SP) | (1 << REG_IP);

impl SampleLayout {
    /// The `sample_type` bits matching this layout.
    pub fn sample_type(&self) -> u64 {
        let mut t = (sys::PERF_SAMPLE_IP
            | sys::PERF_SAMPLE_TID
            | sys::PERF_SAMPLE_TIME
            | sys::PERF_SAMPLE_CPU) as u64;
        if self.addr {
            t |= sys::PERF_SAMPLE_ADDR as u64;
        }
        if self.period {
            t |= sys::PERF_SAMPLE_PERIOD as u64;
        }
        if self.raw {
            t |= sys::PERF_SAMPLE_RAW as u64;
        }
        if self.callchain {
            t |= sys::PERF_SAMPLE_CALLCHAIN as u64;
        }
        if self.regs_user {
            t |= sys::PERF_SAMPLE_REGS_USER as u64;
        }
        if self.stack_user > 0 {
            t |= sys::PERF_SAMPLE_STACK_USER as u64;
        }
        t
    }
}

/// A cursor over a record body that fails softly.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Cursor { data, pos: 0 }
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.bytes(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn cstr(&mut self) -> Option<String> {
        let rest = self.data.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(String::from_utf8_lossy(&rest[..len]).into_owned())
    }
}

/// `PERF_RECORD_LOST_SAMPLES`, not in every bindings version.
const PERF_RECORD_LOST_SAMPLES: u32 = 13;
const PERF_RECORD_UNTHROTTLE: u32 = 6;
/// `PERF_RECORD_MISC_SWITCH_OUT_PREEMPT` (Linux 4.17), not in the bindings.
const PERF_RECORD_MISC_SWITCH_OUT_PREEMPT: u32 = 1 << 14;

/// Decodes one record. `body` excludes the 8-byte header. Returns `None` for records sprofd
/// does not use and for malformed ones.
pub fn parse_record<'a>(
    kind: u32,
    misc: u16,
    body: &'a [u8],
    layout: &SampleLayout,
) -> Option<Event<'a>> {
    let mut c = Cursor::new(body);
    match kind {
        sys::PERF_RECORD_SAMPLE => parse_sample(&mut c, layout).map(Event::Sample),
        sys::PERF_RECORD_MMAP2 => parse_mmap2(&mut c),
        sys::PERF_RECORD_COMM => {
            let pid = c.u32()?;
            let tid = c.u32()?;
            let comm = c.cstr()?;
            Some(Event::Comm(CommEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                comm,
                exec: u32::from(misc) & sys::PERF_RECORD_MISC_COMM_EXEC != 0,
            }))
        }
        sys::PERF_RECORD_SWITCH => {
            // No body of its own: the sample_id trailer (TID, TIME, CPU) says who and when.
            let pid = c.u32()?;
            let tid = c.u32()?;
            let time = c.u64()?;
            Some(Event::Switch(SwitchEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                time,
                out: u32::from(misc) & sys::PERF_RECORD_MISC_SWITCH_OUT != 0,
                preempted: u32::from(misc) & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
            }))
        }
        sys::PERF_RECORD_FORK | sys::PERF_RECORD_EXIT => {
            let pid = c.u32()?;
            let ppid = c.u32()?;
            let tid = c.u32()?;
            let ptid = c.u32()?;
            let time = c.u64()?;
            if kind == sys::PERF_RECORD_FORK {
                Some(Event::Fork(ForkEvent {
                    pid: Pid(pid),
                    ppid: Pid(ppid),
                    tid: Tid(tid),
                    ptid: Tid(ptid),
                    time,
                }))
            } else {
                Some(Event::Exit(ExitEvent {
                    pid: Pid(pid),
                    tid: Tid(tid),
                    time,
                }))
            }
        }
        sys::PERF_RECORD_LOST => {
            let _id = c.u64()?;
            Some(Event::Lost { count: c.u64()? })
        }
        PERF_RECORD_LOST_SAMPLES => Some(Event::Lost { count: c.u64()? }),
        sys::PERF_RECORD_THROTTLE => Some(Event::Throttle { unthrottle: false }),
        PERF_RECORD_UNTHROTTLE => Some(Event::Throttle { unthrottle: true }),
        _ => None,
    }
}

/// A `PERF_RECORD_MMAP2` body: the mapping, its file identity and protection.
fn parse_mmap2(c: &mut Cursor<'_>) -> Option<Event<'static>> {
    let pid = c.u32()?;
    let tid = c.u32()?;
    let addr = c.u64()?;
    let len = c.u64()?;
    let pgoff = c.u64()?;
    let maj = c.u32()?;
    let min = c.u32()?;
    let ino = c.u64()?;
    let _ino_generation = c.u64()?;
    let prot = c.u32()?;
    let _flags = c.u32()?;
    let path = c.cstr()?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    let kind = classify(&path, ino);
    Some(Event::Mmap(MmapEvent {
        pid: Pid(pid),
        tid: Tid(tid),
        mapping: Mapping {
            start: addr,
            end: addr.checked_add(len)?,
            file_offset: pgoff,
            dev_major: maj,
            dev_minor: min,
            inode: ino,
            path,
            kind,
            executable: prot & libc::PROT_EXEC as u32 != 0,
            deleted,
        },
    }))
}

fn parse_sample<'a>(c: &mut Cursor<'a>, layout: &SampleLayout) -> Option<Sample<'a>> {
    parse_sample_with_raw(c, layout).map(|(s, _)| s)
}

/// Decodes a sample record and its `PERF_SAMPLE_RAW` data (empty when not sampled): what a
/// tracepoint's fields are read from. `body` excludes the 8-byte header.
pub fn parse_raw_sample<'a>(
    body: &'a [u8],
    layout: &SampleLayout,
) -> Option<(Sample<'a>, &'a [u8])> {
    parse_sample_with_raw(&mut Cursor::new(body), layout)
}

fn parse_sample_with_raw<'a>(
    c: &mut Cursor<'a>,
    layout: &SampleLayout,
) -> Option<(Sample<'a>, &'a [u8])> {
    let ip = c.u64()?;
    let pid = c.u32()?;
    let tid = c.u32()?;
    let time = c.u64()?;
    let addr = if layout.addr { c.u64()? } else { 0 };
    let cpu = c.u32()?;
    let _res = c.u32()?;
    let period = if layout.period { c.u64()? } else { 1 };
    let mut callchain: &[u64] = &[];
    if layout.callchain {
        let nr = usize::try_from(c.u64()?).ok()?;
        let bytes = c.bytes(nr.checked_mul(8)?)?;
        callchain = as_u64s(bytes)?;
    }
    let (kernel_chain, user_chain) = split_callchain(callchain);
    let mut raw: &[u8] = &[];
    if layout.raw {
        let size = usize::try_from(c.u32()?).ok()?;
        raw = c.bytes(size)?;
    }
    let mut user_regs = None;
    if layout.regs_user {
        let abi = c.u64()?;
        if abi != 0 {
            // Set bits of REGS_MASK in ascending order: bp, sp, ip.
            let bp = c.u64()?;
            let sp = c.u64()?;
            let ip = c.u64()?;
            user_regs = Some(UserRegs { ip, sp, bp });
        }
    }
    let mut user_stack: &[u8] = &[];
    if layout.stack_user > 0 {
        let size = usize::try_from(c.u64()?).ok()?;
        if size > 0 {
            let data = c.bytes(size)?;
            let dyn_size = usize::try_from(c.u64()?).ok()?;
            user_stack = &data[..dyn_size.min(size)];
        }
    }
    let sample = Sample {
        // The sampler knows which event's buffer the record came from.
        kind: SampleKind::Timer,
        pid: Pid(pid),
        tid: Tid(tid),
        time,
        cpu,
        period,
        ip,
        kernel_chain,
        user_chain,
        user_regs,
        user_stack,
        user_stack_requested: u64::from(layout.stack_user),
        addr,
    };
    Some((sample, raw))
}

/// Views 8-aligned bytes as native-endian u64s without copying. Ring-buffer records are
/// 8-byte aligned and sized; a scratch copy (for a record that wrapped) is a `Vec<u64>`.
fn as_u64s(bytes: &[u8]) -> Option<&[u64]> {
    // SAFETY: u64 has no invalid bit patterns; align_to only yields the middle part when the
    // pointer is suitably aligned, and we reject the slice unless it is entirely that part.
    let (head, mid, tail) = unsafe { bytes.align_to::<u64>() };
    (head.is_empty() && tail.is_empty()).then_some(mid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::event::PERF_CONTEXT_USER;

    fn push64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    fn push32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_ne_bytes());
    }

    /// Builds a sample body in a u64-aligned buffer, as the ring buffer hands it over.
    fn sample_body(layout: &SampleLayout, chain: &[u64], stack: &[u8], dyn_size: u64) -> Vec<u64> {
        let mut v = Vec::new();
        push64(&mut v, 0x401000);
        push32(&mut v, 42);
        push32(&mut v, 43);
        push64(&mut v, 1_000_000);
        push32(&mut v, 1);
        push32(&mut v, 0);
        push64(&mut v, 10_101_010);
        if layout.callchain {
            push64(&mut v, chain.len() as u64);
            for &c in chain {
                push64(&mut v, c);
            }
        }
        if layout.regs_user {
            push64(&mut v, 2);
            push64(&mut v, 0x7ffd_0010);
            push64(&mut v, 0x7ffd_0000);
            push64(&mut v, 0x401000);
        }
        if layout.stack_user > 0 {
            push64(&mut v, stack.len() as u64);
            v.extend_from_slice(stack);
            push64(&mut v, dyn_size);
        }
        v.chunks(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn bytes(v: &[u64]) -> &[u8] {
        // SAFETY: any u64 slice is a valid byte slice of 8x the length.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len() * 8) }
    }

    #[test]
    fn sample_with_callchain_regs_and_stack() {
        let layout = SampleLayout {
            callchain: true,
            regs_user: true,
            stack_user: 16,
            period: true,
            addr: false,
            raw: false,
        };
        let chain = [PERF_CONTEXT_USER, 0x401000, 0x401234];
        let body = sample_body(&layout, &chain, &[7u8; 16], 8);
        let Some(Event::Sample(s)) =
            parse_record(sys::PERF_RECORD_SAMPLE, 0, bytes(&body), &layout)
        else {
            panic!("no sample")
        };
        assert_eq!(
            (s.pid, s.tid, s.cpu, s.period),
            (Pid(42), Tid(43), 1, 10_101_010)
        );
        assert_eq!(
            s.user_regs,
            Some(UserRegs {
                ip: 0x401000,
                sp: 0x7ffd_0000,
                bp: 0x7ffd_0010
            })
        );
        assert_eq!(s.user_stack, &[7u8; 8]);
        // The callchain arrives split, without its context markers.
        assert!(s.kernel_chain.is_empty());
        assert_eq!(s.user_chain, &[0x401000, 0x401234]);
    }

    #[test]
    fn fault_address_and_tracepoint_data_are_read_in_their_places() {
        let layout = SampleLayout {
            callchain: false,
            regs_user: false,
            stack_user: 0,
            period: false,
            addr: true,
            raw: true,
        };
        let mut v = Vec::new();
        push64(&mut v, 0x401000);
        push32(&mut v, 42);
        push32(&mut v, 43);
        push64(&mut v, 1_000);
        push64(&mut v, 0x7f00_dead_b000);
        push32(&mut v, 1);
        push32(&mut v, 0);
        // RAW: a u32 size, then the data, padded so the record stays 8-aligned.
        push32(&mut v, 12);
        v.extend_from_slice(&[5u8; 12]);
        let (s, raw) = parse_raw_sample(&v, &layout).unwrap();
        assert_eq!(
            (s.addr, s.cpu, s.period, s.time),
            (0x7f00_dead_b000, 1, 1, 1_000)
        );
        assert_eq!(raw, &[5u8; 12]);
        for cut in 0..v.len() {
            assert!(parse_raw_sample(&v[..cut], &layout).is_none());
        }
    }

    #[test]
    fn truncated_sample_is_dropped() {
        let layout = SampleLayout {
            callchain: true,
            regs_user: false,
            stack_user: 0,
            period: true,
            addr: false,
            raw: false,
        };
        let body = sample_body(&layout, &[1, 2, 3], &[], 0);
        let b = bytes(&body);
        for cut in 0..b.len() {
            assert!(parse_record(sys::PERF_RECORD_SAMPLE, 0, &b[..cut], &layout).is_none());
        }
        // A callchain length that overflows is rejected, not allocated.
        let mut huge = body.clone();
        huge[5] = u64::MAX;
        assert!(parse_record(sys::PERF_RECORD_SAMPLE, 0, bytes(&huge), &layout).is_none());
    }

    #[test]
    fn mmap2_and_comm_records() {
        let mut v = Vec::new();
        push32(&mut v, 10);
        push32(&mut v, 11);
        push64(&mut v, 0x7f00_0000_0000);
        push64(&mut v, 0x2000);
        push64(&mut v, 0x1000);
        push32(&mut v, 0xfe);
        push32(&mut v, 1);
        push64(&mut v, 99);
        push64(&mut v, 0);
        push32(&mut v, (libc::PROT_READ | libc::PROT_EXEC) as u32);
        push32(&mut v, 0);
        v.extend_from_slice(b"/tmp/libplug.so (deleted)\0\0\0\0\0\0\0");
        let layout = SampleLayout {
            callchain: true,
            regs_user: false,
            stack_user: 0,
            period: true,
            addr: false,
            raw: false,
        };
        let Some(Event::Mmap(m)) = parse_record(sys::PERF_RECORD_MMAP2, 0, &v, &layout) else {
            panic!()
        };
        assert_eq!(m.mapping.path, "/tmp/libplug.so");
        assert!(m.mapping.deleted && m.mapping.executable);
        assert_eq!(m.mapping.end, 0x7f00_0000_2000);

        let mut c = Vec::new();
        push32(&mut c, 5);
        push32(&mut c, 5);
        c.extend_from_slice(b"python3\0");
        let misc = sys::PERF_RECORD_MISC_COMM_EXEC as u16;
        let Some(Event::Comm(e)) = parse_record(sys::PERF_RECORD_COMM, misc, &c, &layout) else {
            panic!()
        };
        assert_eq!(e.comm, "python3");
        assert!(e.exec);
    }
}
