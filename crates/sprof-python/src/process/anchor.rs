//! Reads anchored to the sample (3.11/3.12): the innermost activation live now whose cframe
//! lies in the sample's stack copy gives the chain as of the sample
//! ([`PythonProcess::read_thread_at`] through `read_anchored`), and activations the thread
//! returned from since are found again in the copy ([`PythonProcess::recover_returned`]).

use super::*;
use crate::layout::{EntryMark, FrameRoot, OWNER_CSTACK};

/// Candidate cframe chains `recover_returned` walks before giving up.
const MAX_CANDIDATES: usize = 16;

/// How far from the anchored frame a recovered activation's frame may lie: frames of one
/// thread share its data stack (chunks of 16 KiB and up, allocated as it grows).
const RECOVER_SPAN: u64 = 1 << 20;

/// `_PyCFrame`s followed outwards from `tstate->cframe` before giving up on an anchor.
const MAX_CFRAME_STEPS: usize = 64;

impl PythonProcess {
    /// Completes the last [`read_thread_at`](Self::read_thread_at) of `tid` with `at`, when it
    /// was anchored and the sample's native stack has `missing` more eval frames than its
    /// chain has groups: the thread returned from `missing` activations between the sample
    /// and the read. Their cframes may still be in the copy, and the native stack (unwound
    /// from the same copy) says how many there were, which is what makes them findable.
    ///
    /// The reader looks in the copy, below the anchor cframe, for chains of `missing` cframes
    /// linked to it by `previous` whose frames lie within 1 MiB of the anchored frame (the
    /// thread's data stack; generator frames are not recovered), at most 16 candidates, and
    /// walks from each one's innermost `current_frame` (as in the copy) outwards. The walk
    /// reads popped frames (3.12 shims, on the C stack, from the copy) and must cross from
    /// each activation into the next exactly at the frame the next cframe had current in the
    /// copy, the last into the anchored frame. Exactly one candidate must pass; else nothing
    /// changes and it returns false. On success the recovered frames (innermost first) are
    /// put in front of `out` and it returns true.
    ///
    /// Caveats: a popped frame's memory reused by a call at the same depth through the same
    /// kind of entry passes the checks (that call's function is then reported; for a key
    /// function called again, the same one). A stale cframe image cannot be told from a live
    /// one, which is why this runs only when the native stack says activations are missing:
    /// e.g. a sample in the prologue of a new activation, before its cframe is linked, gets
    /// the previous call's image, whose frame is usually the new call's (same address).
    pub fn recover_returned(
        &mut self,
        tid: u32,
        at: SampleStack<'_>,
        missing: usize,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> bool {
        let Some(a) = self.last_anchor.filter(|a| a.tid == tid && a.sp == at.sp) else {
            return false;
        };
        let FrameRoot::CFrame {
            current_frame,
            previous,
            ..
        } = self.layout.frame_root
        else {
            return false;
        };
        if missing == 0 || missing > 16 {
            return false;
        }
        let need = (current_frame.max(previous) + 8) as usize;
        // Candidate chains of cframes, outermost first: each one's `previous` is the one
        // before (the first's, the anchor), each lower on the stack. Any word pair in the copy
        // can look like a cframe (a saved cframe pointer next to any pointer), so every
        // candidate is walked and exactly one must pass.
        let mut chains: Vec<Vec<(u64, u64)>> = vec![Vec::new()];
        for _ in 0..missing {
            let mut next = Vec::new();
            for chain in &chains {
                let parent = chain.last().map_or(a.cframe, |c| c.0);
                let mut p = at.sp.next_multiple_of(8);
                while p + need as u64 <= parent {
                    let off = (p - at.sp) as usize;
                    let Some(cf) = at.bytes.get(off..off + need) else {
                        break;
                    };
                    let cur = le_u64(cf, current_frame);
                    if le_u64(cf, previous) == parent
                        && cur.is_multiple_of(8)
                        && cur.abs_diff(a.frame) <= RECOVER_SPAN
                        && check_range("frame", cur, 8).is_ok()
                    {
                        if next.len() >= MAX_CANDIDATES {
                            return false;
                        }
                        let mut c = chain.clone();
                        c.push((p, cur));
                        next.push(c);
                    }
                    p += 8;
                }
            }
            chains = next;
        }
        let mut passed = None;
        for (i, chain) in chains.iter().enumerate() {
            if self.walk_returned(chain, a.frame, at) {
                if passed.is_some() {
                    return false;
                }
                passed = Some(i);
            }
        }
        let Some(i) = passed else {
            return false;
        };
        if chains.len() > 1 && !self.walk_returned(&chains[i], a.frame, at) {
            return false;
        }
        let mut extra = Vec::with_capacity(self.raw.len() + out.len());
        if self.resolve_frames(codes, &mut extra).is_err() {
            return false;
        }
        self.stats.frames += extra.len() as u64;
        self.stats.recovered += 1;
        extra.append(out);
        *out = extra;
        true
    }

    /// The walk of `recover_returned`: from the innermost cframe's frame (`chain` is outermost
    /// first) through each activation, into `self.raw`. At each activation's entry the next
    /// frame must be the outer cframe's `current_frame` in the copy (`anchor` for the last).
    fn walk_returned(&mut self, chain: &[(u64, u64)], anchor: u64, at: SampleStack<'_>) -> bool {
        let l = self.layout;
        self.raw.clear();
        self.visited.clear();
        self.block_hi = 0;
        let mut level = chain.len();
        let Some(&(_, mut addr)) = chain.last() else {
            return false;
        };
        let mut in_group = 0usize;
        while self.raw.len() < MAX_FRAMES {
            if !addr.is_multiple_of(8) || !self.visited.insert(addr) {
                return false;
            }
            // Frames in the copy (3.12 shims live on the C stack) as they were at the sample.
            let len = self.frame_buf.len() as u64;
            let in_copy = addr >= at.sp
                && addr
                    .checked_add(len)
                    .is_some_and(|e| e <= at.sp + at.bytes.len() as u64);
            if in_copy {
                let off = (addr - at.sp) as usize;
                self.frame_buf
                    .copy_from_slice(&at.bytes[off..off + len as usize]);
            } else if self.frame_at(addr).is_err() {
                return false;
            }
            let (owner, previous, code, addrq) = self.frame_fields();
            let boundary = match (l.entry, owner) {
                (EntryMark::ShimOwner, OWNER_CSTACK) => {
                    let Some(last) = self.raw.last_mut() else {
                        return false;
                    };
                    last.entry = true;
                    true
                }
                (_, 0..=2) => {
                    let entry = match l.entry {
                        EntryMark::IsEntry(off) => self.frame_buf[off as usize] != 0,
                        EntryMark::ShimOwner | EntryMark::EveryFrame => false,
                    };
                    self.raw.push(RawFrame {
                        addr,
                        code,
                        addrq,
                        entry,
                    });
                    in_group += 1;
                    entry
                }
                _ => return false,
            };
            if boundary {
                if in_group == 0 {
                    return false;
                }
                in_group = 0;
                level -= 1;
                let expect = if level == 0 {
                    anchor
                } else {
                    chain[level - 1].1
                };
                if previous != expect {
                    return false;
                }
                if level == 0 {
                    return true;
                }
            }
            addr = previous;
        }
        false
    }

    /// The anchored read of [`read_thread_at`](Self::read_thread_at), from the thread state in
    /// `tstate_buf`. `Ok(false)`: no usable anchor, read the chain at read time instead.
    ///
    /// Why the anchor is the innermost cframe that is live now and lies in the copy, and not
    /// simply the innermost cframe-looking bytes in the copy: at the sample, every live
    /// activation's cframe lies at or above `sp` (the C stack grows down, and the eval loop is
    /// never a leaf, so nothing of it sits in the red zone), innermost lowest. But the copy
    /// also holds the images of cframes of activations that had returned *before* the sample,
    /// in slots the live frames below their caller have not overwritten — e.g. `list.sort`
    /// comparing keys after its key-function calls returned leaves the last call's cframe,
    /// with a valid `previous`, under its own frame. A scan of the copy cannot tell those from
    /// a live activation (nothing in a cframe or a frame dates it), so the reader only trusts
    /// cframe addresses it reaches from `tstate->cframe` now:
    ///
    /// * below `sp`: entered after the sample, skipped (follow `previous` in live memory);
    /// * in the copy and the copy's `previous` equals the live one: an activation with this
    ///   parent at this address was live at the sample (stack discipline: its parent is live
    ///   now, so it was never popped, and the slot at the cframe's address belonged to the
    ///   activation at the sample unless the copy's bytes are such a stale image — a residual
    ///   risk: an activation entered after the sample at the exact address and with the same
    ///   parent as a stale image; the merge then sees one Python group more than eval frames);
    /// * in the copy but another `previous`: the bytes were something else at the sample, so
    ///   this activation is newer too: go outwards;
    /// * beyond the copy, or none left: the thread returned past the copy; fall back.
    ///
    /// If the thread returned from activations after the sample, the anchor is an outer one
    /// and their frames are missing: the merge reports their eval frames as unavailable.
    pub(super) fn read_anchored(
        &mut self,
        at: SampleStack<'_>,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<bool, PyError> {
        let FrameRoot::CFrame {
            cframe,
            current_frame,
            previous,
        } = self.layout.frame_root
        else {
            return Ok(false);
        };
        let need = (current_frame.max(previous) + 8) as usize;
        let mut buf = [0u8; 24];
        let Some(buf) = buf.get_mut(..need) else {
            return Ok(false);
        };
        if at.bytes.len() < need {
            return Ok(false);
        }
        let Some(end) = at.sp.checked_add(at.bytes.len() as u64) else {
            return Ok(false);
        };
        // The highest cframe address whose fields lie entirely in the copy.
        let last = end - need as u64;
        let mut c = le_u64(&self.tstate_buf, cframe);
        // The thread's innermost frame now (the innermost cframe's current_frame).
        let mut live_inner = None;
        for _ in 0..MAX_CFRAME_STEPS {
            if c == 0
                || c > last
                || check_range("cframe", c, need).is_err()
                || self.mem.read("cframe", c, buf).is_err()
            {
                return Ok(false);
            }
            let live_cur = le_u64(buf, current_frame);
            let live_prev = le_u64(buf, previous);
            let live_inner = *live_inner.get_or_insert(live_cur);
            if c >= at.sp {
                let off = (c - at.sp) as usize;
                let copy = &at.bytes[off..off + need];
                let copy_cur = le_u64(copy, current_frame);
                let copy_prev = le_u64(copy, previous);
                // `previous` is never null for a stack cframe (the outermost points at
                // `tstate->root_cframe`), which also keeps a copy that runs into the heap from
                // anchoring on the root cframe itself.
                if copy_prev == live_prev
                    && copy_prev != 0
                    && copy_cur.is_multiple_of(8)
                    && check_range("frame", copy_cur, 8).is_ok()
                {
                    if !self.walk_anchored(copy_cur, live_cur, live_inner)? {
                        return Ok(false);
                    }
                    self.resolve_frames(codes, out)?;
                    if copy_cur != live_inner {
                        self.stats.anchor_moved += 1;
                    }
                    self.last_anchor = Some(LastAnchor {
                        tid: 0,
                        sp: at.sp,
                        cframe: c,
                        frame: copy_cur,
                    });
                    return Ok(true);
                }
            }
            if live_prev == c {
                return Ok(false);
            }
            c = live_prev;
        }
        Ok(false)
    }

    /// Walks the chain from `anchor`, the anchored activation's frame at the sample, into
    /// `self.raw`. `live_cur` is that activation's frame now, `live_inner` the thread's
    /// innermost frame now. False: the anchored frame cannot be trusted (fall back).
    ///
    /// Only the frame's *address* is as of the sample; frame memory is read now, and a frame
    /// popped after the sample may have been overwritten by one pushed at the same address
    /// (nothing in a frame dates it). So:
    /// * `anchor` is on the read-time chain (the thread called deeper since, or nothing moved):
    ///   the read-time chain minus the frames newer than `anchor`. If the frame at `anchor` was
    ///   popped and another pushed at the same address since, that is the new frame's chain: a
    ///   chain the thread had at some moment between the sample and the read (with a key
    ///   function called again, the same code at the same depth).
    /// * `anchor` was popped since (not on the read-time chain): popped frames stay mapped and
    ///   intact until something is pushed over them. Trusted only when they all lie at or
    ///   above the data stack's top, the walk rejoins the live chain exactly at the thread's
    ///   innermost frame (which must be this activation's), and the popped frame it passes
    ///   last lies exactly at the top, where the innermost frame's callee goes. Residual risk,
    ///   not detectable from outside: frames pushed and popped above the top between sample
    ///   and read (they overwrote the popped frames), or the innermost frame itself popped and
    ///   re-pushed by a function with the same frame size; then the result can mix both.
    /// * anything else (the anchor inside the live part of the data stack, a generator frame,
    ///   another chunk): fall back.
    fn walk_anchored(
        &mut self,
        anchor: u64,
        live_cur: u64,
        live_inner: u64,
    ) -> Result<bool, PyError> {
        if anchor == live_cur {
            // The activation's current frame did not change: the read-time chain from it.
            self.walk_frames(anchor, None)?;
            return Ok(true);
        }
        self.walk_frames(live_inner, None)?;
        if let Some(i) = self.raw.iter().position(|f| f.addr == anchor) {
            self.raw.drain(..i);
            return Ok(true);
        }
        if self.visited.contains(&anchor) {
            // A 3.12 shim: the activation was entering or leaving; no frame of its own.
            self.walk_frames(anchor, None)?;
            return Ok(true);
        }
        let Some(top) = self.layout.ts_datastack_top else {
            return Ok(false);
        };
        let top = le_u64(&self.tstate_buf, top);
        if live_cur != live_inner || top <= live_inner || anchor < top {
            return Ok(false);
        }
        Ok(self
            .walk_frames(
                anchor,
                Some(Rejoin {
                    at: live_inner,
                    top,
                }),
            )
            .is_ok())
    }
}
