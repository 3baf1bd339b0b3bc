//! Threads: the host tid → namespace tid → thread-state map (validated on every use, rebuilt
//! from the interpreters' thread lists on a miss), and what a thread is doing besides running
//! frames (GIL, collector).

use super::*;
use crate::layout::{GilAt, PTHREAD_TID};

/// The `NSpid:` fields of a `/proc/.../status` file.
pub(super) fn nspid_of(path: &str) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|f| f.parse().ok()).collect()
}

impl PythonProcess {
    /// What the thread read last (by a successful [`read_thread`](Self::read_thread) or
    /// [`read_thread_at`](Self::read_thread_at)) is doing besides running its frames: whether
    /// it holds the GIL and whether the interpreter is collecting garbage. One batched read,
    /// right after the frames, so as close to the sample as they are.
    pub fn thread_flags(&mut self) -> Result<ThreadFlags, PyError> {
        let l = self.layout;
        let tstate = self.current_tstate;
        let interp = le_u64(&self.tstate_buf, l.ts_interp);
        if tstate == 0 || interp == 0 {
            return Ok(ThreadFlags::default());
        }
        // Up to three 8-byte windows: the GIL's holder and lock word (or the thread's own
        // flag), and the collector's flag.
        let mut addrs = [0u64; 3];
        let mut n = 0;
        let mut push = |a: u64| {
            addrs[n] = a;
            n += 1;
        };
        match l.gil {
            Some(GilAt::RuntimeCurrent(o)) => push(self.runtime + o),
            Some(GilAt::InterpPointer {
                gil,
                holder,
                locked,
            }) => {
                let g = match self.gil_struct {
                    Some(g) => g,
                    None => {
                        let g = self.mem.read_u64("ceval.gil", interp + gil)?;
                        self.gil_struct = Some(g);
                        g
                    }
                };
                push(g + holder);
                push(g + locked);
            }
            Some(GilAt::Interp { holder, locked }) => {
                push(interp + holder);
                push(interp + locked);
            }
            Some(GilAt::Thread { holds_gil }) => push(tstate + holds_gil),
            None => {}
        }
        if let Some(o) = l.gc_collecting {
            push(interp + o);
        }
        if n == 0 {
            return Ok(ThreadFlags::default());
        }
        let mut buf = [0u8; 24];
        self.mem
            .read_uniform("GIL and GC state", &addrs[..n], 8, &mut buf[..n * 8])?;
        let word = |i: usize| le_u64(&buf, (i * 8) as u64);
        let int = |i: usize| le_i32(&buf, (i * 8) as u64) != 0;
        let holds_gil = match l.gil {
            Some(GilAt::RuntimeCurrent(_)) => Some(word(0) == tstate),
            Some(GilAt::InterpPointer { .. } | GilAt::Interp { .. }) => {
                Some(int(1) && word(0) == tstate)
            }
            Some(GilAt::Thread { .. }) => Some(int(0)),
            None => None,
        };
        let gc = l.gc_collecting.is_some() && int(n - 1);
        Ok(ThreadFlags { holds_gil, gc })
    }

    /// Forgets what is cached about `tid` (call on thread exit: tids are reused).
    pub fn forget_thread(&mut self, tid: u32) {
        if let Some(ns) = self.ns_tids.remove(&tid) {
            self.threads.remove(&ns);
        } else {
            self.threads.remove(&tid);
        }
        self.no_tstate.remove(&tid);
    }

    /// Host tid → the tid the target's namespace sees (what `native_thread_id` holds).
    pub(super) fn ns_tid(&mut self, tid: u32) -> Result<u32, PyError> {
        if !self.namespaced {
            return Ok(tid);
        }
        if let Some(&ns) = self.ns_tids.get(&tid) {
            return Ok(ns);
        }
        let path = format!("/proc/{}/task/{tid}/status", self.pid);
        let ns = nspid_of(&path)
            .and_then(|v| v.last().copied())
            .ok_or_else(|| PyError::Namespace {
                tid,
                reason: format!("no NSpid in {path}"),
            })?;
        self.ns_tids.insert(tid, ns);
        Ok(ns)
    }

    /// Reads the cached thread state of `ns_tid` into `tstate_buf` and checks it still belongs
    /// to that thread. False when there is none or it failed validation (entry dropped).
    pub(super) fn load_tstate(&mut self, ns_tid: u32) -> Result<bool, PyError> {
        let Some(ts) = self.threads.get(&ns_tid).copied() else {
            return Ok(false);
        };
        self.current_tstate = ts.addr;
        let l = &self.layout;
        let valid = if l.tid_via_pthread {
            // One syscall: the thread state and the tid in its (cached) pthread struct.
            let mut tid = [0u8; 4];
            self.mem
                .read_vectored(
                    "thread state",
                    &mut [
                        (ts.addr, &mut self.tstate_buf[..]),
                        (ts.pthread + PTHREAD_TID, &mut tid[..]),
                    ],
                )
                .is_ok()
                && le_u64(&self.tstate_buf, l.ts_native_tid) == ts.pthread
                && u32::from_le_bytes(tid) == ns_tid
        } else {
            self.mem
                .read("thread state", ts.addr, &mut self.tstate_buf)
                .is_ok()
                && le_u64(&self.tstate_buf, l.ts_native_tid) == u64::from(ns_tid)
        } && le_u64(&self.tstate_buf, l.ts_interp) == ts.interp;
        if !valid {
            self.threads.remove(&ns_tid);
        }
        Ok(valid)
    }

    /// Walks every interpreter's thread list and rebuilds the tid → thread-state map.
    /// False when a list was torn (a thread being created or destroyed) and the map is partial.
    pub(super) fn rebuild_threads(&mut self) -> Result<bool, PyError> {
        self.stats.thread_rebuilds += 1;
        self.threads.clear();
        let l = &self.layout;
        let mut interp = self
            .mem
            .read_u64("interpreters.head", self.runtime + l.interpreters_head)?;
        let mut seen_interps = 0;
        let mut complete = true;
        while interp != 0 && seen_interps < MAX_INTERPRETERS {
            seen_interps += 1;
            check_range("interpreter", interp, 8)?;
            let mut ts = self.mem.read_u64("threads.head", interp + l.threads_head)?;
            let mut n = 0;
            while ts != 0 && n < MAX_THREADS {
                n += 1;
                check_range("thread state", ts, self.tstate_buf.len())?;
                self.mem.read("thread state", ts, &mut self.tstate_buf)?;
                if le_u64(&self.tstate_buf, l.ts_interp) != interp {
                    // Torn list: keep what we have.
                    complete = false;
                    break;
                }
                let ident = le_u64(&self.tstate_buf, l.ts_native_tid);
                let next = le_u64(&self.tstate_buf, l.ts_next);
                let (tid, pthread) = if l.tid_via_pthread {
                    let mut tid = [0u8; 4];
                    match self
                        .mem
                        .read("pthread.tid", ident.wrapping_add(PTHREAD_TID), &mut tid)
                    {
                        Ok(()) => (u64::from(u32::from_le_bytes(tid)), ident),
                        // A thread state whose thread is gone: skip it, keep walking.
                        Err(_) => (0, 0),
                    }
                } else {
                    (ident, 0)
                };
                if let Ok(tid) = u32::try_from(tid) {
                    if tid != 0 {
                        self.threads.insert(
                            tid,
                            Tstate {
                                addr: ts,
                                interp,
                                pthread,
                            },
                        );
                    }
                }
                ts = next;
            }
            interp = self
                .mem
                .read_u64("interpreter.next", interp + l.interp_next)?;
        }
        Ok(complete)
    }
}
