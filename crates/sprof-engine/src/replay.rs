//! A recording of an event stream, and a source that replays it.
//!
//! The format is sprofd's own and deliberately small: a raw sample is a complete test
//! fixture (registers, copied stack bytes, callchains), so the engine, fork/exec/exit
//! handling and ordering are tested from recordings without root or perf. `sprofd record
//! --save-events FILE` writes one from a live session.
//!
//! Layout (all integers little-endian): the magic `SPROFEV1`, then records of
//! `tag: u8, length: u32, payload`. Unknown tags are skipped by length, so the format can
//! grow; a truncated or malformed record ends the replay and is counted, never a panic.

use std::io::{self, Write};

use sprof_core::{
    CommEvent, Event, EventSource, ExitEvent, ForkEvent, Mapping, MappingKind, MmapEvent, Pid,
    Release, ReleaseEvent, Sample, SampleKind, SourceStats, SwitchEvent, Tid, UserRegs,
};

const MAGIC: &[u8; 8] = b"SPROFEV1";
const SAMPLE: u8 = 1;
const MMAP: u8 = 2;
const COMM: u8 = 3;
const FORK: u8 = 4;
const EXIT: u8 = 5;
const LOST: u8 = 6;
const THROTTLE: u8 = 7;
const SWITCH: u8 = 8;
/// A sample of the context-switch event (same payload as SAMPLE).
const SWITCH_SAMPLE: u8 = 9;
/// A page-fault sample: SAMPLE's payload, then the faulting address.
const FAULT_SAMPLE: u8 = 10;
/// Memory given back: pid, tid, time, then 0 + addr + len (a range) or 1 + the new break.
const RELEASE: u8 = 11;

/// Why a recording cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("not an sprofd event recording (bad magic)")]
    BadMagic,
    #[error("reading the recording: {0}")]
    Io(#[from] io::Error),
}

/// Writes events in the recording format.
pub struct Recorder<W: Write> {
    out: W,
    buf: Vec<u8>,
    pub events: u64,
}

impl<W: Write> Recorder<W> {
    pub fn new(mut out: W) -> io::Result<Recorder<W>> {
        out.write_all(MAGIC)?;
        Ok(Recorder {
            out,
            buf: Vec::new(),
            events: 0,
        })
    }

    /// Appends one event.
    pub fn write(&mut self, event: &Event<'_>) -> io::Result<()> {
        self.buf.clear();
        let tag = encode(event, &mut self.buf);
        self.out.write_all(&[tag])?;
        self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.buf)?;
        self.events += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u32(b, v.len() as u32);
    b.extend_from_slice(v);
}
fn put_chain(b: &mut Vec<u8>, v: &[u64]) {
    put_u32(b, v.len() as u32);
    for &x in v {
        put_u64(b, x);
    }
}

fn encode(event: &Event<'_>, b: &mut Vec<u8>) -> u8 {
    match event {
        Event::Sample(s) => encode_sample(s, b),
        Event::Mmap(m) => encode_mmap(m, b),
        Event::Comm(c) => {
            put_u32(b, c.pid.0);
            put_u32(b, c.tid.0);
            b.push(u8::from(c.exec));
            put_bytes(b, c.comm.as_bytes());
            COMM
        }
        Event::Fork(f) => {
            for v in [f.pid.0, f.ppid.0, f.tid.0, f.ptid.0] {
                put_u32(b, v);
            }
            put_u64(b, f.time);
            FORK
        }
        Event::Exit(x) => {
            put_u32(b, x.pid.0);
            put_u32(b, x.tid.0);
            put_u64(b, x.time);
            EXIT
        }
        Event::Switch(x) => {
            put_u32(b, x.pid.0);
            put_u32(b, x.tid.0);
            put_u64(b, x.time);
            b.push(u8::from(x.out) | u8::from(x.preempted) << 1);
            SWITCH
        }
        Event::Lost { count } => {
            put_u64(b, *count);
            LOST
        }
        Event::Throttle { unthrottle } => {
            b.push(u8::from(*unthrottle));
            THROTTLE
        }
        Event::Release(r) => {
            put_u32(b, r.pid.0);
            put_u32(b, r.tid.0);
            put_u64(b, r.time);
            match r.release {
                Release::Range { addr, len } => {
                    b.push(0);
                    put_u64(b, addr);
                    put_u64(b, len);
                }
                Release::BrkTo(end) => {
                    b.push(1);
                    put_u64(b, end);
                }
            }
            RELEASE
        }
    }
}

fn encode_sample(s: &Sample<'_>, b: &mut Vec<u8>) -> u8 {
    put_u32(b, s.pid.0);
    put_u32(b, s.tid.0);
    put_u64(b, s.time);
    put_u32(b, s.cpu);
    put_u64(b, s.period);
    put_u64(b, s.ip);
    match s.user_regs {
        Some(r) => {
            b.push(1);
            put_u64(b, r.ip);
            put_u64(b, r.sp);
            put_u64(b, r.bp);
        }
        None => b.push(0),
    }
    put_u64(b, s.user_stack_requested);
    put_chain(b, s.kernel_chain);
    put_chain(b, s.user_chain);
    put_bytes(b, s.user_stack);
    match s.kind {
        SampleKind::Timer | SampleKind::Release => SAMPLE,
        SampleKind::Switch => SWITCH_SAMPLE,
        SampleKind::Fault => {
            put_u64(b, s.addr);
            FAULT_SAMPLE
        }
    }
}

fn encode_mmap(m: &MmapEvent, b: &mut Vec<u8>) -> u8 {
    put_u32(b, m.pid.0);
    put_u32(b, m.tid.0);
    let p = &m.mapping;
    put_u64(b, p.start);
    put_u64(b, p.end);
    put_u64(b, p.file_offset);
    put_u32(b, p.dev_major);
    put_u32(b, p.dev_minor);
    put_u64(b, p.inode);
    b.push(u8::from(p.executable) | u8::from(p.deleted) << 1);
    b.push(match p.kind {
        MappingKind::File => 0,
        MappingKind::Vdso => 1,
        MappingKind::Anonymous => 2,
        MappingKind::Special(_) => 3,
    });
    put_bytes(b, p.path.as_bytes());
    MMAP
}

/// A bounds-checked reader over one record's payload.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    fn chain(&mut self, out: &mut Vec<u64>) -> Option<()> {
        let n = self.u32()? as usize;
        let raw = self.take(n.checked_mul(8)?)?;
        out.extend(
            raw.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
        );
        Some(())
    }
}

/// Replays a recording as an [`EventSource`], `per_drain` events per drain (to exercise
/// drivers that tick between drains), samples borrowing from the recording's bytes.
pub struct ReplaySource {
    data: Vec<u8>,
    at: usize,
    per_drain: usize,
    kernel: Vec<u64>,
    user: Vec<u64>,
    stats: SourceStats,
}

impl ReplaySource {
    pub fn new(data: Vec<u8>, per_drain: usize) -> Result<ReplaySource, ReplayError> {
        if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(ReplayError::BadMagic);
        }
        Ok(ReplaySource {
            data,
            at: MAGIC.len(),
            per_drain: per_drain.max(1),
            kernel: Vec::new(),
            user: Vec::new(),
            stats: SourceStats::default(),
        })
    }

    pub fn open(path: &std::path::Path, per_drain: usize) -> Result<ReplaySource, ReplayError> {
        ReplaySource::new(std::fs::read(path)?, per_drain)
    }

    /// Decodes the record at `self.at` and hands it to `on_event`; false at the end or on a
    /// malformed record (which ends the replay).
    fn next(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> bool {
        let mut head = Cursor(&self.data[self.at..]);
        let (Some(tag), Some(len)) = (head.u8(), head.u32()) else {
            if self.at < self.data.len() {
                self.stats.unparsed += 1;
                self.at = self.data.len();
            }
            return false;
        };
        let start = self.at + 5;
        let Some(payload) = self.data.get(start..start.saturating_add(len as usize)) else {
            self.stats.unparsed += 1;
            self.at = self.data.len();
            return false;
        };
        self.at = start + len as usize;
        self.stats.records += 1;
        self.kernel.clear();
        self.user.clear();
        let mut c = Cursor(payload);
        let event = match tag {
            SAMPLE | SWITCH_SAMPLE | FAULT_SAMPLE => {
                decode_sample(&mut c, &mut self.kernel, &mut self.user).and_then(|e| match e {
                    Event::Sample(mut s) if tag == SWITCH_SAMPLE => {
                        s.kind = SampleKind::Switch;
                        Some(Event::Sample(s))
                    }
                    Event::Sample(mut s) if tag == FAULT_SAMPLE => {
                        s.kind = SampleKind::Fault;
                        s.addr = c.u64()?;
                        Some(Event::Sample(s))
                    }
                    e => Some(e),
                })
            }
            MMAP => decode_mmap(&mut c),
            SWITCH | COMM | FORK | EXIT | LOST | THROTTLE | RELEASE => decode_side(tag, &mut c),
            // A record of a later version: skip it.
            _ => return true,
        };
        match event {
            Some(Event::Sample(mut s)) => {
                s.kernel_chain = &self.kernel;
                s.user_chain = &self.user;
                on_event(Event::Sample(s));
            }
            Some(e) => on_event(e),
            None => self.stats.unparsed += 1,
        }
        true
    }
}

/// Decodes the payload of a side record other than mmap; `None` when malformed.
fn decode_side(tag: u8, c: &mut Cursor<'_>) -> Option<Event<'static>> {
    Some(match tag {
        SWITCH => {
            let (pid, tid, time, flags) = (c.u32()?, c.u32()?, c.u64()?, c.u8()?);
            Event::Switch(SwitchEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                time,
                out: flags & 1 != 0,
                preempted: flags & 2 != 0,
            })
        }
        COMM => {
            let (pid, tid, exec) = (c.u32()?, c.u32()?, c.u8()? != 0);
            Event::Comm(CommEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                comm: c.string()?,
                exec,
            })
        }
        FORK => {
            let (pid, ppid, tid, ptid) = (c.u32()?, c.u32()?, c.u32()?, c.u32()?);
            Event::Fork(ForkEvent {
                pid: Pid(pid),
                ppid: Pid(ppid),
                tid: Tid(tid),
                ptid: Tid(ptid),
                time: c.u64()?,
            })
        }
        EXIT => {
            let (pid, tid) = (c.u32()?, c.u32()?);
            Event::Exit(ExitEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                time: c.u64()?,
            })
        }
        LOST => Event::Lost { count: c.u64()? },
        RELEASE => {
            let (pid, tid, time) = (c.u32()?, c.u32()?, c.u64()?);
            let release = match c.u8()? {
                0 => Release::Range {
                    addr: c.u64()?,
                    len: c.u64()?,
                },
                1 => Release::BrkTo(c.u64()?),
                _ => return None,
            };
            Event::Release(ReleaseEvent {
                pid: Pid(pid),
                tid: Tid(tid),
                time,
                release,
            })
        }
        THROTTLE => Event::Throttle {
            unthrottle: c.u8()? != 0,
        },
        _ => return None,
    })
}

fn decode_sample<'a>(
    c: &mut Cursor<'a>,
    kernel: &mut Vec<u64>,
    user: &mut Vec<u64>,
) -> Option<Event<'a>> {
    let (pid, tid, time, cpu, period, ip) =
        (c.u32()?, c.u32()?, c.u64()?, c.u32()?, c.u64()?, c.u64()?);
    let user_regs = match c.u8()? {
        0 => None,
        _ => Some(UserRegs {
            ip: c.u64()?,
            sp: c.u64()?,
            bp: c.u64()?,
        }),
    };
    let user_stack_requested = c.u64()?;
    c.chain(kernel)?;
    c.chain(user)?;
    let user_stack = c.bytes()?;
    Some(Event::Sample(Sample {
        kind: SampleKind::Timer,
        pid: Pid(pid),
        tid: Tid(tid),
        time,
        cpu,
        period,
        ip,
        // Filled in by the caller, which owns the decoded chains.
        kernel_chain: &[],
        user_chain: &[],
        user_regs,
        user_stack,
        user_stack_requested,
        addr: 0,
    }))
}

fn decode_mmap(c: &mut Cursor<'_>) -> Option<Event<'static>> {
    let (pid, tid) = (c.u32()?, c.u32()?);
    let (start, end, file_offset) = (c.u64()?, c.u64()?, c.u64()?);
    let (dev_major, dev_minor, inode) = (c.u32()?, c.u32()?, c.u64()?);
    let flags = c.u8()?;
    let kind = c.u8()?;
    let path = c.string()?;
    let kind = match kind {
        0 => MappingKind::File,
        1 => MappingKind::Vdso,
        2 => MappingKind::Anonymous,
        _ => MappingKind::Special(path.clone()),
    };
    Some(Event::Mmap(MmapEvent {
        pid: Pid(pid),
        tid: Tid(tid),
        mapping: Mapping {
            start,
            end,
            file_offset,
            dev_major,
            dev_minor,
            inode,
            path,
            kind,
            executable: flags & 1 != 0,
            deleted: flags & 2 != 0,
        },
    }))
}

impl EventSource for ReplaySource {
    fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        while n < self.per_drain && self.next(on_event) {
            n += 1;
        }
        n
    }

    fn exhausted(&self) -> bool {
        self.at >= self.data.len()
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

/// A source that records every event it passes on: `sprofd --save-events`.
pub struct Tee<S: EventSource, W: Write> {
    inner: S,
    recorder: Recorder<W>,
    /// The first write error; recording stops there, sampling does not.
    pub error: Option<io::Error>,
}

impl<S: EventSource, W: Write> Tee<S, W> {
    pub fn new(inner: S, recorder: Recorder<W>) -> Tee<S, W> {
        Tee {
            inner,
            recorder,
            error: None,
        }
    }
}

impl<S: EventSource, W: Write> EventSource for Tee<S, W> {
    fn drain(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> usize {
        let (recorder, error) = (&mut self.recorder, &mut self.error);
        self.inner.drain(&mut |e| {
            if error.is_none() {
                if let Err(e) = recorder.write(&e) {
                    *error = Some(e);
                }
            }
            on_event(e)
        })
    }
    fn wait(&mut self, timeout: std::time::Duration) {
        self.inner.wait(timeout)
    }
    fn poll_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.inner.poll_fds()
    }
    fn disable(&mut self) {
        self.inner.disable();
        if let Err(e) = self.recorder.out.flush() {
            self.error.get_or_insert(e);
        }
    }
    fn exhausted(&self) -> bool {
        self.inner.exhausted()
    }
    fn stats(&self) -> SourceStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_kind_round_trips() {
        let stack = [1u8, 2, 3, 4];
        let (kchain, uchain) = ([0xffff_ffff_8100_0000u64], [0x401000u64, 0x401234]);
        let sample = |kind| Sample {
            kind,
            pid: Pid(7),
            tid: Tid(8),
            time: 99,
            cpu: 1,
            period: 5,
            ip: 0x401000,
            kernel_chain: &kchain,
            user_chain: &uchain,
            user_regs: Some(UserRegs {
                ip: 1,
                sp: 2,
                bp: 3,
            }),
            user_stack: &stack,
            user_stack_requested: 16,
            addr: if kind == SampleKind::Fault {
                0x7f00_1000
            } else {
                0
            },
        };
        let release = |release| {
            Event::Release(ReleaseEvent {
                pid: Pid(7),
                tid: Tid(8),
                time: 9,
                release,
            })
        };
        let mapping = sprof_core::maps::parse_line(
            "00400000-00401000 r-xp 00001000 fe:01 42 /usr/bin/x (deleted)",
        )
        .unwrap();
        let events = vec![
            Event::Sample(sample(SampleKind::Timer)),
            Event::Sample(sample(SampleKind::Switch)),
            Event::Sample(sample(SampleKind::Fault)),
            release(Release::Range {
                addr: 0x7f00_0000,
                len: 1 << 20,
            }),
            release(Release::BrkTo(0x55_0000)),
            Event::Mmap(MmapEvent {
                pid: Pid(7),
                tid: Tid(7),
                mapping,
            }),
            Event::Comm(CommEvent {
                pid: Pid(7),
                tid: Tid(8),
                comm: "wörker".into(),
                exec: true,
            }),
            Event::Fork(ForkEvent {
                pid: Pid(9),
                ppid: Pid(7),
                tid: Tid(9),
                ptid: Tid(7),
                time: 5,
            }),
            Event::Exit(ExitEvent {
                pid: Pid(9),
                tid: Tid(9),
                time: 6,
            }),
            Event::Switch(SwitchEvent {
                pid: Pid(7),
                tid: Tid(8),
                time: 7,
                out: true,
                preempted: true,
            }),
            Event::Lost { count: 3 },
            Event::Throttle { unthrottle: true },
        ];
        let mut r = Recorder::new(Vec::new()).unwrap();
        for e in &events {
            r.write(e).unwrap();
        }
        let mut source = ReplaySource::new(r.finish().unwrap(), 100).unwrap();
        let mut back = Vec::new();
        source.drain(&mut |e| back.push(format!("{e:?}")));
        let want: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(back, want);
        assert!(source.exhausted());
    }
}
