//! speedscope's JSON file format (`https://www.speedscope.app/file-format-schema.json`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};

use serde::Serialize;
use sprof_core::{FrameKind, SymbolizedProfile};

use crate::{checked_stack, frame_label, printable, ExportError, Exporter};

/// The `$schema` of every speedscope file.
pub const SPEEDSCOPE_SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

/// The speedscope exporter: one `sampled` profile per process or thread.
///
/// * Stacks are grouped by their leading root frames: a profile per process (named after the
///   first root frame) and per thread (the second root frame: `process: thread`), the
///   busiest first, which is the one speedscope opens (`activeProfileIndex` 0). Stacks
///   without a root frame go to a profile named after the target.
/// * Root frames are left out of the frame lists; every other frame is a shared frame named
///   by [`frame_label`] (as in folded stacks), with its `file` and `line` when known. Frames
///   with the same name, file and line share an entry.
/// * When the profile kept its samples in time order ([`SymbolizedProfile::timeline`], CPU
///   profiles), each sample is written as it happened, in time order per thread, weighted
///   by its period: speedscope's *Time Order* view then shows phases, stalls and bursts
///   where they happened. Otherwise each stack is one sample, root first, weighted by its
///   period in nanoseconds (unit `nanoseconds`), or by its sample count (unit `none`) when
///   the profile kept no periods, sorted by their names, so the time-order view reads like
///   a flame graph. `startValue` is 0 and `endValue` the sum of the weights.
/// * A profile without samples gives one empty sampled profile, so the file still opens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Speedscope;

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared<'a>,
    profiles: Vec<Profile>,
    name: &'a str,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: &'static str,
}

#[derive(Serialize)]
struct Shared<'a> {
    frames: Vec<FrameInfo<'a>>,
}

#[derive(Serialize)]
struct FrameInfo<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    start_value: u64,
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

/// What makes two frames one shared frame: label, file and line.
type FrameKey<'a> = (Cow<'a, str>, Option<Cow<'a, str>>, Option<u32>);

/// A profile's samples (shared frame indices, root first) and their weights.
type Samples = Vec<(Vec<usize>, u64)>;

/// The `exporter` field: `sprofd <version>`.
const EXPORTER: &str = concat!("sprofd ", env!("CARGO_PKG_VERSION"));

impl Exporter for Speedscope {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let use_period = profile.total_period() > 0;
        let unit = match profile.meta.measure.unit() {
            sprof_core::Unit::Bytes => "bytes",
            _ if use_period => "nanoseconds",
            _ => "none",
        };
        let mut shared = SharedFrames {
            frames: Vec::new(),
            ids: HashMap::new(),
            of_profile: vec![None; profile.frames.len()],
        };
        // (process, thread) root names → index into `groups`.
        let mut group_ids: HashMap<(Option<&str>, Option<&str>), usize> = HashMap::new();
        let mut groups: Vec<(String, Samples)> = Vec::new();
        let mut add = |stack: &'_ sprof_core::SampledStack, weight: u64| {
            let mut roots = stack
                .frames
                .iter()
                .map(|&f| &profile.frames[f as usize])
                .take_while(|f| f.kind == FrameKind::Root)
                .map(|f| f.function.as_str());
            let key = (roots.next(), roots.next());
            let group = *group_ids.entry(key).or_insert_with(|| {
                groups.push((group_name(key, profile), Vec::new()));
                groups.len() - 1
            });
            let sample: Vec<usize> = stack
                .frames
                .iter()
                .filter(|&&f| profile.frames[f as usize].kind != FrameKind::Root)
                .map(|&f| shared.id(profile, f))
                .collect();
            groups[group].1.push((sample, weight));
        };
        // Samples as they happened, when the session kept them (CPU profiles: a wall-clock
        // profile's switched-out time has no sample times of its own).
        let in_time_order = !profile.timeline.is_empty() && !profile.meta.measure.is_time();
        if in_time_order {
            for t in &profile.timeline {
                let stack = checked_stack(profile, t.stack as usize)?;
                add(stack, if use_period { t.weight } else { 1 });
            }
        } else {
            for i in 0..profile.stacks.len() {
                let stack = checked_stack(profile, i)?;
                let weight = if use_period {
                    stack.period
                } else {
                    stack.samples
                };
                if weight == 0 {
                    continue;
                }
                add(stack, weight);
            }
        }
        // The target can carry a request's `comm=` (the daemon's titles): printable only.
        let name = if profile.meta.target.is_empty() {
            Cow::Borrowed("sprofd profile")
        } else {
            printable(&profile.meta.target)
        };
        let name = name.as_ref();
        let file = File {
            schema: SPEEDSCOPE_SCHEMA,
            profiles: profiles_of(groups, &shared.frames, unit, name, !in_time_order),
            shared: Shared {
                frames: shared.frames,
            },
            name,
            active_profile_index: 0,
            exporter: EXPORTER,
        };
        let mut w = BufWriter::new(out);
        serde_json::to_writer(&mut w, &file).map_err(io::Error::from)?;
        w.flush()?;
        Ok(())
    }
}

/// The shared frame table: one entry per distinct (label, file, line).
struct SharedFrames<'a> {
    frames: Vec<FrameInfo<'a>>,
    ids: HashMap<FrameKey<'a>, usize>,
    /// Per profile frame: its shared frame, once used.
    of_profile: Vec<Option<usize>>,
}

impl<'a> SharedFrames<'a> {
    fn id(&mut self, profile: &'a SymbolizedProfile, f: u32) -> usize {
        if let Some(id) = self.of_profile[f as usize] {
            return id;
        }
        let frame = &profile.frames[f as usize];
        let file = frame.file.as_deref().map(printable);
        let key = (frame_label(frame), file, frame.line);
        let next = self.frames.len();
        let frames = &mut self.frames;
        let id = *self.ids.entry(key).or_insert_with_key(|key| {
            frames.push(FrameInfo {
                name: key.0.clone(),
                file: key.1.clone(),
                line: key.2,
            });
            next
        });
        self.of_profile[f as usize] = Some(id);
        id
    }
}

/// A per-thread profile's name: `process: thread`, `process`, or the target.
fn group_name(key: (Option<&str>, Option<&str>), profile: &SymbolizedProfile) -> String {
    let name = match key {
        (Some(process), Some(thread)) => format!("{process}: {thread}"),
        (Some(process), None) => process.to_string(),
        _ if !profile.meta.target.is_empty() => profile.meta.target.clone(),
        _ => "[unknown]".to_string(),
    };
    printable(&name).into_owned()
}

/// One sampled profile per group, busiest first (speedscope opens the first); at least one,
/// so that an empty profile still opens.
fn profiles_of(
    groups: Vec<(String, Samples)>,
    shared: &[FrameInfo<'_>],
    unit: &'static str,
    name: &str,
    sort_by_name: bool,
) -> Vec<Profile> {
    let mut profiles: Vec<Profile> = groups
        .into_iter()
        .map(|(name, mut samples)| {
            if sort_by_name {
                samples.sort_by(|a, b| {
                    names(shared, &a.0)
                        .cmp(names(shared, &b.0))
                        .then_with(|| a.0.cmp(&b.0))
                });
            }
            let (samples, weights): (Vec<_>, Vec<_>) = samples.into_iter().unzip();
            Profile {
                kind: "sampled",
                name,
                unit,
                start_value: 0,
                end_value: weights.iter().fold(0u64, |a, &w| a.saturating_add(w)),
                samples,
                weights,
            }
        })
        .collect();
    profiles.sort_by(|a, b| b.end_value.cmp(&a.end_value).then(a.name.cmp(&b.name)));
    if profiles.is_empty() {
        profiles.push(Profile {
            kind: "sampled",
            name: name.to_string(),
            unit,
            start_value: 0,
            end_value: 0,
            samples: Vec::new(),
            weights: Vec::new(),
        });
    }
    profiles
}

/// The names of a sample's frames, root first.
fn names<'a>(shared: &'a [FrameInfo<'_>], sample: &'a [usize]) -> impl Iterator<Item = &'a str> {
    sample.iter().map(|&i| shared[i].name.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprof_core::{Frame, SampledStack, ThreadRef, TimedSample};

    #[test]
    fn a_timeline_is_written_as_it_happened_per_thread() {
        let stack = |f: Vec<u32>, tid: u32| SampledStack {
            frames: f,
            samples: 2,
            period: 2000,
            thread: Some(ThreadRef { pid: 1, tid }),
        };
        let p = SymbolizedProfile {
            frames: vec![
                Frame::bare("app", FrameKind::Root),
                Frame::bare("b_second", FrameKind::Native),
                Frame::bare("a_first", FrameKind::Native),
            ],
            stacks: vec![stack(vec![0, 1], 1), stack(vec![0, 2], 1)],
            timeline: [(1, 1), (2, 0), (3, 1), (4, 0)]
                .map(|(time, stack)| TimedSample {
                    time,
                    stack,
                    weight: 1000 + time,
                })
                .to_vec(),
            ..Default::default()
        };
        let mut out = Vec::new();
        Speedscope.export(&p, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let names: Vec<&str> = v["profiles"][0]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                v["shared"]["frames"][s[0].as_u64().unwrap() as usize]["name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        // Not sorted by name: a_first, b_second, a_first, b_second as they happened.
        assert_eq!(names, ["a_first", "b_second", "a_first", "b_second"]);
        assert_eq!(
            v["profiles"][0]["weights"],
            serde_json::json!([1001, 1002, 1003, 1004])
        );
        assert_eq!(v["profiles"][0]["endValue"], 4010);
    }
}
