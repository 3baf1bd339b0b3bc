//! asyncio tasks (3.14+): the task a thread runs, and the tasks that await it up to the root,
//! each with the coroutine frames where it waits.
//!
//! Read from outside, with what the interpreter publishes for its own remote debugger: the
//! `_asyncio` module's `.AsyncioDebug` section gives the task object's layout and where the
//! thread state keeps its running task; each task points to the task (or the set of tasks)
//! that awaits it and to its coroutine, whose embedded frame is where it waits and whose
//! awaited object (just below the frame's stack pointer) leads down the chain of coroutines.
//! Every pointer is checked and every walk bounded, as for the frames themselves.

use super::*;
use crate::layout::CoroLayout;

/// `.AsyncioDebug` of 3.14's and 3.15's `_asyncio` (13 `uint64_t`): the fields used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncOffsets {
    pub task_size: u64,
    pub task_name: u64,
    pub task_awaited_by: u64,
    pub task_awaited_by_is_set: u64,
    pub task_coro: u64,
    /// Offset of the running task in the thread state.
    pub ts_running_task: u64,
}

/// One task of a chain, innermost (the running task) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskStack {
    /// The task object's address.
    pub task: u64,
    /// `Task-3` for a task never named.
    pub name: String,
    /// Address of its coroutine's frame: for the running task, where its frames begin on the
    /// thread's stack.
    pub coro_frame: u64,
    /// Where an awaiting task waits, innermost first; empty for the running task.
    pub frames: Vec<PyFrame>,
}

/// Tasks followed up from the running one, and coroutines down each task's chain.
const MAX_TASKS: usize = 64;
const MAX_COROS: usize = 64;
/// Largest set of awaiting tasks looked into, in entries.
const MAX_SET_ENTRIES: u64 = 1024;
/// Longest task name kept, in characters.
const MAX_NAME_CHARS: usize = 256;

impl AsyncOffsets {
    /// Parses the section of an ELF file (the interpreter, or `_asyncio*.so`): `None` when
    /// it has none or its values are implausible.
    pub fn from_elf(bytes: &[u8]) -> Option<AsyncOffsets> {
        use object::{Object, ObjectSection};
        let file = object::File::parse(bytes).ok()?;
        let data = file.section_by_name(".AsyncioDebug")?.data().ok()?;
        let w = |i: usize| {
            data.get(8 * i..8 * i + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let o = AsyncOffsets {
            task_size: w(0)?,
            task_name: w(1)?,
            task_awaited_by: w(2)?,
            task_awaited_by_is_set: w(4)?,
            task_coro: w(5)?,
            ts_running_task: w(11)?,
        };
        let ts_size = w(9)?;
        let fits = |off: u64, len: u64, size: u64| off.checked_add(len).is_some_and(|e| e <= size);
        let ok = (1..=4096).contains(&o.task_size)
            && fits(o.task_name, 8, o.task_size)
            && fits(o.task_awaited_by, 8, o.task_size)
            && fits(o.task_awaited_by_is_set, 1, o.task_size)
            && fits(o.task_coro, 8, o.task_size)
            && (1..=1 << 16).contains(&ts_size)
            && fits(o.ts_running_task, 8, ts_size);
        ok.then_some(o)
    }
}

impl PythonProcess {
    /// Whether this interpreter can be asked for task chains (3.14+).
    pub fn has_task_layout(&self) -> bool {
        self.layout.coro.is_some()
    }

    /// The task chain of the thread read last (by a successful `read_thread*`), into `out`
    /// (cleared first): its running task (or `start`, when the caller knows better), then the
    /// task awaiting it, up to the root task. Empty when the thread runs no task.
    pub fn task_chain(
        &mut self,
        aio: &AsyncOffsets,
        start: Option<u64>,
        codes: &mut CodeTable,
        out: &mut Vec<TaskStack>,
    ) -> Result<(), PyError> {
        out.clear();
        let Some(cl) = self.layout.coro else {
            return Ok(());
        };
        if self.current_tstate == 0 {
            return Ok(());
        }
        let running = match start {
            Some(task) => task,
            None => self
                .mem
                .read_u64("running task", self.current_tstate + aio.ts_running_task)?,
        };
        if running == 0 {
            return Ok(());
        }
        check_range("task", running, aio.task_size as usize)?;
        let ob_type = self.layout.ob_type;
        let task_type = self.mem.read_u64("task type", running + ob_type)?;
        let mut task = running;
        let mut seen = HashSet::new();
        let mut window = vec![0u8; aio.task_size as usize];
        while out.len() < MAX_TASKS && seen.insert(task) {
            self.mem.read("task", task, &mut window)?;
            let coro = le_u64(&window, aio.task_coro);
            let name = self.task_name(le_u64(&window, aio.task_name), &cl);
            let awaited_by = le_u64(&window, aio.task_awaited_by);
            let is_set = window[aio.task_awaited_by_is_set as usize] != 0;
            let mut frames = Vec::new();
            if !out.is_empty() && coro != 0 {
                // Where an awaiting task waits; a failure leaves its name alone.
                let _ = self.coroutine_frames(coro, &cl, codes, &mut frames);
            }
            out.push(TaskStack {
                task,
                name,
                coro_frame: coro.wrapping_add(cl.gi_iframe),
                frames,
            });
            let parent = match (awaited_by, is_set) {
                (0, _) => break,
                (set, true) => self.first_task_in_set(set, task_type, &cl)?,
                (one, false) => Some(one),
            };
            match parent {
                Some(p) if self.mem.read_u64("task type", p + ob_type)? == task_type => {
                    task = p;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// A task's name: its `str`, or `Task-N` for the number an unnamed task has until asked.
    fn task_name(&mut self, obj: u64, cl: &CoroLayout) -> String {
        let l = self.layout;
        let Ok(ty) = self
            .mem
            .read_u64("task name type", obj.wrapping_add(l.ob_type))
        else {
            return "?".into();
        };
        if Some(ty) == self.int_type {
            let mut b = [0u8; 12];
            if self
                .mem
                .read("task number", obj + cl.long_tag, &mut b[..8])
                .is_ok()
                && self
                    .mem
                    .read("task number", obj + cl.long_digit, &mut b[8..])
                    .is_ok()
            {
                // One 30-bit digit (lv_tag = 1 << 3) covers every task a process makes.
                if le_u64(&b, 0) == 1 << 3 {
                    return format!("Task-{}", le_u32(&b, 8));
                }
            }
            return "Task-?".into();
        }
        if Some(ty) != self.str_type {
            return "?".into();
        }
        let mut head = vec![0u8; l.ascii_size as usize];
        if self.mem.read("task name", obj, &mut head).is_err() {
            return "?".into();
        }
        let Ok(layout) = strings::layout(le_u32(&head, l.str_state), l.ascii_size, l.compact_size)
        else {
            return "?".into();
        };
        let chars = usize::try_from(le_u64(&head, l.str_length))
            .unwrap_or(usize::MAX)
            .min(MAX_NAME_CHARS);
        let mut data = vec![0u8; chars * usize::from(layout.kind)];
        if self
            .mem
            .read("task name", obj + layout.data_offset, &mut data)
            .is_err()
        {
            return "?".into();
        }
        let mut name = String::new();
        strings::decode(layout.kind, &data, &mut name);
        name
    }

    /// The first task in the set of tasks awaiting one (entries whose key has the task type).
    fn first_task_in_set(
        &mut self,
        set: u64,
        task_type: u64,
        cl: &CoroLayout,
    ) -> Result<Option<u64>, PyError> {
        let mut head = [0u8; 16];
        self.mem
            .read("awaiting set", set + cl.set_table, &mut head[..8])?;
        self.mem
            .read("awaiting set", set + cl.set_mask, &mut head[8..])?;
        let (table, mask) = (le_u64(&head, 0), le_u64(&head, 8));
        if table == 0 || mask >= MAX_SET_ENTRIES {
            return Ok(None);
        }
        // Entries are (key, hash) pairs.
        let mut entries = vec![0u8; 16 * (mask as usize + 1)];
        self.mem.read("awaiting set entries", table, &mut entries)?;
        for e in entries.chunks_exact(16) {
            let key = le_u64(e, 0);
            if key != 0 && self.mem.read_u64("task type", key + self.layout.ob_type)? == task_type {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The frames of coroutine `coro` and of the coroutines it awaits in turn, innermost
    /// first, into `out`.
    fn coroutine_frames(
        &mut self,
        coro: u64,
        cl: &CoroLayout,
        codes: &mut CodeTable,
        out: &mut Vec<PyFrame>,
    ) -> Result<(), PyError> {
        let l = self.layout;
        let coro_type = self.mem.read_u64("coroutine type", coro + l.ob_type)?;
        let need = self.frame_buf.len().max(cl.fr_stackpointer as usize + 8);
        let mut frame = vec![0u8; need];
        let mut raw = Vec::new();
        let mut c = coro;
        let mut seen = HashSet::new();
        while raw.len() < MAX_COROS && seen.insert(c) {
            let addr = c + cl.gi_iframe;
            self.mem.read("coroutine frame", addr, &mut frame)?;
            let n = self.frame_buf.len();
            self.frame_buf.copy_from_slice(&frame[..n]);
            let (_, _, code, addrq) = self.frame_fields();
            raw.push(RawFrame {
                addr,
                code,
                addrq,
                entry: false,
            });
            let mut state = [0u8; 1];
            self.mem
                .read("coroutine state", c + cl.gi_frame_state, &mut state)?;
            if state[0] as i8 != cl.suspended_yield_from {
                break;
            }
            let sp = le_u64(&frame, cl.fr_stackpointer);
            let awaited = self.mem.read_u64("awaited object", sp.wrapping_sub(8))? & !3;
            if awaited == 0 || self.mem.read_u64("awaited type", awaited + l.ob_type)? != coro_type
            {
                break;
            }
            c = awaited;
        }
        raw.reverse();
        self.raw = raw;
        self.resolve_frames(codes, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian unstable's `_asyncio` tables (3.14: a module of its own; 3.15: built into the
    /// interpreter), as the test root holds them.
    #[test]
    fn reads_the_published_task_layouts() {
        let files = [
            (
                "/srv/sid/usr/lib/python3.14/lib-dynload/_asyncio.cpython-314-x86_64-linux-gnu.so",
                872,
            ),
            ("/srv/sid/usr/bin/python3.15", 1032),
        ];
        for (path, running) in files {
            let Ok(bytes) = std::fs::read(path) else {
                assert!(
                    std::env::var_os("SPROFD_REQUIRE_LIVE").is_none(),
                    "{path} is missing (tests/deps.sh installs it)"
                );
                eprintln!("skipped (absent): {path}");
                continue;
            };
            let o = AsyncOffsets::from_elf(&bytes).expect(path);
            assert_eq!(
                (o.task_size, o.task_name, o.task_awaited_by, o.task_coro),
                (168, 136, 96, 128),
                "{path}"
            );
            assert_eq!(
                (o.task_awaited_by_is_set, o.ts_running_task),
                (109, running)
            );
        }
        // A file without the section has no layout.
        let own = std::fs::read("/proc/self/exe").unwrap();
        assert_eq!(AsyncOffsets::from_elf(&own), None);
    }
}
