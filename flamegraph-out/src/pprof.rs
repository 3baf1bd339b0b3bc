//! pprof: the gzipped `profile.proto` that `go tool pprof`, Parca and Pyroscope read (see
//! formats.md §3), and a reader that turns one back into a [`SymbolizedProfile`].
//!
//! The messages are derived by hand in [`proto`] (the handful of `profile.proto` messages
//! sprofd writes), so no `protoc` or build script is needed.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;
use sprof_core::{
    Frame, FrameInterner, FrameKind, ModuleInfo, ProcessLabels, ProfileMeta, SampledStack,
    SymbolizedProfile, ThreadRef,
};

use crate::{checked_stack, ExportError, Exporter};

/// The `perftools.profiles` messages of `google/pprof` `proto/profile.proto`, field numbers
/// as there. Every `i64` naming a string is a position in
/// [`Profile::string_table`](proto::Profile::string_table).
pub mod proto {
    /// A whole profile.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        /// What each entry of [`Sample::value`] measures.
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Every string of the profile; entry 0 must be `""`.
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        /// When the profile was collected, nanoseconds since the Unix epoch.
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        /// What [`Profile::period`] counts.
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        /// The distance between two samples, in `period_type` units.
        #[prost(int64, tag = "12")]
        pub period: i64,
        /// Free-form text shown by `go tool pprof -comments`.
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    /// A type and its unit, e.g. `samples`/`count` or `cpu`/`nanoseconds`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    /// One stack with its values.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// [`Location::id`]s, **leaf first**.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per [`Profile::sample_type`].
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    /// A sample label: a string (`str`) or a number (`num`, with an optional unit).
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    /// A mapped binary or library.
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    /// A code location: one line, or several when functions were inlined (innermost first,
    /// the last line being the function the others were inlined into).
    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// 0 when unknown.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    /// A source line of a function.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    /// A function.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        /// The mangled name; sprofd writes the same string as `name`.
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// The module (mapping) name of JIT frames: code named by a perf map, in no file.
pub const JIT_MAPPING: &str = "[jit]";

/// The mapping sprofd gives kernel frames that name no module (perf's name for the kernel).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// Largest decompressed profile [`read_pprof`] accepts, in bytes (a guard against gzip bombs).
pub const MAX_PPROF_BYTES: u64 = 1 << 30;

/// Most frames [`read_pprof`] accepts in one stack, inlined frames included (a guard against
/// a small file that expands into enormous stacks).
pub const MAX_STACK_FRAMES: usize = 1 << 16;

/// What the second sample value (and the period) measures: time in nanoseconds, or memory in
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PprofValueType {
    /// `cpu/nanoseconds`: CPU time (`cpu-clock`, Go's CPU profiles, Parca's `process_cpu`).
    #[default]
    Cpu,
    /// `wall/nanoseconds`: wall-clock time, on or off CPU.
    Wall,
    /// `off_cpu/nanoseconds`: time spent blocked.
    OffCpu,
    /// `space/bytes`: new resident memory (`--mode memory`), as Go's heap profiles name bytes.
    Space,
}

impl PprofValueType {
    /// The unit of every time value type.
    pub const UNIT: &'static str = "nanoseconds";

    /// The `ValueType.unit` string: `nanoseconds`, or `bytes` for [`PprofValueType::Space`].
    pub fn unit(self) -> &'static str {
        match self {
            PprofValueType::Space => "bytes",
            _ => Self::UNIT,
        }
    }

    /// The `ValueType.type` string: `cpu`, `wall` or `off_cpu`.
    pub fn type_name(self) -> &'static str {
        match self {
            PprofValueType::Cpu => "cpu",
            PprofValueType::Wall => "wall",
            PprofValueType::OffCpu => "off_cpu",
            PprofValueType::Space => "space",
        }
    }
}

/// The pprof exporter: a gzipped `perftools.profiles.Profile`.
///
/// * `sample_type` is `[samples/count, <value_type>/nanoseconds]` and each sample's values are
///   `[stack.samples, stack.period]`; when the profile kept no periods at all (every one 0)
///   but has a frequency, the second value is `samples × period` instead, as Go does.
///   `period_type` is the second type, `period` is `1e9 / frequency` (rounded; 0 when the
///   frequency is unknown), `duration_nanos` comes from the metadata and `time_nanos` is
///   [`Pprof::time_nanos`] or the time of export. Stacks with neither samples nor period are
///   left out.
/// * Leading root frames become sample labels, not locations: the first is `comm` (the
///   process), a second one `thread_name`; `pid` is a numeric label when the pid is known.
///   Further root frames are ordinary locations.
/// * Every other frame is one `Line` of a `Location`, and locations are listed leaf first.
///   Inlined frames are **folded**: an inlined frame joins the location of the frame toward
///   the root it was inlined into, so one location holds a native frame and the chain
///   inlined into it, innermost line first, the native function last (an inlined frame with
///   no such frame before it gets a location of its own).
/// * A function is its name (also the `system_name`), file (the frame's `file`, else its
///   `decl_file`) and `start_line` (`decl_line`); a line number of 0 means unknown.
/// * One mapping per distinct module name, in order of first use: the name is its filename,
///   it has no addresses (sprofd writes none: locations are symbolized already) and says
///   functions, file names, line numbers and inline frames are present. Kernel frames with no
///   module go to [`KERNEL_MAPPING`]; Python frames (whatever their module) and frames with
///   no module have mapping 0, as pprof expects of interpreted code. Markers and unresolved
///   frames are functions named as they are.
/// * `comment` holds the profile's target and its notes.
///
/// Ids and strings are numbered in order of first use while walking the stacks in order, so
/// the same profile gives the same bytes (given a fixed [`Pprof::time_nanos`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pprof {
    /// What the second sample value measures; `None`: what the profile measures
    /// (`cpu`, `wall` or `off_cpu`, from [`sprof_core::Measure`]).
    pub value_type: Option<PprofValueType>,
    /// `Profile.time_nanos`; `None` for the time of export.
    pub time_nanos: Option<i64>,
}

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
/// diff` needs; the inverse of [`Pprof`] as far as folded stacks go.
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
