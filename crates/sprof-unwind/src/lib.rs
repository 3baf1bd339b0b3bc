//! sprofd's unwinder: turns a sample into a stack of [`FrameKey`]s.
//!
//! It owns one address space per process, kept current from mmap, comm (exec), fork and exit
//! events (an exited or exec'd process's space is dropped, and the modules it mapped are
//! released from the shared [`ModuleTable`] once nothing maps or needs them), the unwind
//! sections of each module, and the stack walk itself: frame pointers from
//! the kernel's callchain, or DWARF CFI over the copied user stack with framehop. Memory is
//! only ever the bytes the sample carries, so every walk is testable from recorded bytes.
//!
//! A walk never fails: where it cannot go on (the copied stack ran out, unwind information
//! is missing or wrong) it ends in a [`Marker::Truncated`] frame and the sample is kept and
//! counted.
//!
//! JIT code (anonymous executable memory) has no unwind information, but the JITs worth
//! profiling this way (V8, CPython's `-X perf` trampolines) keep frame pointers: a DWARF walk
//! that reaches such code steps through it by frame pointer ([`fp_step`], every step checked
//! against the copied stack) until it returns into a module with CFI, where it resumes. Those
//! frames become [`FrameKey::Jit`], named later from the process's perf map.

pub mod module;

use std::collections::HashMap;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{FrameAddress, Unwinder as _};
use sprof_core::{
    Event, FrameAddr, FrameKey, Mapping, Marker, ModuleId, ModuleLoader, ModuleTable, Pid, Sample,
};

pub use module::{SectionBytes, UnwindSections};

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindMode {
    /// The kernel's frame-pointer callchain: cheapest, wrong for code built without frame
    /// pointers.
    FramePointer,
    /// DWARF CFI only: a frame in a module without any CFI ends the walk.
    Dwarf,
    /// DWARF CFI where a module has it, frame pointers where it has none.
    Auto,
}

/// The most frames one walk produces; deeper stacks end in [`Marker::Truncated`].
pub const MAX_FRAMES: usize = 1024;

/// Per-session unwinding counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnwindStats {
    /// Samples walked with DWARF CFI.
    pub dwarf_walks: u64,
    /// Samples whose stack copy filled the requested size.
    pub stack_copy_full: u64,
    /// Address spaces dropped because their process exited or exec'd.
    pub spaces_dropped: u64,
    /// DWARF walks that went through at least one JIT frame.
    pub jit_walks: u64,
    /// JIT frames stepped through by frame pointer.
    pub jit_frames: u64,
    /// DWARF walks that ended in a JIT frame whose frame pointer failed the checks.
    pub jit_truncated: u64,
    /// Address spaces dropped to stay within [`StackWalker::set_max_spaces`] (the process
    /// sampled longest ago goes; its later samples have no module names).
    pub spaces_evicted: u64,
    /// Mappings not kept because their process already had [`MAX_MAPPINGS`].
    pub mappings_refused: u64,
}

#[derive(Clone, Default)]
struct AddressSpace {
    /// Executable mappings sorted by start, with their module.
    mappings: Vec<(Mapping, ModuleId)>,
    /// How many of `mappings` each module has.
    per_module: HashMap<ModuleId, u32>,
    unwinder: UnwinderX86_64<SectionBytes>,
    /// The walker's sample count when this process was last sampled.
    last_sampled: u64,
}

impl AddressSpace {
    fn find(&self, addr: u64) -> Option<&(Mapping, ModuleId)> {
        let i = self.mappings.partition_point(|(m, _)| m.start <= addr);
        let (m, id) = self.mappings.get(i.checked_sub(1)?)?;
        m.contains(addr)
            .then_some(&self.mappings[i - 1])
            .filter(|_| id.0 != u32::MAX)
    }

    /// Inserts a mapping. Returns whether `id` is newly mapped by this space, and the modules
    /// it no longer maps at all.
    fn insert(
        &mut self,
        mapping: Mapping,
        id: ModuleId,
        fh: Option<framehop::Module<SectionBytes>>,
    ) -> Inserted {
        // A new mapping replaces whatever it overlaps (munmap is not reported, a remap is).
        // The mappings are sorted and disjoint, so those it overlaps are one run of them.
        let first = self
            .mappings
            .partition_point(|(m, _)| m.end <= mapping.start);
        let last = self
            .mappings
            .partition_point(|(m, _)| m.start < mapping.end);
        let overlapped = last.saturating_sub(first);
        if overlapped == 0 && self.mappings.len() >= MAX_MAPPINGS {
            return Inserted::Refused;
        }
        let mut gone = Vec::new();
        for (m, mid) in self.mappings.drain(first..last.max(first)) {
            self.unwinder.remove_module(m.start);
            if let Some(n) = self.per_module.get_mut(&mid) {
                *n -= 1;
                if *n == 0 {
                    self.per_module.remove(&mid);
                    gone.push(mid);
                }
            }
        }
        if let Some(fh) = fh {
            self.unwinder.add_module(fh);
        }
        let count = self.per_module.entry(id).or_insert(0);
        *count += 1;
        let added = *count == 1;
        self.mappings.insert(first, (mapping, id));
        Inserted::Done { added, gone }
    }

    /// Each module this space maps, once.
    fn modules(&self) -> Vec<ModuleId> {
        let mut ids: Vec<ModuleId> = self.per_module.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Executable mappings kept per process. Programs have tens to a few thousand (a browser,
/// a JVM); a process mapping code in a loop (never reported unmapped) would otherwise grow
/// its address space, and the cost of every later mapping, without end.
pub const MAX_MAPPINGS: usize = 8192;

/// What [`AddressSpace::insert`] did.
enum Inserted {
    /// Added; `added` if its module is new to the space, `gone` the modules it no longer maps.
    Done { added: bool, gone: Vec<ModuleId> },
    /// Not added: the space holds [`MAX_MAPPINGS`] already.
    Refused,
}

/// The unwinding state of a session.
pub struct StackWalker {
    mode: UnwindMode,
    kernel: bool,
    spaces: HashMap<Pid, AddressSpace>,
    pub modules: ModuleTable,
    /// Unwind sections per module, parsed when its bytes are loaded.
    unwind: Vec<Option<UnwindSections>>,
    cache: CacheX86_64,
    /// Most address spaces kept; `None`: one per live process, however many.
    max_spaces: Option<usize>,
    /// Samples walked so far: the clock of [`AddressSpace::last_sampled`].
    walks: u64,
    pub stats: UnwindStats,
}

impl StackWalker {
    pub fn new(mode: UnwindMode, kernel: bool) -> StackWalker {
        StackWalker {
            mode,
            kernel,
            spaces: HashMap::new(),
            modules: ModuleTable::default(),
            unwind: Vec::new(),
            cache: CacheX86_64::new(),
            max_spaces: None,
            walks: 0,
            stats: UnwindStats::default(),
        }
    }

    /// Keeps at most `n` address spaces: a new process beyond that evicts the one sampled
    /// longest ago (counted in [`UnwindStats::spaces_evicted`]). Bounds memory on hosts
    /// with very many processes.
    pub fn set_max_spaces(&mut self, n: Option<usize>) {
        self.max_spaces = n;
    }

    /// Makes room for a new address space for `pid`, if a cap asks for it.
    fn make_room(&mut self, pid: Pid) {
        let Some(max) = self.max_spaces else { return };
        if self.spaces.contains_key(&pid) || self.spaces.len() < max.max(1) {
            return;
        }
        let victim = self
            .spaces
            .iter()
            .min_by_key(|(p, s)| (s.last_sampled, **p))
            .map(|(p, _)| *p);
        if let Some(space) = victim.and_then(|p| self.spaces.remove(&p)) {
            self.stats.spaces_evicted += 1;
            self.release(space);
        }
    }

    /// Adds a mapping to a process, loading its module on first sight.
    pub fn add_mapping(&mut self, pid: Pid, mapping: Mapping, loader: &mut dyn ModuleLoader) {
        if !mapping.executable {
            return;
        }
        let (id, loaded) = self.modules.get_or_load(pid, &mapping, loader);
        let slot = id.0 as usize;
        if self.unwind.len() <= slot {
            self.unwind.resize(slot + 1, None);
        }
        if loaded {
            let bytes = self.modules.get(id).and_then(|m| m.bytes.as_deref());
            self.unwind[slot] = bytes.and_then(UnwindSections::parse);
        }
        let fh = match self.mode {
            UnwindMode::FramePointer => None,
            _ => self.modules.get(id).and_then(|m| {
                let bytes = m.bytes.as_ref()?;
                module::framehop_module(
                    &m.path,
                    bytes,
                    self.unwind[slot].as_ref()?,
                    &m.segments,
                    &mapping,
                )
            }),
        };
        self.make_room(pid);
        let walks = self.walks;
        let space = self.spaces.entry(pid).or_insert_with(|| AddressSpace {
            last_sampled: walks,
            ..AddressSpace::default()
        });
        match space.insert(mapping, id, fh) {
            Inserted::Done { added, gone } => {
                for r in gone {
                    self.modules.note_mapped(r, false);
                }
                if added {
                    self.modules.note_mapped(id, true);
                }
            }
            Inserted::Refused => self.stats.mappings_refused += 1,
        }
    }

    /// Keeps address spaces current. Events that do not concern the address space are
    /// ignored.
    pub fn on_event(&mut self, event: &Event<'_>, loader: &mut dyn ModuleLoader) {
        match event {
            Event::Mmap(m) => self.add_mapping(m.pid, m.mapping.clone(), loader),
            Event::Comm(c) if c.exec => self.drop_space(c.pid),
            Event::Exit(x) if x.pid.0 == x.tid.0 => self.drop_space(x.pid),
            Event::Fork(f) if f.pid != f.ppid => {
                // A new process starts as a copy of its parent's address space.
                if let Some(mut parent) = self.spaces.get(&f.ppid).cloned() {
                    // Cloned first: making room may evict the parent itself.
                    self.make_room(f.pid);
                    parent.last_sampled = self.walks;
                    for id in parent.modules() {
                        self.modules.note_mapped(id, true);
                    }
                    if let Some(old) = self.spaces.insert(f.pid, parent) {
                        self.release(old);
                    }
                }
            }
            _ => {}
        }
    }

    fn drop_space(&mut self, pid: Pid) {
        if let Some(space) = self.spaces.remove(&pid) {
            self.stats.spaces_dropped += 1;
            self.release(space);
        }
    }

    fn release(&mut self, space: AddressSpace) {
        for id in space.modules() {
            self.modules.note_mapped(id, false);
        }
    }

    /// Drops the bytes and unwind sections of modules that no live process maps and `keep`
    /// does not ask for (frames of a profile not yet symbolized).
    pub fn release_unused_modules(&mut self, keep: impl Fn(ModuleId) -> bool) -> usize {
        let released = self.modules.release_unused(keep);
        for id in &released {
            if let Some(u) = self.unwind.get_mut(id.0 as usize) {
                *u = None;
            }
        }
        released.len()
    }

    /// Processes with an address space.
    pub fn processes(&self) -> usize {
        self.spaces.len()
    }

    /// The executable mappings of `pid`, sorted by start address, with their modules.
    pub fn mappings(&self, pid: Pid) -> &[(Mapping, ModuleId)] {
        self.spaces.get(&pid).map_or(&[], |s| &s.mappings[..])
    }

    fn key(pid: Pid, space: Option<&AddressSpace>, addr: FrameAddr) -> FrameKey {
        match space.and_then(|s| s.find(addr.address())) {
            Some((m, _)) if m.is_anonymous_code() => FrameKey::Jit { pid, addr },
            Some((m, id)) => FrameKey::Module {
                module: *id,
                offset: m.file_offset_of(addr.address()),
                is_return: matches!(addr, FrameAddr::Ret(_)),
            },
            None => FrameKey::Unmapped(addr),
        }
    }

    /// Walks the stack of `sample` into `out`, leaf first. Kernel frames (when requested)
    /// come first, then user frames, then a marker if the walk stopped early.
    pub fn unwind(&mut self, sample: &Sample<'_>, out: &mut Vec<FrameKey>) {
        out.clear();
        let user_chain = sample.user_chain;
        if self.kernel {
            out.extend(
                sample
                    .kernel_chain
                    .iter()
                    .take(MAX_FRAMES)
                    .map(|&a| FrameKey::Kernel(a)),
            );
        }
        self.walks += 1;
        if let Some(s) = self.spaces.get_mut(&sample.pid) {
            s.last_sampled = self.walks;
        }
        let space = self.spaces.get(&sample.pid);
        match (self.mode, sample.user_regs) {
            (UnwindMode::FramePointer, _) | (_, None) if !user_chain.is_empty() => {
                for (i, &a) in user_chain.iter().take(MAX_FRAMES).enumerate() {
                    let addr = if i == 0 {
                        FrameAddr::Ip(a)
                    } else {
                        FrameAddr::Ret(a)
                    };
                    out.push(Self::key(sample.pid, space, addr));
                }
            }
            (UnwindMode::FramePointer, _) | (_, None) => {
                if out.is_empty()
                    || sample.user_regs.is_none() && self.mode == UnwindMode::FramePointer
                {
                    out.push(FrameKey::Marker(Marker::NoUserStack));
                }
            }
            (mode, Some(regs)) => {
                self.stats.dwarf_walks += 1;
                if sample.user_stack.len() as u64 >= sample.user_stack_requested
                    && sample.user_stack_requested > 0
                {
                    self.stats.stack_copy_full += 1;
                }
                let Some(space) = space else {
                    out.push(FrameKey::Unmapped(FrameAddr::Ip(regs.ip)));
                    out.push(FrameKey::Marker(Marker::Truncated));
                    return;
                };
                let walk = Walk {
                    mode,
                    pid: sample.pid,
                    space,
                    walker_modules: &self.modules,
                    unwind: &self.unwind,
                };
                let jit = walk.run(&mut self.cache, regs, sample.user_stack, out);
                if jit.frames > 0 {
                    self.stats.jit_walks += 1;
                    self.stats.jit_frames += jit.frames;
                }
                self.stats.jit_truncated += u64::from(jit.truncated);
            }
        }
    }
}

/// glibc's (and musl's) x86_64 signal return trampoline, `__restore_rt`:
/// `mov $15, %rax` (`__NR_rt_sigreturn`); `syscall`.
const SIGRETURN_CODE: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

/// Where the interrupted registers sit in the kernel's `struct rt_sigframe` relative to the
/// stack pointer at the trampoline (which points at its `struct ucontext`): `uc_flags`,
/// `uc_link` and `uc_stack` take 40 bytes, then `struct sigcontext` holds r8..r15, rdi, rsi,
/// rbp, rbx, rdx, rax, rcx, rsp, rip.
const SIGCONTEXT_RBP: u64 = 40 + 10 * 8;
const SIGCONTEXT_RSP: u64 = 40 + 15 * 8;
const SIGCONTEXT_RIP: u64 = 40 + 16 * 8;

/// Whether module `id` has call frame information.
fn has_cfi(unwind: &[Option<UnwindSections>], id: ModuleId) -> bool {
    unwind
        .get(id.0 as usize)
        .and_then(Option::as_ref)
        .is_some_and(|u| u.has_cfi)
}

/// One DWARF walk's fixed inputs.
struct Walk<'a> {
    mode: UnwindMode,
    pid: Pid,
    space: &'a AddressSpace,
    walker_modules: &'a ModuleTable,
    unwind: &'a [Option<UnwindSections>],
}

/// Whether `addr` is the start of the signal return trampoline, read from the module's bytes.
fn is_sigreturn_trampoline(
    modules: &ModuleTable,
    mapping: &Mapping,
    id: ModuleId,
    addr: u64,
) -> bool {
    let Some(bytes) = modules.get(id).and_then(|m| m.bytes.as_ref()) else {
        return false;
    };
    let off = mapping.file_offset_of(addr) as usize;
    bytes.get(off..off + SIGRETURN_CODE.len()) == Some(&SIGRETURN_CODE[..])
}

/// What a walk did in JIT code.
#[derive(Debug, Clone, Copy, Default)]
struct JitWalk {
    /// JIT frames stepped through.
    frames: u64,
    /// The walk ended in a JIT frame.
    truncated: bool,
}

/// One frame-pointer step out of a frame of JIT code, which has no unwind information: the
/// caller's frame pointer is at `[bp]`, the return address at `[bp + 8]`, and the caller's
/// stack pointer is `bp + 16`. `None` unless the frame pointer is 8-aligned, at or above
/// the stack pointer (frames only get older going up) and both words lie in the copied stack
/// (`read` refuses anything else), and the return address is not null. The caller's `bp`
/// is not checked here: if the caller is JIT code too, the next step checks it; if it is a
/// module with CFI, the CFI says what `bp` holds.
pub fn fp_step(
    regs: &UnwindRegsX86_64,
    read: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Option<(u64, UnwindRegsX86_64)> {
    let bp = regs.bp();
    if !bp.is_multiple_of(8) || bp < regs.sp() {
        return None;
    }
    let caller_bp = read(bp).ok()?;
    let ra = read(bp.checked_add(8)?).ok()?;
    let caller_sp = bp.checked_add(16)?;
    (ra != 0).then(|| (ra, UnwindRegsX86_64::new(ra, caller_sp, caller_bp)))
}

/// CPython 3.12's `-X perf` trampoline, one 11-byte copy per code object, named `py::…` in
/// the perf map: `sub $8,%rsp; call *%rcx; add $8,%rsp; ret`. It sets up no frame pointer
/// (3.13's does), so it is stepped by its known shape: the return address is at `[sp]` before
/// the `sub` and at the `ret`, at `[sp + 8]` in between.
const CPYTHON312_TRAMPOLINE_SIZE: u64 = 11;

/// A step out of a CPython 3.12 trampoline (see [`CPYTHON312_TRAMPOLINE_SIZE`]), if `entry`
/// is one.
fn cpython312_trampoline_step(
    entry: &sprof_core::jit::JitEntry,
    addr: FrameAddr,
    regs: &UnwindRegsX86_64,
    read: &mut impl FnMut(u64) -> Result<u64, ()>,
) -> Option<(u64, UnwindRegsX86_64)> {
    if entry.end - entry.start != CPYTHON312_TRAMPOLINE_SIZE || !entry.name.starts_with("py::") {
        return None;
    }
    // A return address here follows the call, at offset 6; it is looked up one byte earlier.
    let offset = addr.address().checked_sub(entry.start)?;
    let ra_slot = match offset {
        0..=3 | 10 => regs.sp(),
        _ => regs.sp().checked_add(8)?,
    };
    let ra = read(ra_slot).ok()?;
    let sp = ra_slot.checked_add(8)?;
    (ra != 0).then(|| (ra, UnwindRegsX86_64::new(ra, sp, regs.bp())))
}

/// How the walk goes on from a frame.
enum Step {
    Next(FrameAddress, UnwindRegsX86_64),
    /// The outermost frame: the walk is complete.
    Done,
    Truncated,
}

/// One DWARF walk. Memory reads only come from the copied stack: anything outside it ends the
/// walk as truncated rather than reading the target.
///
/// The loop is driven frame by frame (not with framehop's iterator) so that a signal frame
/// can be crossed (at the trampoline the interrupted registers are read from the kernel's
/// signal frame and the walk resumes at the interrupted instruction) and JIT code stepped
/// through by frame pointer.
impl Walk<'_> {
    fn run(
        &self,
        cache: &mut CacheX86_64,
        regs: sprof_core::UserRegs,
        stack: &[u8],
        out: &mut Vec<FrameKey>,
    ) -> JitWalk {
        let sp0 = regs.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = usize::try_from(addr.checked_sub(sp0).ok_or(())?).map_err(|_| ())?;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_ne_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut uregs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut frame = FrameAddress::from_instruction_pointer(regs.ip);
        let mut jit = JitWalk::default();
        for _ in 0..MAX_FRAMES {
            let addr = match frame {
                FrameAddress::InstructionPointer(a) => FrameAddr::Ip(a),
                FrameAddress::ReturnAddress(a) => FrameAddr::Ret(a.get()),
            };
            let step = match self.space.find(addr.address()) {
                None => {
                    // Code in no known mapping: no unwind info, and no honest way on.
                    out.push(FrameKey::Unmapped(addr));
                    Step::Truncated
                }
                Some((mapping, _)) if mapping.is_anonymous_code() => {
                    out.push(FrameKey::Jit {
                        pid: self.pid,
                        addr,
                    });
                    jit.frames += 1;
                    let known = self
                        .walker_modules
                        .jit
                        .entry(self.pid, addr.lookup_address());
                    let shaped = known
                        .and_then(|e| cpython312_trampoline_step(e, addr, &uregs, &mut read_stack));
                    match shaped.or_else(|| fp_step(&uregs, &mut read_stack)) {
                        Some((ra, regs)) => match FrameAddress::from_return_address(ra) {
                            Some(next) => Step::Next(next, regs),
                            None => Step::Truncated,
                        },
                        None => {
                            jit.truncated = true;
                            Step::Truncated
                        }
                    }
                }
                Some(found) => self.module_step(found, frame, uregs, cache, &mut read_stack, out),
            };
            match step {
                Step::Next(next, regs) => (frame, uregs) = (next, regs),
                Step::Done => return jit,
                Step::Truncated => {
                    out.push(FrameKey::Marker(Marker::Truncated));
                    return jit;
                }
            }
        }
        out.push(FrameKey::Marker(Marker::Truncated));
        jit
    }

    /// A step out of a frame in a mapped module: across the signal trampoline by the
    /// kernel's signal frame, otherwise by the module's CFI (framehop).
    fn module_step(
        &self,
        (mapping, id): &(Mapping, ModuleId),
        frame: FrameAddress,
        mut uregs: UnwindRegsX86_64,
        cache: &mut CacheX86_64,
        read_stack: &mut impl FnMut(u64) -> Result<u64, ()>,
        out: &mut Vec<FrameKey>,
    ) -> Step {
        let id = *id;
        let addr = match frame {
            FrameAddress::InstructionPointer(a) => FrameAddr::Ip(a),
            FrameAddress::ReturnAddress(a) => FrameAddr::Ret(a.get()),
        };
        if is_sigreturn_trampoline(self.walker_modules, mapping, id, addr.address()) {
            // The trampoline is entered at its first byte, not returned into after a call:
            // name it by that address.
            out.push(FrameKey::Module {
                module: id,
                offset: mapping.file_offset_of(addr.address()),
                is_return: false,
            });
            let sp = uregs.sp();
            let mut saved = |off: u64| sp.checked_add(off).ok_or(()).and_then(&mut *read_stack);
            return match (
                saved(SIGCONTEXT_RIP),
                saved(SIGCONTEXT_RSP),
                saved(SIGCONTEXT_RBP),
            ) {
                (Ok(ip), Ok(new_sp), Ok(bp)) if ip != 0 => Step::Next(
                    FrameAddress::from_instruction_pointer(ip),
                    UnwindRegsX86_64::new(ip, new_sp, bp),
                ),
                _ => Step::Truncated,
            };
        }
        out.push(FrameKey::Module {
            module: id,
            offset: mapping.file_offset_of(addr.address()),
            is_return: matches!(addr, FrameAddr::Ret(_)),
        });
        if self.mode == UnwindMode::Dwarf && !has_cfi(self.unwind, id) {
            return Step::Truncated;
        }
        match self
            .space
            .unwinder
            .unwind_frame(frame, &mut uregs, cache, read_stack)
        {
            Ok(Some(ra)) => match FrameAddress::from_return_address(ra) {
                Some(next) => Step::Next(next, uregs),
                None => Step::Done,
            },
            // The unwind info says this is the outermost frame.
            Ok(None) => Step::Done,
            Err(_) => Step::Truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::{FileBytes, SampleKind, Tid, UserRegs};

    struct NoFiles;
    impl ModuleLoader for NoFiles {
        fn load(&mut self, _: Pid, _: &Mapping) -> Option<FileBytes> {
            None
        }
    }

    const SP: u64 = 0x7000;

    /// A copied stack starting at [`SP`] with `words` (address, value) written into it.
    fn stack(words: &[(u64, u64)]) -> Vec<u8> {
        let mut s = vec![0u8; 0x100];
        for &(addr, value) in words {
            let off = (addr - SP) as usize;
            s[off..off + 8].copy_from_slice(&value.to_ne_bytes());
        }
        s
    }

    /// A timer sample of `pid` at ip 0x10050: with registers (`bp`) and a stack copy, or,
    /// with `bp` `None`, the kernel's callchain `[ip]` only.
    fn sample(pid: u32, bp: Option<u64>, stack: &[u8]) -> sprof_core::Sample<'_> {
        sprof_core::Sample {
            kind: SampleKind::Timer,
            pid: Pid(pid),
            tid: Tid(pid),
            time: 0,
            cpu: 0,
            period: 1,
            ip: 0x10050,
            kernel_chain: &[],
            user_chain: if bp.is_some() { &[] } else { &[0x10050] },
            user_regs: bp.map(|bp| UserRegs {
                ip: 0x10050,
                sp: SP,
                bp,
            }),
            user_stack: stack,
            user_stack_requested: stack.len() as u64,
            addr: 0,
        }
    }

    fn walk(mode: UnwindMode, bp: u64, stack: &[u8]) -> (Vec<FrameKey>, UnwindStats) {
        let mut walker = StackWalker::new(mode, false);
        let jit = sprof_core::maps::parse_line("10000-20000 rwxp 00000000 00:00 0 ").unwrap();
        walker.add_mapping(Pid(9), jit, &mut NoFiles);
        let sample = sample(9, Some(bp), stack);
        let mut out = Vec::new();
        walker.unwind(&sample, &mut out);
        (out, walker.stats)
    }

    fn jit(addr: FrameAddr) -> FrameKey {
        FrameKey::Jit { pid: Pid(9), addr }
    }

    #[test]
    fn jit_frames_are_stepped_by_frame_pointer_in_both_cfi_modes() {
        // Two JIT frames chained through bp, then a return into no known mapping.
        let s = stack(&[
            (0x7010, 0x7030),
            (0x7018, 0x10100),
            (0x7030, 0x7050),
            (0x7038, 0x30000),
        ]);
        for mode in [UnwindMode::Auto, UnwindMode::Dwarf] {
            let (frames, stats) = walk(mode, 0x7010, &s);
            assert_eq!(
                frames,
                vec![
                    jit(FrameAddr::Ip(0x10050)),
                    jit(FrameAddr::Ret(0x10100)),
                    FrameKey::Unmapped(FrameAddr::Ret(0x30000)),
                    FrameKey::Marker(Marker::Truncated),
                ]
            );
            assert_eq!(
                (stats.jit_walks, stats.jit_frames, stats.jit_truncated),
                (1, 2, 0)
            );
        }
    }

    #[test]
    fn cpython312_trampolines_are_stepped_by_their_shape_once_the_map_names_them() {
        // Leaf in a JIT function with a frame pointer, whose caller is a 3.12 trampoline
        // (`sub $8,%rsp; call *%rcx` at 0x10200, returning to 0x10206): its return address
        // sits 8 bytes above the callee's frame, and bp is not touched.
        let s = stack(&[(0x7010, 0x7090), (0x7018, 0x10206), (0x7028, 0x30000)]);
        let map = b"10200 b py::work:/app/x.py\n";
        let mut walker = StackWalker::new(UnwindMode::Auto, false);
        let m = sprof_core::maps::parse_line("10000-20000 r-xp 00000000 00:00 0 //anon").unwrap();
        walker.add_mapping(Pid(9), m, &mut NoFiles);
        let run = |walker: &mut StackWalker| {
            let sample = sample(9, Some(0x7010), &s);
            let mut out = Vec::new();
            walker.unwind(&sample, &mut out);
            out
        };
        // Before the map is read, the trampoline's frame pointer (the caller's) is garbage.
        let before = run(&mut walker);
        assert_eq!(before.len(), 3, "{before:?}");
        walker.modules.jit.note_address(Pid(9), 0x10205);
        let mut read =
            |_: Pid, _: sprof_core::JitFile<'_>, off: u64, _: usize, buf: &mut Vec<u8>| {
                buf.extend_from_slice(&map[off as usize..]);
                sprof_core::PerfMapRead::Read {
                    file_len: map.len() as u64,
                }
            };
        walker
            .modules
            .jit
            .refresh(Pid(9), std::time::Instant::now(), &mut read);
        assert_eq!(
            run(&mut walker),
            vec![
                jit(FrameAddr::Ip(0x10050)),
                jit(FrameAddr::Ret(0x10206)),
                FrameKey::Unmapped(FrameAddr::Ret(0x30000)),
                FrameKey::Marker(Marker::Truncated),
            ]
        );
    }

    #[test]
    fn a_bad_frame_pointer_in_jit_code_truncates_the_walk() {
        let s = stack(&[(0x7010, 0x7030), (0x7018, 0x10100)]);
        // Misaligned, below the stack pointer, outside the copy, a loop back down.
        let looping = stack(&[(0x7010, 0x7008), (0x7018, 0x10100)]);
        for (bp, s) in [(0x7011, &s), (0x6ff0, &s), (0x9000, &s), (0x7010, &looping)] {
            let (frames, stats) = walk(UnwindMode::Auto, bp, s);
            assert_eq!(frames.last(), Some(&FrameKey::Marker(Marker::Truncated)));
            assert!(frames.len() <= 3, "{bp:#x}: {frames:?}");
            assert_eq!(stats.jit_truncated, 1, "{bp:#x}");
        }
    }

    #[test]
    fn frame_pointer_mode_keys_anonymous_code_as_jit() {
        let mut space = AddressSpace::default();
        let m = sprof_core::maps::parse_line("10000-20000 r-xp 00000000 00:00 0 //anon").unwrap();
        space.insert(m, ModuleId(0), None);
        let key = StackWalker::key(Pid(3), Some(&space), FrameAddr::Ret(0x10010));
        assert_eq!(
            key,
            FrameKey::Jit {
                pid: Pid(3),
                addr: FrameAddr::Ret(0x10010)
            }
        );
    }

    #[test]
    fn a_cap_on_address_spaces_evicts_the_process_sampled_longest_ago() {
        let mut walker = StackWalker::new(UnwindMode::FramePointer, false);
        walker.set_max_spaces(Some(2));
        let m = sprof_core::maps::parse_line("10000-20000 r-xp 00000000 00:00 0 ").unwrap();
        let mut out = Vec::new();
        walker.add_mapping(Pid(1), m.clone(), &mut NoFiles);
        walker.add_mapping(Pid(2), m.clone(), &mut NoFiles);
        // 1 is sampled after 2: 2 is the one sampled longest ago.
        walker.unwind(&sample(2, None, &[]), &mut out);
        walker.unwind(&sample(1, None, &[]), &mut out);
        walker.add_mapping(Pid(3), m.clone(), &mut NoFiles);
        assert_eq!(walker.processes(), 2);
        assert_eq!(walker.stats.spaces_evicted, 1);
        assert!(walker.mappings(Pid(2)).is_empty(), "2 evicted");
        assert!(!walker.mappings(Pid(1)).is_empty() && !walker.mappings(Pid(3)).is_empty());
        // More mappings of a process already tracked evict nothing.
        walker.add_mapping(Pid(3), m, &mut NoFiles);
        assert_eq!(walker.stats.spaces_evicted, 1);
    }

    /// The red-team review's D11: a process that maps code in a loop. Mappings replace
    /// those they overlap (module counts follow), and beyond [`MAX_MAPPINGS`] new ones are
    /// refused and counted rather than growing the space, and each insert, without end.
    #[test]
    fn mappings_replace_what_they_overlap_and_are_capped_per_process() {
        let mut walker = StackWalker::new(UnwindMode::FramePointer, false);
        let line = |start: u64, inode: u64| {
            sprof_core::maps::parse_line(&format!(
                "{start:x}-{:x} r-xp 00000000 08:01 {inode} /lib/x{inode}.so",
                start + 0x1000
            ))
            .unwrap()
        };
        walker.add_mapping(Pid(1), line(0x10000, 1), &mut NoFiles);
        walker.add_mapping(Pid(1), line(0x20000, 2), &mut NoFiles);
        // Over the first: it goes, the second stays.
        walker.add_mapping(Pid(1), line(0x10000, 3), &mut NoFiles);
        let kept: Vec<u64> = walker
            .mappings(Pid(1))
            .iter()
            .map(|(m, _)| m.inode)
            .collect();
        assert_eq!(kept, vec![3, 2]);
        for i in 0..(MAX_MAPPINGS as u64 + 500) {
            walker.add_mapping(Pid(2), line(0x100_0000 + i * 0x2000, 7), &mut NoFiles);
        }
        assert_eq!(walker.mappings(Pid(2)).len(), MAX_MAPPINGS);
        assert_eq!(walker.stats.mappings_refused, 500);
        // A remap of a kept range is still taken at the cap.
        walker.add_mapping(Pid(2), line(0x100_0000, 8), &mut NoFiles);
        assert_eq!(walker.mappings(Pid(2))[0].0.inode, 8);
        assert_eq!(walker.stats.mappings_refused, 500);
    }
}
