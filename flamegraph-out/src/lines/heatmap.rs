//! The heatmap page (`.heatmap.html`): the profiled source files, every line coloured by its
//! samples, in one self-contained HTML file (no external script, style or font).
//!
//! Files are grouped as the program's own code, third-party code (site-packages, shared
//! libraries other than the C and C++ runtimes) and the standard library (CPython's `Lib/`
//! and interpreter, libc, the compilers' headers), each group and file with its share of
//! the samples. A toggle switches the colours and figures between self and total; hovering
//! a line shows its figures (its `title`); clicking one lists the callers of its function
//! and the functions it calls, with their shares; the search box finds functions by name
//! and `file.py:42` places. `#file.py:42` in the URL opens there.
//!
//! The figures are computed here, once per sample for each file and line (recursion
//! counts once), and embedded as JSON; each row carries them as `data-total`/`data-self`
//! attributes, which is what tests read back.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use serde::Serialize;
use sprof_core::{Frame, FrameKind, SymbolizedProfile};

use super::{line_profile, LineProfile, SourceFiles, SourceText};
use crate::{checked_stack, printable, ExportError, Exporter};

/// Most source text embedded, in bytes; files past it are shown by their sampled lines only.
const MAX_TEXT_BYTES: usize = 32 << 20;

/// The heatmap exporter.
#[derive(Debug, Clone, Default)]
pub struct Heatmap {
    pub sources: Arc<SourceFiles>,
}

#[derive(Serialize)]
struct Data<'a> {
    title: String,
    total: u64,
    unit: &'static str,
    groups: Vec<Group>,
    files: Vec<FileData<'a>>,
    functions: Vec<FunctionData>,
}

#[derive(Serialize)]
struct Group {
    name: &'static str,
    total: u64,
    #[serde(rename = "self")]
    self_: u64,
}

#[derive(Serialize)]
struct FileData<'a> {
    path: String,
    group: usize,
    total: u64,
    #[serde(rename = "self")]
    self_: u64,
    /// Why the text is not shown, if it is not.
    note: Option<String>,
    text: Option<Vec<Cow<'a, str>>>,
    /// line → [total, self]
    hits: BTreeMap<u32, [u64; 2]>,
    /// line → [[function index, weight]] of callers and callees.
    callers: BTreeMap<u32, Vec<[u64; 2]>>,
    callees: BTreeMap<u32, Vec<[u64; 2]>>,
}

#[derive(Serialize)]
struct FunctionData {
    name: String,
    file: usize,
    line: u32,
    total: u64,
    #[serde(rename = "self")]
    self_: u64,
}

const GROUPS: [&str; 3] = ["Your code", "Third-party", "Standard library"];

/// Which group a file belongs to, by its path and the module of its code.
fn group_of(path: &str, module: Option<&str>) -> usize {
    let third = [
        "site-packages/",
        "dist-packages/",
        "/.cargo/registry/",
        "node_modules/",
    ];
    if third.iter().any(|p| path.contains(p)) {
        return 1;
    }
    let std_paths = [
        "/lib/python",
        "<frozen ",
        "/usr/include/",
        "/rustc/",
        "/usr/lib/gcc/",
        "/Python/",
        "/Objects/",
        "/Modules/",
        "/Include/",
    ];
    if std_paths.iter().any(|p| path.contains(p)) || path.starts_with("./") {
        return 2;
    }
    match module {
        Some(m)
            if [
                "libc.so",
                "libm.so",
                "ld-linux",
                "libstdc++",
                "libpython",
                "libgcc",
            ]
            .iter()
            .any(|p| m.starts_with(p)) =>
        {
            2
        }
        Some(m) if m.starts_with("lib") && m.contains(".so") => 1,
        _ => 0,
    }
}

/// The frame's (file, line) when it is a function frame with both.
fn place(frame: &Frame) -> Option<(&str, u32)> {
    match frame.kind {
        FrameKind::Native | FrameKind::Inlined | FrameKind::Python | FrameKind::Kernel => {
            Some((frame.file.as_deref()?, frame.line?))
        }
        _ => None,
    }
}

impl Exporter for Heatmap {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let data = self.data(profile)?;
        let json = serde_json::to_string(&data).map_err(std::io::Error::from)?;
        // `<` never occurs in JSON outside strings, where `\u003c` means the same: the page's
        // text can then never close the script element.
        let json = json.replace('<', "\\u003c");
        let mut w = BufWriter::new(out);
        let (head, tail) = PAGE.split_once("__DATA__").unwrap_or((PAGE, ""));
        w.write_all(head.as_bytes())?;
        w.write_all(json.as_bytes())?;
        w.write_all(tail.as_bytes())?;
        w.flush()?;
        Ok(())
    }
}

/// Samples per file and line, once per sample each (recursion counts once).
struct Places<'p> {
    /// Each file's path and the module of its first frame.
    paths: Vec<(&'p str, Option<&'p str>)>,
    ids: HashMap<&'p str, usize>,
    groups: Vec<usize>,
    /// Per file: line → [total, self].
    hits: Vec<BTreeMap<u32, [u64; 2]>>,
    /// Per file and per group: [total, self].
    files: Vec<[u64; 2]>,
    group_counts: [[u64; 2]; 3],
    total: u64,
}

fn count_places(profile: &SymbolizedProfile) -> Result<Places<'_>, ExportError> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut paths: Vec<(&str, Option<&str>)> = Vec::new();
    let frame_place: Vec<Option<(usize, u32)>> = profile
        .frames
        .iter()
        .map(|f| {
            let (file, line) = place(f)?;
            let next = paths.len();
            let id = *ids.entry(file).or_insert_with(|| {
                paths.push((file, f.module.as_deref()));
                next
            });
            Some((id, line))
        })
        .collect();
    let groups: Vec<usize> = paths.iter().map(|(p, m)| group_of(p, *m)).collect();
    let mut p = Places {
        hits: vec![BTreeMap::new(); paths.len()],
        files: vec![[0; 2]; paths.len()],
        paths,
        ids,
        groups,
        group_counts: [[0; 2]; 3],
        total: 0,
    };
    let (mut seen, mut seen_files, mut seen_groups) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    for i in 0..profile.stacks.len() {
        let stack = checked_stack(profile, i)?;
        let w = profile.weight(stack);
        if w == 0 {
            continue;
        }
        p.total += w;
        seen.clear();
        seen_files.clear();
        seen_groups.clear();
        for &f in &stack.frames {
            let Some((file, line)) = frame_place[f as usize] else {
                continue;
            };
            if seen.insert((file, line)) {
                p.hits[file].entry(line).or_default()[0] += w;
            }
            if seen_files.insert(file) {
                p.files[file][0] += w;
            }
            if seen_groups.insert(p.groups[file]) {
                p.group_counts[p.groups[file]][0] += w;
            }
        }
        let leaf = stack.frames.last().and_then(|&f| frame_place[f as usize]);
        if let Some((file, line)) = leaf {
            p.hits[file].entry(line).or_default()[1] += w;
            p.files[file][1] += w;
            p.group_counts[p.groups[file]][1] += w;
        }
    }
    Ok(p)
}

/// Per file and line: [[function, weight]] of the callers of the line's functions, and of
/// the functions the line calls (function indices into `lp.functions`).
type Edges = Vec<BTreeMap<u32, Vec<[u64; 2]>>>;

fn call_edges(lp: &LineProfile, ids: &HashMap<&str, usize>, files: usize) -> (Edges, Edges) {
    let mut callers: Edges = vec![BTreeMap::new(); files];
    let mut callees: Edges = vec![BTreeMap::new(); files];
    for f in &lp.functions {
        let Some(&file) = ids.get(f.file.as_str()) else {
            continue;
        };
        let mut by_caller: BTreeMap<usize, u64> = BTreeMap::new();
        for (&(caller, _), &w) in &f.callers {
            *by_caller.entry(caller).or_default() += w;
        }
        for (&line, lc) in &f.lines {
            let entry = callers[file].entry(line).or_default();
            entry.extend(by_caller.iter().map(|(&c, &w)| [c as u64, w]));
            let entry = callees[file].entry(line).or_default();
            entry.extend(lc.callees.iter().map(|(&c, &w)| [c as u64, w]));
        }
    }
    (callers, callees)
}

impl Heatmap {
    /// The text of `path` as the page shows it, or why it does not; `budget` is what is left
    /// of [`MAX_TEXT_BYTES`].
    fn text_of(
        &self,
        path: &str,
        budget: &mut usize,
    ) -> (Option<String>, Option<Vec<Cow<'_, str>>>) {
        match self.sources.get(path) {
            Some(SourceText::Lines(lines)) => {
                let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
                if bytes <= *budget {
                    *budget -= bytes;
                    (None, Some(lines.iter().map(|l| printable(l)).collect()))
                } else {
                    (
                        Some("text left out: the page is large enough".to_string()),
                        None,
                    )
                }
            }
            Some(SourceText::Unavailable(why)) => (Some(printable(why).into_owned()), None),
            None => (Some("not read".to_string()), None),
        }
    }

    fn data<'s>(&'s self, profile: &SymbolizedProfile) -> Result<Data<'s>, ExportError> {
        let mut places = count_places(profile)?;
        let lp = line_profile(profile)?;
        let functions: Vec<FunctionData> = lp
            .functions
            .iter()
            .filter_map(|f| {
                Some(FunctionData {
                    name: printable(&f.function).into_owned(),
                    file: *places.ids.get(f.file.as_str())?,
                    line: f
                        .decl_line
                        .into_iter()
                        .chain(f.lines.keys().next().copied())
                        .min()
                        .unwrap_or(0),
                    total: f.counts.total,
                    self_: f.counts.self_,
                })
            })
            .collect();
        let (mut callers, mut callees) = call_edges(&lp, &places.ids, places.paths.len());
        let mut budget = MAX_TEXT_BYTES;
        let mut files: Vec<FileData<'s>> = Vec::with_capacity(places.paths.len());
        for (id, (path, _)) in places.paths.iter().enumerate() {
            let (note, text) = self.text_of(path, &mut budget);
            files.push(FileData {
                path: printable(path).into_owned(),
                group: places.groups[id],
                total: places.files[id][0],
                self_: places.files[id][1],
                note,
                text,
                hits: std::mem::take(&mut places.hits[id]),
                callers: std::mem::take(&mut callers[id]),
                callees: std::mem::take(&mut callees[id]),
            });
        }
        let groups = GROUPS
            .iter()
            .zip(places.group_counts)
            .map(|(name, [total, self_])| Group { name, total, self_ })
            .collect();
        let meta = &profile.meta;
        let title = if meta.target.is_empty() {
            "sprofd heatmap".to_string()
        } else {
            format!("sprofd heatmap: {}", printable(&meta.target))
        };
        Ok(Data {
            title,
            total: places.total,
            unit: match meta.measure.unit() {
                sprof_core::Unit::Samples => "samples",
                sprof_core::Unit::Nanoseconds => "ns",
                sprof_core::Unit::Bytes => "bytes",
            },
            groups,
            files,
            functions,
        })
    }
}

/// The page: styles and script inline; `__DATA__` is replaced by the profile's JSON.
const PAGE: &str = include_str!("heatmap.html");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lines::tests::sample;

    fn page(sources: SourceFiles) -> String {
        let mut out = Vec::new();
        Heatmap {
            sources: Arc::new(sources),
        }
        .export(&sample(), &mut out)
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    fn data_of(page: &str) -> serde_json::Value {
        let start = page.find("id=\"data\">").unwrap() + "id=\"data\">".len();
        let end = page[start..].find("</script>").unwrap() + start;
        serde_json::from_str(&page[start..end]).unwrap()
    }

    #[test]
    fn figures_per_line_once_per_sample_and_no_external_resources() {
        let mut files = SourceFiles::new();
        files.insert(
            "/src/app.py",
            SourceText::Lines(vec!["</script><script>alert(1)</script>".into()]),
        );
        let p = page(files);
        for external in ["src=\"http", "href=\"http", "@import", "url(http", "<link"] {
            assert!(!p.contains(external), "{external}");
        }
        assert!(!p.contains("<script>alert"), "source text escaped");
        let d = data_of(&p);
        assert_eq!(d["total"], 105);
        let f = &d["files"][0];
        assert_eq!(f["path"], "/src/app.py");
        assert_eq!(f["group"], 0);
        assert_eq!(f["hits"]["3"], serde_json::json!([60, 0]));
        assert_eq!(f["hits"]["12"], serde_json::json!([30, 30]));
        // rec recursing on line 30 counts once per sample.
        assert_eq!(f["hits"]["30"], serde_json::json!([5, 5]));
        assert_eq!(f["total"], 105);
        // Line 13 of work calls leaf (function 2), 20 samples.
        assert_eq!(f["callees"]["13"], serde_json::json!([[2, 20]]));
        // work (lines 11-13) is called by main (function 0): 60 + 20.
        assert_eq!(f["callers"]["11"], serde_json::json!([[0, 80]]));
        assert_eq!(d["groups"][0]["total"], 105);
        assert_eq!(d["functions"][1]["name"], "work");
        assert_eq!(d["functions"][1]["line"], 10);
    }

    #[test]
    fn groups_by_path_and_module() {
        assert_eq!(group_of("/app/main.py", None), 0);
        assert_eq!(group_of("/usr/lib/python3.12/json/decoder.py", None), 2);
        assert_eq!(
            group_of("/venv/lib/python3.12/site-packages/numpy/x.py", None),
            1
        );
        assert_eq!(group_of("./csu/../csu/libc-start.c", Some("libc.so.6")), 2);
        assert_eq!(group_of("/build/zlib/deflate.c", Some("libz.so.1")), 1);
        assert_eq!(group_of("/src/x.c", Some("x")), 0);
    }

    #[test]
    fn unavailable_sources_carry_their_reason() {
        let mut files = SourceFiles::new();
        files.insert("/src/app.py", SourceText::Unavailable("missing".into()));
        let d = data_of(&page(files));
        assert_eq!(d["files"][0]["note"], "missing");
        assert!(d["files"][0]["text"].is_null());
    }
}
