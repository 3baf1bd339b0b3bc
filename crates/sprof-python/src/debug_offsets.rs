//! The `_Py_DebugOffsets` table a CPython 3.13+ target publishes at the start of `_PyRuntime`,
//! read by field name.
//!
//! Owns the declaration order of that struct per minor version (the only hand-written part:
//! every offset comes from the target) and its validation: the cookie, the version against the
//! binary's, the default (not free-threaded) build, and each used offset against the size of
//! the struct it belongs to. `layout.rs` turns a validated table into a [`crate::layout::Layout`].

/// The `_Py_DebugOffsets` declaration of one minor version: its sub-structs in order, each with
/// its `uint64_t` fields in order (`Include/internal/pycore_debug_offsets.h` of 3.14 and 3.15,
/// `pycore_runtime.h` of 3.13). Only the order is hand-written; every value is read from the
/// target. A sub-struct whose first field is `size` has its other offsets checked against it.
type Schema = &'static [(&'static str, &'static [&'static str])];

const RUNTIME: (&str, &[&str]) = (
    "runtime_state",
    &["size", "finalizing", "interpreters_head"],
);
const INTERP_313: (&str, &[&str]) = (
    "interpreter_state",
    &[
        "size",
        "id",
        "next",
        "threads_head",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
    ],
);
const INTERP_314: (&str, &[&str]) = (
    "interpreter_state",
    &[
        "size",
        "id",
        "next",
        "threads_head",
        "threads_main",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
        "code_object_generation",
        "tlbc_generation",
    ],
);
const TSTATE_313: (&str, &[&str]) = (
    "thread_state",
    &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
    ],
);
const TSTATE_315: (&str, &[&str]) = (
    "thread_state",
    &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "base_frame",
        "last_profiled_frame",
        "last_profiled_frame_seq",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
        "holds_gil",
        "gil_requested",
        "current_exception",
        "exc_state",
    ],
);
const FRAME_313: (&str, &[&str]) = (
    "interpreter_frame",
    &[
        "size",
        "previous",
        "executable",
        "instr_ptr",
        "localsplus",
        "owner",
    ],
);
const FRAME_314: (&str, &[&str]) = (
    "interpreter_frame",
    &[
        "size",
        "previous",
        "executable",
        "instr_ptr",
        "localsplus",
        "owner",
        "stackpointer",
        "tlbc_index",
    ],
);
const CODE_313: (&str, &[&str]) = (
    "code_object",
    &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
    ],
);
const CODE_314: (&str, &[&str]) = (
    "code_object",
    &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
        "co_tlbc",
    ],
);
const PYOBJECT: (&str, &[&str]) = ("pyobject", &["size", "ob_type"]);
const TYPE_313: (&str, &[&str]) = ("type_object", &["size", "tp_name", "tp_repr", "tp_flags"]);
const TYPE_315: (&str, &[&str]) = (
    "type_object",
    &[
        "size",
        "tp_name",
        "tp_repr",
        "tp_flags",
        "tp_basicsize",
        "tp_dictoffset",
    ],
);
const TUPLE: (&str, &[&str]) = ("tuple_object", &["size", "ob_item", "ob_size"]);
const LIST: (&str, &[&str]) = ("list_object", &["size", "ob_item", "ob_size"]);
const SET: (&str, &[&str]) = ("set_object", &["size", "used", "table", "mask"]);
const DICT: (&str, &[&str]) = ("dict_object", &["size", "ma_keys", "ma_values"]);
const FLOAT: (&str, &[&str]) = ("float_object", &["size", "ob_fval"]);
const LONG: (&str, &[&str]) = ("long_object", &["size", "lv_tag", "ob_digit"]);
const BYTES: (&str, &[&str]) = ("bytes_object", &["size", "ob_size", "ob_sval"]);
const UNICODE_313: (&str, &[&str]) = (
    "unicode_object",
    &["size", "state", "length", "asciiobject_size"],
);
const UNICODE_315: (&str, &[&str]) = (
    "unicode_object",
    &[
        "size",
        "state",
        "length",
        "asciiobject_size",
        "compactunicodeobject_size",
    ],
);
const GC_313: (&str, &[&str]) = ("gc", &["size", "collecting"]);
const GC_315: (&str, &[&str]) = (
    "gc",
    &[
        "size",
        "collecting",
        "frame",
        "generation_stats_size",
        "generation_stats",
    ],
);
const GEN: (&str, &[&str]) = (
    "gen_object",
    &["size", "gi_name", "gi_iframe", "gi_frame_state"],
);
const LLIST: (&str, &[&str]) = ("llist_node", &["next", "prev"]);
const DEBUGGER: (&str, &[&str]) = (
    "debugger_support",
    &[
        "eval_breaker",
        "remote_debugger_support",
        "remote_debugging_enabled",
        "debugger_pending_call",
        "debugger_script_path",
        "debugger_script_path_size",
    ],
);
const HEADER: (&str, &[&str]) = ("", &["version", "free_threaded"]);

const SCHEMA_313: Schema = &[
    HEADER,
    RUNTIME,
    INTERP_313,
    TSTATE_313,
    FRAME_313,
    CODE_313,
    PYOBJECT,
    TYPE_313,
    TUPLE,
    LIST,
    DICT,
    FLOAT,
    LONG,
    BYTES,
    UNICODE_313,
    GC_313,
];
const SCHEMA_314: Schema = &[
    HEADER,
    RUNTIME,
    INTERP_314,
    TSTATE_313,
    FRAME_314,
    CODE_314,
    PYOBJECT,
    TYPE_313,
    TUPLE,
    LIST,
    SET,
    DICT,
    FLOAT,
    LONG,
    BYTES,
    UNICODE_313,
    GC_313,
    GEN,
    LLIST,
    DEBUGGER,
];
const SCHEMA_315: Schema = &[
    HEADER,
    RUNTIME,
    INTERP_314,
    TSTATE_315,
    ("err_stackitem", &["exc_value"]),
    FRAME_314,
    CODE_314,
    PYOBJECT,
    TYPE_315,
    ("heap_type_object", &["size", "ht_cached_keys"]),
    TUPLE,
    LIST,
    SET,
    DICT,
    FLOAT,
    LONG,
    BYTES,
    UNICODE_315,
    GC_315,
    GEN,
    LLIST,
    DEBUGGER,
];

const COOKIE: &[u8; 8] = b"xdebugpy";

/// Bytes to read at `&_PyRuntime`: the cookie and the longest known table (3.15's 110 fields).
pub const MAX_LEN: usize = 8 + 110 * 8;

fn schema(minor: u8) -> Option<Schema> {
    match minor {
        13 => Some(SCHEMA_313),
        14 => Some(SCHEMA_314),
        15 => Some(SCHEMA_315),
        _ => None,
    }
}

/// The largest plausible struct size: the runtime and interpreter states are large (hundreds
/// of KiB on 3.14), every other struct is small.
fn max_size(group: &str) -> u64 {
    match group {
        "runtime_state" | "interpreter_state" => 1 << 22,
        _ => 1 << 16,
    }
}

/// A validated table.
#[derive(Clone, Debug)]
pub struct DebugTable {
    pub minor: u8,
    schema: Schema,
    values: Vec<u64>,
}

impl DebugTable {
    /// Parses `raw` (read from `&_PyRuntime`); `expect_minor` comes from `Py_Version` or the
    /// file name and must agree with the table's own version.
    pub fn parse(raw: &[u8], expect_minor: u8) -> Result<DebugTable, String> {
        if raw.len() < 24 || &raw[..8] != COOKIE {
            return Err("_Py_DebugOffsets cookie missing".into());
        }
        let word = |i: usize| {
            raw.get(8 + 8 * i..16 + 8 * i)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let version = word(0).unwrap_or(0);
        let (major, minor) = ((version >> 24) & 0xff, ((version >> 16) & 0xff) as u8);
        if major != 3 || minor != expect_minor {
            return Err(format!(
                "_Py_DebugOffsets says {major}.{minor}, the binary says 3.{expect_minor}"
            ));
        }
        let schema = schema(minor).ok_or(format!("no _Py_DebugOffsets parser for 3.{minor}"))?;
        if word(1) != Some(0) {
            return Err("free-threaded build".into());
        }
        let count: usize = schema.iter().map(|(_, fields)| fields.len()).sum();
        let values = (0..count)
            .map(word)
            .collect::<Option<Vec<u64>>>()
            .ok_or("_Py_DebugOffsets truncated")?;
        let table = DebugTable {
            minor,
            schema,
            values,
        };
        for (group, fields) in schema {
            if fields.first() == Some(&"size") {
                let size = table.value(group, "size")?;
                if size == 0 || size > max_size(group) {
                    return Err(format!("_Py_DebugOffsets: implausible {group} size {size}"));
                }
            }
        }
        Ok(table)
    }

    /// The raw value of `group.field` (an offset, a size or a flag).
    pub fn value(&self, group: &str, field: &str) -> Result<u64, String> {
        let mut i = 0;
        for (g, fields) in self.schema {
            if *g == group {
                if let Some(at) = fields.iter().position(|f| *f == field) {
                    return Ok(self.values[i + at]);
                }
                break;
            }
            i += fields.len();
        }
        Err(format!(
            "_Py_DebugOffsets of 3.{} has no {group}.{field}",
            self.minor
        ))
    }

    /// `group.field` as an offset into `group`: checked to lie inside the struct.
    pub fn offset(&self, group: &str, field: &str) -> Result<u64, String> {
        let off = self.value(group, field)?;
        let size = self.value(group, "size")?;
        if off >= size {
            return Err(format!(
                "_Py_DebugOffsets: {group}.{field} = {off} outside the struct ({size} bytes)"
            ));
        }
        Ok(off)
    }

    /// Like [`DebugTable::offset`], `None` when this version's table lacks the field.
    pub fn offset_opt(&self, group: &str, field: &str) -> Result<Option<u64>, String> {
        if self.value(group, field).is_err() {
            return Ok(None);
        }
        self.offset(group, field).map(Some)
    }
}
