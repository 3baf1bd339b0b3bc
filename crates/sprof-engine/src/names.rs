//! Names of live threads and processes, kept current from comm and fork records and dropped
//! when they exit; the profile keeps its own copy for every thread it has samples of.

use std::collections::HashMap;

use sprof_core::{Event, Pid, ProfileBuilder, Tid};

#[derive(Debug, Default)]
pub struct Names {
    threads: HashMap<Tid, String>,
    processes: HashMap<Pid, String>,
}

impl Names {
    /// Applies a comm, fork or exit record, renaming the profile's entries on comm.
    pub fn on_event(&mut self, event: &Event<'_>, profile: &mut ProfileBuilder) {
        match event {
            Event::Comm(c) => {
                self.threads.insert(c.tid, c.comm.clone());
                if let Some(t) = profile.thread_mut(c.tid) {
                    t.name.clone_from(&c.comm);
                }
                if c.pid.0 == c.tid.0 || c.exec {
                    self.processes.insert(c.pid, c.comm.clone());
                    for t in profile.threads_of_mut(c.pid) {
                        t.process_name.clone_from(&c.comm);
                    }
                }
            }
            Event::Fork(f) => {
                if let Some(n) = self.threads.get(&f.ptid).cloned() {
                    self.threads.entry(f.tid).or_insert(n);
                }
                if f.pid != f.ppid {
                    if let Some(n) = self.processes.get(&f.ppid).cloned() {
                        self.processes.entry(f.pid).or_insert(n);
                    }
                }
            }
            Event::Exit(x) => {
                self.threads.remove(&x.tid);
                if x.pid.0 == x.tid.0 {
                    self.processes.remove(&x.pid);
                }
            }
            _ => {}
        }
    }

    /// Names a thread that just entered the profile.
    pub fn name_thread(&self, pid: Pid, tid: Tid, profile: &mut ProfileBuilder) {
        let name = self.threads.get(&tid).cloned().unwrap_or_default();
        let process = self
            .processes
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| name.clone());
        if let Some(t) = profile.thread_mut(tid) {
            t.name = name;
            t.process_name = process;
        }
    }

    /// The name of a live process, as its last comm record said.
    pub fn process(&self, pid: Pid) -> Option<&str> {
        self.processes.get(&pid).map(String::as_str)
    }

    /// Live threads and processes with a name.
    pub fn len(&self) -> (usize, usize) {
        (self.threads.len(), self.processes.len())
    }
}
