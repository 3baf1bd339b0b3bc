//! Where the heaviest functions weighed most: from the samples in time order
//! ([`SymbolizedProfile::timeline`]), the functions with the most weight and, for each, the
//! stretch of time (one of [`BINS`]) where it had the most.
//!
//! A sample counts for one function: the innermost frame of the program's own code. Frames
//! of the C runtime, the dynamic loader, the C++ and GCC runtimes, allocators, the Python
//! interpreter, the kernel and markers are passed over, so the page faults of `memset` count
//! for the function that called it; a stack with nothing else counts for its leaf. A function
//! is counted apart for each of its callers (the next frame of the program's own code out),
//! so a helper that every grower calls (`write_kept` under `grow_big` and `grow_small`) shows
//! who called it.

use std::collections::HashMap;

use sprof_core::{is_interpreter_module, Frame, FrameKind, SampledStack, SymbolizedProfile};

/// Stretches of time the profile is cut into.
pub(crate) const BINS: usize = 40;

/// Module name prefixes of runtime code, passed over when choosing a sample's function.
const RUNTIME_MODULES: [&str; 11] = [
    "libc.so",
    "libc-",
    "ld-linux",
    "ld-",
    "libpthread",
    "libstdc++",
    "libgcc_s",
    "libjemalloc",
    "libtcmalloc",
    "libmimalloc",
    "[vdso]",
];

/// A heavy function and the stretch where it weighed most.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HotSpot {
    /// Its name as the chart shows it (untrusted text).
    pub function: String,
    /// The function it was called from, as the chart shows it (untrusted text).
    pub caller: Option<String>,
    /// Its weight over the whole profile.
    pub total: u64,
    /// The stretch, seconds since the chart's start.
    pub from: f64,
    pub to: f64,
    /// Its weight in that stretch, and the weight of every sample there.
    pub weight: u64,
    pub stretch_total: u64,
}

/// The `count` functions with the most weight in `profile`'s timeline, heaviest first, each
/// with the stretch of `0..end` seconds after `start` (CLOCK_MONOTONIC ns) where it had the
/// most. Empty without a timeline.
pub(crate) fn hot_spots(
    profile: &SymbolizedProfile,
    start: u64,
    end: f64,
    count: usize,
) -> Vec<HotSpot> {
    let bin_secs = end.max(1e-3) / BINS as f64;
    // One function per stack, chosen once.
    let mut names: Vec<(String, Option<String>)> = Vec::new();
    let mut ids: HashMap<(String, Option<String>), u32> = HashMap::new();
    let owner: Vec<Option<u32>> = profile
        .stacks
        .iter()
        .map(|s| {
            let (frame, caller) = owner_frame(profile, s)?;
            let name = (display_name(frame), caller.map(display_name));
            let next = names.len() as u32;
            Some(*ids.entry(name).or_insert_with_key(|n| {
                names.push(n.clone());
                next
            }))
        })
        .collect();
    // Two passes over the samples (millions of them) rather than a copy.
    let each = |f: &mut dyn FnMut(u32, usize, u64)| {
        for t in &profile.timeline {
            let Some(&Some(id)) = owner.get(t.stack as usize) else {
                continue;
            };
            let secs = t.time.saturating_sub(start) as f64 / 1e9;
            let bin = ((secs / bin_secs) as usize).min(BINS - 1);
            f(id, bin, sample_weight(profile, t.weight));
        }
    };
    let mut totals = vec![0u64; names.len()];
    let mut stretch_totals = [0u64; BINS];
    each(&mut |id, bin, w| {
        totals[id as usize] += w;
        stretch_totals[bin] += w;
    });
    let mut top: Vec<u32> = (0..names.len() as u32)
        .filter(|&i| totals[i as usize] > 0)
        .collect();
    top.sort_by(|&a, &b| {
        totals[b as usize]
            .cmp(&totals[a as usize])
            .then_with(|| names[a as usize].cmp(&names[b as usize]))
    });
    top.truncate(count);
    let mut bins = vec![[0u64; BINS]; top.len()];
    each(&mut |id, bin, w| {
        if let Some(i) = top.iter().position(|&t| t == id) {
            bins[i][bin] += w;
        }
    });
    top.iter()
        .zip(&bins)
        .map(|(&id, bins)| {
            // The first of equal stretches.
            let best = (0..BINS).fold(0, |b, i| if bins[i] > bins[b] { i } else { b });
            HotSpot {
                function: names[id as usize].0.clone(),
                caller: names[id as usize].1.clone(),
                total: totals[id as usize],
                from: best as f64 * bin_secs,
                to: (best + 1) as f64 * bin_secs,
                weight: bins[best],
                stretch_total: stretch_totals[best],
            }
        })
        .collect()
}

/// What one timed sample weighs, by the profile's own rule ([`SymbolizedProfile::weight`]):
/// one sample, or its period (time, or bytes).
fn sample_weight(profile: &SymbolizedProfile, period: u64) -> u64 {
    profile.weight(&SampledStack {
        frames: Vec::new(),
        samples: 1,
        period,
        thread: None,
    })
}

/// The innermost frame of the program's own code in `stack`, else its leaf (roots aside),
/// and the next frame of the program's own code outward from it.
fn owner_frame<'p>(
    profile: &'p SymbolizedProfile,
    stack: &SampledStack,
) -> Option<(&'p Frame, Option<&'p Frame>)> {
    let mut inward = stack
        .frames
        .iter()
        .rev()
        .filter_map(|&f| profile.frames.get(f as usize))
        .filter(|f| f.kind != FrameKind::Root);
    let leaf = inward.clone().next()?;
    match inward.find(|f| !is_runtime(f)) {
        Some(own) => Some((own, inward.find(|f| !is_runtime(f)))),
        None => Some((leaf, None)),
    }
}

fn is_runtime(frame: &Frame) -> bool {
    match frame.kind {
        FrameKind::Kernel | FrameKind::Marker | FrameKind::Root => true,
        FrameKind::Python | FrameKind::Jit => false,
        FrameKind::Native | FrameKind::Inlined | FrameKind::Unresolved => {
            frame.module.as_deref().is_some_and(|m| {
                is_interpreter_module(m) || RUNTIME_MODULES.iter().any(|p| m.starts_with(p))
            }) || (frame.kind == FrameKind::Unresolved && frame.module.is_none())
        }
    }
}

/// A function's name on the chart: Python functions with their file's base name.
fn display_name(frame: &Frame) -> String {
    match (&frame.kind, &frame.file) {
        (FrameKind::Python, Some(file)) => {
            let base = file.rsplit('/').next().unwrap_or(file);
            format!("{} ({base})", frame.function)
        }
        _ => frame.function.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::TimedSample;

    fn native(name: &str, module: &str) -> Frame {
        Frame {
            module: Some(module.into()),
            ..Frame::bare(name, FrameKind::Native)
        }
    }

    /// `work` (its own code) calling `memset` (libc) from 0 to 1 s, then `spin` to 2 s.
    fn profile() -> SymbolizedProfile {
        let frames = vec![
            Frame::bare("prog", FrameKind::Root),
            native("main", "prog"),
            native("work", "prog"),
            native("memset", "libc.so.6"),
            native("spin", "prog"),
            Frame::bare("asm_exc_page_fault", FrameKind::Kernel),
        ];
        let stack = |frames: Vec<u32>| SampledStack {
            frames,
            samples: 0,
            period: 0,
            thread: None,
        };
        let mut timeline = Vec::new();
        for ms in 0..2000u64 {
            timeline.push(TimedSample {
                time: 1_000_000_000 + ms * 1_000_000,
                stack: if ms < 1000 { 0 } else { 1 },
                weight: 1_000_000,
            });
        }
        SymbolizedProfile {
            frames,
            stacks: vec![stack(vec![0, 1, 2, 3, 5]), stack(vec![0, 1, 4])],
            timeline,
            ..Default::default()
        }
    }

    #[test]
    fn each_function_is_marked_where_it_weighed_most() {
        let p = profile();
        let spots = hot_spots(&p, 1_000_000_000, 2.0, 3);
        let names: Vec<&str> = spots.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(
            names,
            ["spin", "work"],
            "memset and the kernel count for work"
        );
        let work = &spots[1];
        assert!(
            work.to <= 1.0 + 1e-9,
            "work weighed most in its first second: {work:?}"
        );
        assert!(spots[0].from >= 1.0 - 1e-9, "{:?}", spots[0]);
        assert_eq!(work.weight, work.stretch_total, "it was all there was then");
        assert_eq!(work.total, 1000, "CPU profiles count samples");
        assert_eq!(work.caller.as_deref(), Some("main"));
    }

    #[test]
    fn no_timeline_no_spots() {
        let mut p = profile();
        p.timeline.clear();
        assert!(hot_spots(&p, 0, 2.0, 3).is_empty());
        // Samples before the start and past the end land in the first and last stretch.
        let mut p = profile();
        p.timeline.truncate(1);
        p.timeline.push(TimedSample {
            time: u64::MAX,
            stack: 9,
            weight: 1,
        });
        let spots = hot_spots(&p, 5_000_000_000, 1.0, 3);
        assert_eq!(spots.len(), 1, "a stack out of range is skipped");
        assert_eq!(spots[0].from, 0.0);
    }
}
