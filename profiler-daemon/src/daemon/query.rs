//! Profiles and process lists for a time range, from the stored windows and the window in
//! progress: what `GET /api/v1/profile`, `GET /api/v1/processes`, the page and `sprofd
//! report` answer.

use std::sync::Arc;

use serde::Serialize;
use sprof_core::{FrameKind, ProfileMerger, SampledStack, SymbolizedProfile};
use sprof_store::{StoredWindow, WindowStore};

/// Which samples a query wants.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Unix milliseconds, inclusive.
    pub from_ms: u64,
    pub to_ms: u64,
    pub pid: Option<u32>,
    pub comm: Option<regex::Regex>,
    /// Whose processes the reader may see.
    pub viewer: Viewer,
}

/// Whose processes a reader of the API may see: all of them, or, on a host whose `/proc`
/// hides other users' processes (`hidepid=`), only their own (see `daemon::server`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Viewer {
    #[default]
    All,
    /// Only the processes of this (effective) uid; stacks of processes whose uid is unknown
    /// are hidden too.
    Own(u32),
}

impl Selection {
    /// Whether some stacks may be left out: then the windows' counts (of the whole host)
    /// are not the selection's.
    pub fn filters(&self) -> bool {
        self.pid.is_some() || self.comm.is_some() || self.viewer != Viewer::All
    }

    /// Whether a stack of `p` is selected (by its thread's pid, its process's name, and
    /// whose process it is).
    pub fn keeps(&self, p: &SymbolizedProfile, s: &SampledStack) -> bool {
        let pid = s.thread.map(|t| t.pid);
        if self.pid.is_some() && pid != self.pid {
            return false;
        }
        if let Viewer::Own(uid) = self.viewer {
            let owner = pid.and_then(|pid| p.processes.get(&pid)?.uid);
            if owner != Some(uid) {
                return false;
            }
        }
        match &self.comm {
            Some(re) => re.is_match(process_name(p, s)),
            None => true,
        }
    }
}

/// The process name of a stack: its first root frame.
pub fn process_name<'p>(p: &'p SymbolizedProfile, s: &SampledStack) -> &'p str {
    s.frames
        .first()
        .map(|&f| &p.frames[f as usize])
        .filter(|f| f.kind == FrameKind::Root)
        .map_or("", |f| f.function.as_str())
}

/// The profiles a range covers: stored windows (read from disk) and live slices.
pub struct Sources {
    pub windows: Vec<StoredWindow>,
    pub live: Vec<(u64, u64, Arc<SymbolizedProfile>)>,
    /// The window in progress's memory readings (the stored windows hold their own).
    pub live_rss: Vec<super::rss::ProcessRss>,
}

/// Why a range could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "the range covers {0} stored windows, more than {1}; narrow it (or use `sprofd report`)"
    )]
    TooManyWindows(usize, usize),
    #[error(
        "the range covers {0} MiB of stored windows, more than {1} MiB; narrow it (or use `sprofd report`)"
    )]
    TooManyBytes(u64, u64),
}

impl Sources {
    /// Stored windows overlapping the selection, at most `max_windows` of them and
    /// `max_bytes` of files: what a query reads and merges bounds its time and memory.
    pub fn gather(
        store: &WindowStore,
        live: Vec<(u64, u64, Arc<SymbolizedProfile>)>,
        sel: &Selection,
        max_windows: usize,
        max_bytes: u64,
    ) -> Result<Sources, QueryError> {
        let windows = store.windows_between(sel.from_ms, sel.to_ms);
        if windows.len() > max_windows {
            return Err(QueryError::TooManyWindows(windows.len(), max_windows));
        }
        let bytes: u64 = windows.iter().map(|w| w.bytes).sum();
        if bytes > max_bytes {
            return Err(QueryError::TooManyBytes(bytes >> 20, max_bytes >> 20));
        }
        let live = live
            .into_iter()
            .filter(|(start, end, _)| *start <= sel.to_ms && *end >= sel.from_ms)
            .collect();
        Ok(Sources {
            windows,
            live,
            live_rss: Vec::new(),
        })
    }

    /// Reads every source (each window file once) and hands it to `f`; files that cannot be
    /// read are returned for the caller to warn about (and quarantine).
    pub fn for_each(
        &self,
        mut f: impl FnMut(u64, u64, &SymbolizedProfile),
    ) -> Vec<(std::path::PathBuf, String)> {
        let mut bad = Vec::new();
        for w in &self.windows {
            match WindowStore::load(w) {
                Ok(p) => f(w.start_ms, w.end_ms, &p),
                // Deleted by retention since the listing: nothing to report.
                Err(sprof_store::StoreError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bad.push((w.path.clone(), e.to_string())),
            }
        }
        for (start, end, p) in &self.live {
            f(*start, *end, p);
        }
        bad
    }
}

/// The merged profile of a selection.
pub fn merged(
    sources: &Sources,
    sel: &Selection,
) -> (SymbolizedProfile, Vec<(std::path::PathBuf, String)>) {
    let mut merger = ProfileMerger::new();
    let mut span: Option<(u64, u64)> = None;
    let bad = sources.for_each(|start, end, p| {
        merger.add(p, |p, s| sel.keeps(p, s));
        span = Some(span.map_or((start, end), |(a, b)| (a.min(start), b.max(end))));
    });
    let mut profile = merger.finish();
    if let Some((a, b)) = span {
        profile.meta.duration_secs = b.saturating_sub(a) as f64 / 1000.0;
    }
    if sel.filters() {
        profile.meta.stats = own_stats(&profile);
    }
    (profile, bad)
}

/// The counts of a profile's own stacks: samples, truncated stacks, JIT stacks, samples
/// over the stack cap. Records lost and throttled are the host's, not any process's: a
/// selection of some processes has none it can state, so they are left at 0 (the subtitle
/// then says "0 lost" of what it can count, rather than a share of another whole).
fn own_stats(p: &SymbolizedProfile) -> sprof_core::SessionStats {
    let mut st = sprof_core::SessionStats::default();
    for s in &p.stacks {
        let frames = || s.frames.iter().filter_map(|&f| p.frames.get(f as usize));
        st.samples += s.samples;
        if frames().any(|f| f.kind == FrameKind::Marker && f.function == "[truncated]") {
            st.truncated += s.samples;
        }
        if frames().any(|f| f.kind == FrameKind::Jit) {
            st.jit += s.samples;
        }
        if frames().any(|f| f.kind == FrameKind::Marker && f.function == "[other]") {
            st.over_limit += s.samples;
        }
    }
    st
}

/// One process seen in a range.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// The process's cgroup: its container or systemd unit.
    pub cgroup: String,
    pub samples: u64,
    /// CPU time in seconds (the samples' periods).
    pub cpu_seconds: f64,
    /// Unix seconds of the first and last window or slice it had samples in.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Its resident memory in the range, where it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss: Option<super::memory::ProcessMemory>,
}

#[cfg(test)]
mod tests {
    use sprof_core::{Frame, SampledStack, ThreadRef};

    use super::*;

    /// The case: a complete Python process on a host with truncated stacks elsewhere.
    /// Its own subtitle counts its own samples, and no truncated stack.
    #[test]
    fn a_selections_figures_are_its_own_not_the_hosts() {
        let frames = vec![
            Frame::bare("python3", FrameKind::Root),
            Frame::bare("work", FrameKind::Python),
            Frame::bare("deep", FrameKind::Root),
            Frame::bare("[truncated]", FrameKind::Marker),
        ];
        let stack = |frames: Vec<u32>, samples: u64, pid: u32| SampledStack {
            thread: Some(ThreadRef { pid, tid: pid }),
            ..sprof_testkit::stack(&frames, samples, samples * 10_000_000)
        };
        let mut p = SymbolizedProfile {
            frames,
            stacks: vec![stack(vec![0, 1], 128, 7), stack(vec![2, 3], 176, 8)],
            ..Default::default()
        };
        p.meta.stats.samples = 304;
        p.meta.stats.truncated = 176;
        p.meta.stats.lost = 3;
        let sources = Sources {
            windows: Vec::new(),
            live: vec![(0, 10_000, Arc::new(p))],
            live_rss: Vec::new(),
        };
        let host = Selection {
            from_ms: 0,
            to_ms: 10_000,
            ..Default::default()
        };
        let (all, _) = merged(&sources, &host);
        assert_eq!(
            (
                all.meta.stats.samples,
                all.meta.stats.truncated,
                all.meta.stats.lost
            ),
            (304, 176, 3)
        );
        let one = Selection {
            pid: Some(7),
            ..host.clone()
        };
        let (py, _) = merged(&sources, &one);
        assert_eq!(
            (
                py.meta.stats.samples,
                py.meta.stats.truncated,
                py.meta.stats.lost
            ),
            (128, 0, 0)
        );
        let subtitle = flamegraph_out::default_subtitle(&py.meta);
        assert!(
            subtitle.contains("128 samples") && !subtitle.contains("truncated"),
            "{subtitle}"
        );
        let deep = Selection {
            pid: Some(8),
            ..host
        };
        let (d, _) = merged(&sources, &deep);
        assert_eq!((d.meta.stats.samples, d.meta.stats.truncated), (176, 176));
    }
}
