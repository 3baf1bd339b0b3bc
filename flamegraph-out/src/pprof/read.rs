//! Reading pprof: decoding a profile (gzipped or not) and turning it back into a
//! [`SymbolizedProfile`], as `sprofd diff` needs. Input comes from outside, so everything here
//! is bounded ([`MAX_PPROF_BYTES`], [`MAX_STACK_FRAMES`]) and checked: bad input is an error,
//! never a panic.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use flate2::read::MultiGzDecoder;
use prost::Message;
use sprof_core::{
    Frame, FrameInterner, FrameKind, ModuleInfo, ProcessLabels, ProfileMeta, SampledStack,
    SymbolizedProfile, ThreadRef,
};

use super::{proto, PprofValueType, JIT_MAPPING, KERNEL_MAPPING};

/// Largest decompressed profile [`read_pprof`] accepts, in bytes (a guard against gzip bombs).
pub const MAX_PPROF_BYTES: u64 = 1 << 30;

/// Most frames [`read_pprof`] accepts in one stack, inlined frames included (a guard against
/// a small file that expands into enormous stacks).
pub const MAX_STACK_FRAMES: usize = 1 << 16;

/// Why a pprof profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PprofReadError {
    /// The gzip stream is corrupt or truncated.
    #[error("decompressing the profile failed: {0}")]
    Gzip(#[source] io::Error),
    /// The profile decompresses to more than [`MAX_PPROF_BYTES`].
    #[error("the decompressed profile is larger than {MAX_PPROF_BYTES} bytes")]
    TooLarge,
    /// The bytes are not a protobuf `Profile`.
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The message decodes but breaks profile.proto's rules (an unknown id, a string
    /// position out of range, ...).
    #[error("invalid pprof profile: {0}")]
    Invalid(String),
}

/// Checks that a gzipped profile decompresses to its end (CRC and length) within
/// [`MAX_PPROF_BYTES`], without decoding it: cheap enough to check a history of windows.
pub fn check_gzip(bytes: &[u8]) -> Result<(), PprofReadError> {
    let n = io::copy(
        &mut MultiGzDecoder::new(bytes).take(MAX_PPROF_BYTES + 1),
        &mut io::sink(),
    )
    .map_err(PprofReadError::Gzip)?;
    if n > MAX_PPROF_BYTES {
        return Err(PprofReadError::TooLarge);
    }
    Ok(())
}

/// Decodes a pprof profile, gzipped (as on disk and over HTTP) or not, into its message.
pub fn decode_pprof(bytes: &[u8]) -> Result<proto::Profile, PprofReadError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut raw = Vec::new();
        MultiGzDecoder::new(bytes)
            .take(MAX_PPROF_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(PprofReadError::Gzip)?;
        if raw.len() as u64 > MAX_PPROF_BYTES {
            return Err(PprofReadError::TooLarge);
        }
        Ok(proto::Profile::decode(raw.as_slice())?)
    } else {
        Ok(proto::Profile::decode(bytes)?)
    }
}

/// Reads a pprof profile (gzipped or not) back into a [`SymbolizedProfile`], as `sprofd
/// diff` needs; the inverse of [`Pprof`](super::Pprof) as far as folded stacks go.
///
/// * Samples: the first value is `samples`, the second (0 when there is none) `period`;
///   negative values are an error. Samples that end up with equal frames are merged.
/// * Labels `comm` and `thread_name` become the stack's root frames; the first numeric `pid`
///   label the profile's pid (so a profile without samples has none). Other labels are
///   ignored.
/// * Locations become frames, root first: the last line of a location is the frame itself,
///   the lines before it [`FrameKind::Inlined`] frames. A location without lines is an
///   unresolved `module+0xOFFSET` (or `[unknown]`).
/// * A frame's kind is inferred: [`FrameKind::Kernel`] in a mapping named `[kernel…`
///   ([`KERNEL_MAPPING`] gives no module), [`FrameKind::Python`] with no mapping but a file,
///   [`FrameKind::Jit`] in the [`JIT_MAPPING`] (but [`FrameKind::Unresolved`] for its
///   `[jit] 0x…`), [`FrameKind::Unresolved`] for `[unknown]` and `module+0x…`, [`FrameKind::Marker`] for
///   other `[…]` names without mapping or file, [`FrameKind::Native`] otherwise. A frame's
///   module is its mapping's filename; `decl_file` is not kept by pprof (Python frames get
///   their file).
/// * Metadata: the first comment is the target and the others notes, the duration from
///   `duration_nanos`, the frequency from a nanosecond `period`; the event is left empty.
///
/// Corrupt, truncated or inconsistent input is an error, never a panic; so are inputs larger
/// than [`MAX_PPROF_BYTES`] decompressed and stacks deeper than [`MAX_STACK_FRAMES`].
pub fn read_pprof(bytes: &[u8]) -> Result<SymbolizedProfile, PprofReadError> {
    profile_from_proto(&decode_pprof(bytes)?)
}

fn invalid(what: impl Into<String>) -> PprofReadError {
    PprofReadError::Invalid(what.into())
}

/// Converts a decoded message; see [`read_pprof`].
pub fn profile_from_proto(p: &proto::Profile) -> Result<SymbolizedProfile, PprofReadError> {
    let strings = &p.string_table;
    if strings.first().map(String::as_str) != Some("") {
        return Err(invalid("string_table[0] is not \"\""));
    }
    let measure = read_measure(p)?;
    let mut r = ProtoReader::index(p)?;
    r.read_locations()?;
    let (stacks, pid) = r.read_samples()?;
    let string = |i: i64| string_at(strings, i);
    let mut comments = p.comment.iter().map(|&c| string(c).map(str::to_string));
    let target = comments.next().transpose()?.unwrap_or_default();
    let notes = comments.collect::<Result<Vec<_>, _>>()?;
    let nanosecond_period = match p.period_type {
        Some(vt) => string(vt.unit)? == PprofValueType::UNIT,
        None => false,
    };
    let frequency = match u64::try_from(p.period) {
        Ok(period) if nanosecond_period => (1_000_000_000 + period / 2)
            .checked_div(period)
            .unwrap_or(0),
        _ => 0,
    };
    Ok(SymbolizedProfile {
        meta: ProfileMeta {
            target,
            pid,
            duration_secs: p.duration_nanos.max(0) as f64 / 1e9,
            frequency,
            notes,
            measure,
            ..Default::default()
        },
        frames: r.frames.into_frames(),
        stacks,
        modules: r.modules,
        processes: r.processes,
        timeline: Vec::new(),
    })
}

/// Checks the sample types; a wall or off-CPU profile says so in its second one.
fn read_measure(p: &proto::Profile) -> Result<sprof_core::Measure, PprofReadError> {
    let string = |i: i64| string_at(&p.string_table, i);
    if p.sample_type.is_empty() {
        return Err(invalid("no sample_type"));
    }
    for vt in &p.sample_type {
        string(vt.r#type)?;
        string(vt.unit)?;
    }
    Ok(
        match p
            .sample_type
            .get(1)
            .map(|vt| string(vt.r#type))
            .transpose()?
        {
            Some("wall") => sprof_core::Measure::Wall,
            Some("off_cpu") => sprof_core::Measure::OffCpu,
            Some("space") => sprof_core::Measure::Memory,
            _ => sprof_core::Measure::Cpu,
        },
    )
}

/// The decoding state of one profile: its indexed tables and the frames made so far.
struct ProtoReader<'p> {
    p: &'p proto::Profile,
    /// Mappings by id, with the file name their frames carry.
    mappings: HashMap<u64, (&'p str, &'p proto::Mapping)>,
    modules: Vec<ModuleInfo>,
    processes: BTreeMap<u32, ProcessLabels>,
    functions: HashMap<u64, &'p proto::Function>,
    frames: FrameInterner,
    /// Each location's frames, root first.
    locations: HashMap<u64, Vec<u32>>,
}

impl<'p> ProtoReader<'p> {
    /// Indexes mappings and functions by id, checking their strings and ids.
    fn index(p: &'p proto::Profile) -> Result<ProtoReader<'p>, PprofReadError> {
        let string = |i: i64| string_at(&p.string_table, i);
        let mut mappings = HashMap::with_capacity(p.mapping.len());
        let mut modules = Vec::new();
        for m in &p.mapping {
            // sprofd writes the path of the file; frames carry its file name.
            let path = string(m.filename)?;
            let name = match path.rsplit_once('/') {
                Some((_, name)) if path.starts_with('/') && !name.is_empty() => {
                    let build_id = Some(string(m.build_id)?)
                        .filter(|b| !b.is_empty())
                        .map(str::to_string);
                    modules.push(ModuleInfo {
                        name: name.to_string(),
                        path: path.to_string(),
                        build_id,
                    });
                    name
                }
                _ => path,
            };
            if m.id == 0 || mappings.insert(m.id, (name, m)).is_some() {
                return Err(invalid(format!("mapping id {} is 0 or repeated", m.id)));
            }
        }
        let mut functions = HashMap::with_capacity(p.function.len());
        for f in &p.function {
            for s in [f.name, f.system_name, f.filename] {
                string(s)?;
            }
            if f.id == 0 || functions.insert(f.id, f).is_some() {
                return Err(invalid(format!("function id {} is 0 or repeated", f.id)));
            }
        }
        Ok(ProtoReader {
            p,
            mappings,
            modules,
            processes: BTreeMap::new(),
            functions,
            frames: FrameInterner::new(),
            locations: HashMap::with_capacity(p.location.len()),
        })
    }

    fn intern(&mut self, frame: Frame) -> u32 {
        self.frames.intern_owned(frame)
    }

    /// Turns every location into its frames (inlined lines become frames of their own).
    fn read_locations(&mut self) -> Result<(), PprofReadError> {
        let p = self.p;
        for loc in &p.location {
            let mapping = match loc.mapping_id {
                0 => None,
                id => Some(*self.mappings.get(&id).ok_or_else(|| {
                    invalid(format!(
                        "location {} refers to mapping {id}, which does not exist",
                        loc.id
                    ))
                })?),
            };
            let module = mapping.map(|(name, _)| name);
            let mut ids = Vec::with_capacity(loc.line.len().max(1));
            if loc.line.is_empty() {
                let frame = match mapping {
                    Some((module, m)) => {
                        let offset = loc
                            .address
                            .wrapping_sub(m.memory_start)
                            .wrapping_add(m.file_offset);
                        let mut f =
                            Frame::bare(format!("{module}+{offset:#x}"), FrameKind::Unresolved);
                        f.module = Some(module.to_string());
                        f
                    }
                    None => Frame::bare("[unknown]", FrameKind::Unresolved),
                };
                ids.push(self.intern(frame));
            }
            for (n, line) in loc.line.iter().enumerate().rev() {
                let function = *self.functions.get(&line.function_id).ok_or_else(|| {
                    invalid(format!(
                        "location {} refers to function {}, which does not exist",
                        loc.id, line.function_id
                    ))
                })?;
                let inlined = n + 1 < loc.line.len();
                let frame = frame_of(&p.string_table, function, line.line, module, inlined)?;
                ids.push(self.intern(frame));
            }
            if loc.id == 0 || self.locations.insert(loc.id, ids).is_some() {
                return Err(invalid(format!("location id {} is 0 or repeated", loc.id)));
            }
        }
        Ok(())
    }

    /// The samples as stacks (identical ones merged), and the pid label's value.
    fn read_samples(&mut self) -> Result<(Vec<SampledStack>, Option<u32>), PprofReadError> {
        let p = self.p;
        let mut pid = None;
        let mut stacks: Vec<SampledStack> = Vec::with_capacity(p.sample.len());
        let mut stack_ids: HashMap<(Vec<u32>, Option<ThreadRef>), usize> =
            HashMap::with_capacity(p.sample.len());
        for (n, sample) in p.sample.iter().enumerate() {
            if sample.value.len() != p.sample_type.len() {
                return Err(invalid(format!(
                    "sample {n} has {} values for {} sample types",
                    sample.value.len(),
                    p.sample_type.len()
                )));
            }
            let value = |i: usize| -> Result<u64, PprofReadError> {
                let v = sample.value.get(i).copied().unwrap_or(0);
                u64::try_from(v)
                    .map_err(|_| invalid(format!("sample {n} has a negative value {v}")))
            };
            let (samples, period) = (value(0)?, value(1)?);
            let key = self.sample_stack(n, sample, &mut pid)?;
            match stack_ids.get(&key) {
                Some(&i) => {
                    stacks[i].samples = stacks[i].samples.saturating_add(samples);
                    stacks[i].period = stacks[i].period.saturating_add(period);
                }
                None => {
                    stacks.push(SampledStack {
                        frames: key.0.clone(),
                        samples,
                        period,
                        thread: key.1,
                    });
                    stack_ids.insert(key, stacks.len() - 1);
                }
            }
        }
        Ok((stacks, pid))
    }

    /// Sample `n`'s frames, root first: its comm and thread_name labels as Root frames, then
    /// its locations.
    fn sample_stack(
        &mut self,
        n: usize,
        sample: &proto::Sample,
        pid: &mut Option<u32>,
    ) -> Result<(Vec<u32>, Option<ThreadRef>), PprofReadError> {
        let strings = &self.p.string_table;
        let string = |i: i64| string_at(strings, i);
        let (mut process, mut thread) = (None, None);
        let (mut sample_pid, mut tid) = (None, None);
        for l in &sample.label {
            let value = string(l.str)?;
            string(l.num_unit)?;
            match string(l.key)? {
                "comm" if !value.is_empty() => process = Some(value),
                "thread_name" if !value.is_empty() => thread = Some(value),
                "pid" if l.str == 0 => sample_pid = u32::try_from(l.num).ok(),
                "thread_id" if l.str == 0 => tid = u32::try_from(l.num).ok(),
                "uid" if l.str == 0 => {
                    if let (Some(p), Ok(uid)) = (sample_pid, u32::try_from(l.num)) {
                        self.processes.entry(p).or_default().uid.get_or_insert(uid);
                    }
                }
                "cmdline" | "cgroup" if !value.is_empty() => {
                    if let Some(p) = sample_pid {
                        let labels = self.processes.entry(p).or_default();
                        let field = if string(l.key)? == "cmdline" {
                            &mut labels.cmdline
                        } else {
                            &mut labels.cgroup
                        };
                        if field.is_empty() {
                            *field = value.to_string();
                        }
                    }
                }
                _ => {}
            }
        }
        if pid.is_none() {
            *pid = sample_pid;
        }
        let thread_ref = match (sample_pid, tid) {
            (Some(pid), Some(tid)) => Some(ThreadRef { pid, tid }),
            _ => None,
        };
        let mut stack = Vec::with_capacity(sample.location_id.len() + 2);
        for name in [process, thread].into_iter().flatten() {
            let root = Frame::bare(name, FrameKind::Root);
            stack.push(self.intern(root));
        }
        for id in sample.location_id.iter().rev() {
            let loc = self.locations.get(id).ok_or_else(|| {
                invalid(format!(
                    "sample {n} refers to location {id}, which does not exist"
                ))
            })?;
            stack.extend_from_slice(loc);
            if stack.len() > MAX_STACK_FRAMES {
                return Err(invalid(format!(
                    "sample {n} has more than {MAX_STACK_FRAMES} frames"
                )));
            }
        }
        Ok((stack, thread_ref))
    }
}

/// String `i` of the string table.
fn string_at(strings: &[String], i: i64) -> Result<&str, PprofReadError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| strings.get(i))
        .map(String::as_str)
        .ok_or_else(|| invalid(format!("string position {i} out of range")))
}

/// The frame of one location line; see [`read_pprof`] for how the kind is chosen.
fn frame_of(
    strings: &[String],
    function: &proto::Function,
    line: i64,
    module: Option<&str>,
    inlined: bool,
) -> Result<Frame, PprofReadError> {
    let string = |i: i64| string_at(strings, i);
    let mut name = string(function.name)?;
    if name.is_empty() {
        name = string(function.system_name)?;
    }
    if name.is_empty() {
        name = "[unknown]";
    }
    let file = Some(string(function.filename)?).filter(|f| !f.is_empty());
    let kind = if inlined {
        FrameKind::Inlined
    } else if module.is_some_and(|m| m.starts_with("[kernel")) {
        FrameKind::Kernel
    } else if module.is_none() && file.is_some() {
        FrameKind::Python
    } else if module == Some(JIT_MAPPING) {
        if name.starts_with("[jit] ") {
            FrameKind::Unresolved
        } else {
            FrameKind::Jit
        }
    } else if name == "[unknown]"
        || module.is_some_and(|m| {
            name.strip_prefix(m)
                .is_some_and(|rest| rest.starts_with("+0x"))
        })
    {
        FrameKind::Unresolved
    } else if module.is_none() && name.starts_with('[') {
        FrameKind::Marker
    } else {
        FrameKind::Native
    };
    let positive = |n: i64| u32::try_from(n).ok().filter(|&n| n > 0);
    Ok(Frame {
        function: name.to_string(),
        file: file.map(str::to_string),
        line: positive(line),
        decl_line: positive(function.start_line),
        decl_file: if kind == FrameKind::Python {
            file.map(str::to_string)
        } else {
            None
        },
        module: module
            .filter(|&m| !(kind == FrameKind::Kernel && m == KERNEL_MAPPING))
            .map(str::to_string),
        kind,
    })
}
