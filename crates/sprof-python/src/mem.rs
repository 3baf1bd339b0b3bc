//! Reading target memory with `process_vm_readv` — the crate's only access to the target.
//!
//! Owns the syscall, its iovec batching and the syscall counter. No ptrace, no signals, no
//! `/proc/PID/mem` seek: a read never stops or perturbs the target. Iovecs live on the stack so
//! a reader stays `Send` and allocation-free on the hot path.

use crate::PyError;

/// Iovecs per syscall; far below `IOV_MAX` (1024), enough to batch a deep stack's code checks.
const BATCH: usize = 64;

pub struct Mem {
    pid: libc::pid_t,
    pub syscalls: u64,
}

impl Mem {
    pub fn new(pid: u32) -> Mem {
        Mem {
            pid: pid as libc::pid_t,
            syscalls: 0,
        }
    }

    /// Fills `buf` from `addr`, all or nothing.
    pub fn read(&mut self, what: &'static str, addr: u64, buf: &mut [u8]) -> Result<(), PyError> {
        self.read_vectored(what, &mut [(addr, buf)])
    }

    /// Reads `out.len() / len` blocks of `len` bytes, block `i` from `addrs[i]`, batched.
    pub fn read_uniform(
        &mut self,
        what: &'static str,
        addrs: &[u64],
        len: usize,
        out: &mut [u8],
    ) -> Result<(), PyError> {
        let mut reqs: [(u64, &mut [u8]); BATCH] = std::array::from_fn(|_| (0, &mut [][..]));
        for (addr_chunk, out_chunk) in addrs.chunks(BATCH).zip(out.chunks_mut(BATCH * len)) {
            let n = addr_chunk.len();
            for ((slot, &addr), buf) in reqs
                .iter_mut()
                .zip(addr_chunk)
                .zip(out_chunk.chunks_mut(len))
            {
                *slot = (addr, buf);
            }
            self.read_vectored(what, &mut reqs[..n])?;
        }
        Ok(())
    }

    pub fn read_u64(&mut self, what: &'static str, addr: u64) -> Result<u64, PyError> {
        let mut b = [0u8; 8];
        self.read(what, addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Fills each `(addr, buf)` pair, `BATCH` pairs per syscall, all or nothing.
    pub fn read_vectored(
        &mut self,
        what: &'static str,
        reqs: &mut [(u64, &mut [u8])],
    ) -> Result<(), PyError> {
        for chunk in reqs.chunks_mut(BATCH) {
            let total: usize = chunk.iter().map(|(_, b)| b.len()).sum();
            let got = self.readv_partial(what, chunk)?;
            if got != total {
                // A partial transfer stops at the first iovec that faulted.
                return Err(PyError::Read {
                    what,
                    addr: chunk[0].0,
                    errno: libc::EFAULT,
                });
            }
        }
        Ok(())
    }

    /// Fills `buf[below..]` from `[addr, addr + buf.len() - below)` and, in the same syscall,
    /// as much as is mapped of the `below` bytes under `addr` into `buf[..below]` (page by page,
    /// downwards). Returns how many bytes under `addr` are valid; they end at `buf[below]`.
    ///
    /// Used for frames: a thread's `_PyInterpreterFrame`s sit in its data stack, each caller
    /// just below its callee, so one read usually brings several frames of the chain.
    pub fn read_with_below(
        &mut self,
        what: &'static str,
        addr: u64,
        below: usize,
        buf: &mut [u8],
    ) -> Result<usize, PyError> {
        const PAGE: u64 = 4096;
        let (mut low, top) = buf.split_at_mut(below);
        let want = top.len();
        let mut reqs: [(u64, &mut [u8]); 8] = std::array::from_fn(|_| (0, &mut [][..]));
        reqs[0] = (addr, top);
        let mut n = 1;
        let mut cur = addr;
        // Never speculate below the first page: check_range would refuse the whole batch.
        let floor = addr.saturating_sub(below as u64).max(PAGE);
        while cur > floor && n < reqs.len() {
            let lo = ((cur - 1) & !(PAGE - 1)).max(floor);
            let len = (cur - lo) as usize;
            let (rest, piece) = low.split_at_mut(low.len() - len);
            low = rest;
            reqs[n] = (lo, piece);
            n += 1;
            cur = lo;
        }
        let got = self.readv_partial(what, &mut reqs[..n])?;
        if got < want {
            return Err(PyError::Read {
                what,
                addr,
                errno: libc::EFAULT,
            });
        }
        Ok(got - want)
    }

    /// One `process_vm_readv` over `reqs` (at most `BATCH`): bytes transferred, which stop at
    /// the first iovec that faulted (the kernel never splits one).
    fn readv_partial(
        &mut self,
        what: &'static str,
        reqs: &mut [(u64, &mut [u8])],
    ) -> Result<usize, PyError> {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut local = [empty; BATCH];
        let mut remote = [empty; BATCH];
        let n = reqs.len().min(BATCH);
        for (i, (addr, buf)) in reqs[..n].iter_mut().enumerate() {
            check_range(what, *addr, buf.len())?;
            local[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            remote[i] = libc::iovec {
                iov_base: *addr as usize as *mut libc::c_void,
                iov_len: buf.len(),
            };
        }
        self.syscalls += 1;
        // SAFETY: `local[..n]` describes live, exclusively borrowed buffers of exactly
        // `iov_len` bytes (the `reqs` borrows outlive the call); the kernel writes at most that
        // much into them. `remote` addresses belong to the target and are only read by the
        // kernel, which validates them (EFAULT) — they are never dereferenced here.
        let got = unsafe {
            libc::process_vm_readv(
                self.pid,
                local.as_ptr(),
                n as libc::c_ulong,
                remote.as_ptr(),
                n as libc::c_ulong,
                0,
            )
        };
        if got < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(PyError::Read {
                what,
                addr: reqs.first().map_or(0, |r| r.0),
                errno,
            });
        }
        Ok(got as usize)
    }
}

/// End of user space with 5-level paging (1 << 56); anything above is the kernel half or garbage.
const USER_END: u64 = 1 << 56;

/// Rejects null, kernel-half and wrapping ranges before they reach the kernel, so a garbage
/// pointer is reported as such rather than as an EFAULT.
pub fn check_range(what: &'static str, addr: u64, len: usize) -> Result<(), PyError> {
    let ok = addr >= 0x1000
        && addr
            .checked_add(len as u64)
            .is_some_and(|end| end <= USER_END);
    if ok {
        Ok(())
    } else {
        Err(PyError::BadPointer { what, addr })
    }
}

/// Little-endian field readers over buffers sized by `Layout` (so in bounds); an out-of-bounds
/// offset reads as 0 rather than panicking.
pub fn le_u64(buf: &[u8], off: u64) -> u64 {
    let off = off as usize;
    buf.get(off..off + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

pub fn le_u32(buf: &[u8], off: u64) -> u32 {
    let off = off as usize;
    buf.get(off..off + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

pub fn le_i32(buf: &[u8], off: u64) -> i32 {
    le_u32(buf, off) as i32
}
