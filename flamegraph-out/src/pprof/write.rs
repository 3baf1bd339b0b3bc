//! Writing pprof: building the [`proto::Profile`] of a [`SymbolizedProfile`] (strings,
//! functions, mappings and locations interned in order of first use, so the same profile
//! gives the same bytes) and gzipping it, as [`Exporter::export`] for [`Pprof`] does.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;
use sprof_core::{FrameKind, SymbolizedProfile};

use super::{proto, Pprof, PprofValueType, KERNEL_MAPPING};
use crate::{checked_stack, ExportError, Exporter};

impl Exporter for Pprof {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let bytes = self.to_proto(profile)?.encode_to_vec();
        let mut gz = GzEncoder::new(BufWriter::new(out), Compression::default());
        gz.write_all(&bytes)?;
        let mut w = gz.finish()?;
        w.flush()?;
        Ok(())
    }
}

impl Pprof {
    /// The profile message [`Exporter::export`] encodes and compresses.
    pub fn to_proto(&self, profile: &SymbolizedProfile) -> Result<proto::Profile, ExportError> {
        let mut b = Builder::new(profile);
        let meta = &profile.meta;
        let value = proto::ValueType {
            r#type: b.strings.intern(self.value_type(meta).type_name()),
            unit: b.strings.intern(self.value_type(meta).unit()),
        };
        let sample_type = vec![
            proto::ValueType {
                r#type: b.strings.intern("samples"),
                unit: b.strings.intern("count"),
            },
            value,
        ];
        let period = (1_000_000_000 + meta.frequency / 2)
            .checked_div(meta.frequency)
            .unwrap_or(0);
        // Go's convention when no period was measured: values are samples × period.
        let nominal_period = (profile.total_period() == 0 && period > 0).then_some(period);
        let labels = LabelKeys {
            comm: b.strings.intern("comm"),
            thread_name: b.strings.intern("thread_name"),
            pid: b.strings.intern("pid"),
            thread_id: b.strings.intern("thread_id"),
            cmdline: b.strings.intern("cmdline"),
            cgroup: b.strings.intern("cgroup"),
            uid: b.strings.intern("uid"),
            profile_pid: meta.pid,
        };
        let mut samples = Vec::with_capacity(profile.stacks.len());
        let mut group: Vec<u32> = Vec::new();
        for i in 0..profile.stacks.len() {
            let stack = checked_stack(profile, i)?;
            if stack.samples == 0 && stack.period == 0 {
                continue;
            }
            samples.push(b.sample(profile, stack, &labels, nominal_period, &mut group));
        }
        let comment = b.comments(meta);
        let duration_nanos = if meta.duration_secs.is_finite() && meta.duration_secs > 0.0 {
            // `as` saturates, which is what an absurd duration deserves.
            (meta.duration_secs * 1e9).round() as i64
        } else {
            0
        };
        Ok(proto::Profile {
            sample_type,
            sample: samples,
            mapping: b.mappings,
            location: b.locations,
            function: b.functions,
            string_table: b.strings.table,
            time_nanos: self.time_nanos.unwrap_or_else(now_nanos),
            duration_nanos,
            period_type: Some(value),
            period: saturating_i64(period),
            comment,
            ..Default::default()
        })
    }

    /// The second value type: as configured, else what the profile measures.
    fn value_type(&self, meta: &sprof_core::ProfileMeta) -> PprofValueType {
        self.value_type.unwrap_or(match meta.measure {
            sprof_core::Measure::Cpu => PprofValueType::Cpu,
            sprof_core::Measure::Wall => PprofValueType::Wall,
            sprof_core::Measure::OffCpu => PprofValueType::OffCpu,
            sprof_core::Measure::Memory => PprofValueType::Space,
        })
    }
}

/// String ids of the labels every sample may carry, and the profile's pid (for samples
/// that do not say their thread).
struct LabelKeys {
    comm: i64,
    thread_name: i64,
    pid: i64,
    thread_id: i64,
    cmdline: i64,
    cgroup: i64,
    uid: i64,
    profile_pid: Option<u32>,
}

impl Builder<'_> {
    /// One pprof sample: Root frames become `comm`/`thread_name` labels, the rest locations,
    /// leaf first, each location a frame with the inlined frames that follow it.
    fn sample(
        &mut self,
        profile: &SymbolizedProfile,
        stack: &sprof_core::SampledStack,
        keys: &LabelKeys,
        nominal_period: Option<u64>,
        group: &mut Vec<u32>,
    ) -> proto::Sample {
        let mut label = Vec::with_capacity(3);
        let mut frames = stack.frames.as_slice();
        for key in [keys.comm, keys.thread_name] {
            match frames.split_first() {
                Some((&f, rest)) if profile.frames[f as usize].kind == FrameKind::Root => {
                    let name = self.strings.intern(&profile.frames[f as usize].function);
                    label.push(proto::Label {
                        key,
                        str: name,
                        ..Default::default()
                    });
                    frames = rest;
                }
                _ => break,
            }
        }
        let num = |key, num: u32| proto::Label {
            key,
            num: i64::from(num),
            ..Default::default()
        };
        let pid = stack.thread.map(|t| t.pid).or(keys.profile_pid);
        label.extend(pid.map(|pid| num(keys.pid, pid)));
        label.extend(stack.thread.map(|t| num(keys.thread_id, t.tid)));
        if let Some(process) = pid.and_then(|pid| profile.processes.get(&pid)) {
            label.extend(process.uid.map(|uid| num(keys.uid, uid)));
            for (key, value) in [
                (keys.cmdline, &process.cmdline),
                (keys.cgroup, &process.cgroup),
            ] {
                if !value.is_empty() {
                    label.push(proto::Label {
                        key,
                        str: self.strings.intern(value),
                        ..Default::default()
                    });
                }
            }
        }
        let mut location_id = Vec::with_capacity(frames.len());
        group.clear();
        for &f in frames {
            if profile.frames[f as usize].kind != FrameKind::Inlined && !group.is_empty() {
                location_id.push(self.location(group));
                group.clear();
            }
            group.push(f);
        }
        if !group.is_empty() {
            location_id.push(self.location(group));
        }
        location_id.reverse();
        let period_value = match nominal_period {
            Some(period) => stack.samples.saturating_mul(period),
            None => stack.period,
        };
        proto::Sample {
            location_id,
            value: vec![saturating_i64(stack.samples), saturating_i64(period_value)],
            label,
        }
    }

    /// The target, then the notes, as comments.
    fn comments(&mut self, meta: &sprof_core::ProfileMeta) -> Vec<i64> {
        let mut comment = Vec::with_capacity(1 + meta.notes.len());
        if !meta.target.is_empty() {
            comment.push(self.strings.intern(&meta.target));
        }
        for note in &meta.notes {
            comment.push(self.strings.intern(note));
        }
        comment
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The string table: position 0 is `""`, the rest in order of first use.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.intern("");
        s
    }

    /// Every string of the profile goes through here: control characters become spaces
    /// ([`crate::label::printable`]), as in every other format.
    fn intern(&mut self, s: &str) -> i64 {
        let s = crate::label::printable(s);
        let s = s.as_ref();
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Interns functions, mappings and locations, numbering each kind from 1 in order of first
/// use; keyed by interned ids, so nothing is formatted per frame per stack.
struct Builder<'p> {
    profile: &'p SymbolizedProfile,
    strings: Strings,
    functions: Vec<proto::Function>,
    function_ids: HashMap<(i64, i64, i64), u64>,
    /// Per profile frame: its function id, once known.
    frame_functions: Vec<Option<u64>>,
    mappings: Vec<proto::Mapping>,
    mapping_ids: HashMap<i64, u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<Vec<u32>, u64>,
}

impl<'p> Builder<'p> {
    fn new(profile: &'p SymbolizedProfile) -> Builder<'p> {
        Builder {
            profile,
            strings: Strings::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            frame_functions: vec![None; profile.frames.len()],
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
        }
    }

    /// The location of `frames` (root first: a frame and the frames inlined into it).
    fn location(&mut self, frames: &[u32]) -> u64 {
        if let Some(&id) = self.location_ids.get(frames) {
            return id;
        }
        let mapping_id = self.mapping(frames[0]);
        let line = frames
            .iter()
            .rev()
            .map(|&f| proto::Line {
                function_id: self.function(f),
                line: self.profile.frames[f as usize].line.map_or(0, i64::from),
                column: 0,
            })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(proto::Location {
            id,
            mapping_id,
            line,
            ..Default::default()
        });
        self.location_ids.insert(frames.to_vec(), id);
        id
    }

    fn function(&mut self, f: u32) -> u64 {
        if let Some(id) = self.frame_functions[f as usize] {
            return id;
        }
        let frame = &self.profile.frames[f as usize];
        let name = if frame.function.is_empty() {
            self.strings.intern("[unknown]")
        } else {
            self.strings.intern(&frame.function)
        };
        let filename = match frame.file.as_deref().or(frame.decl_file.as_deref()) {
            Some(file) => self.strings.intern(file),
            None => 0,
        };
        let start_line = frame.decl_line.map_or(0, i64::from);
        let next = self.functions.len() as u64 + 1;
        let id = *self
            .function_ids
            .entry((name, filename, start_line))
            .or_insert(next);
        if id == next {
            self.functions.push(proto::Function {
                id,
                name,
                system_name: name,
                filename,
                start_line,
            });
        }
        self.frame_functions[f as usize] = Some(id);
        id
    }

    fn mapping(&mut self, f: u32) -> u64 {
        let frame = &self.profile.frames[f as usize];
        let module = match (frame.kind, frame.module.as_deref()) {
            (FrameKind::Python, _) => None,
            (FrameKind::Kernel, None) => Some(KERNEL_MAPPING),
            (_, module) => module,
        };
        let Some(module) = module else {
            return 0;
        };
        let info = self.profile.modules.iter().find(|m| m.name == module);
        let filename = self
            .strings
            .intern(info.map_or(module, |m| m.path.as_str()));
        let next = self.mappings.len() as u64 + 1;
        let id = *self.mapping_ids.entry(filename).or_insert(next);
        if id == next {
            let build_id = match info.and_then(|m| m.build_id.as_deref()) {
                Some(b) => self.strings.intern(b),
                None => 0,
            };
            self.mappings.push(proto::Mapping {
                id,
                filename,
                build_id,
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
                ..Default::default()
            });
        }
        id
    }
}
