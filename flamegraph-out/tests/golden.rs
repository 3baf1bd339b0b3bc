//! Golden-file tests of the text formats. `SPROFD_BLESS=1 cargo test -p flamegraph-out`
//! rewrites the files under `tests/golden/` instead of comparing; review the diff before
//! keeping it.

mod common;

use std::path::PathBuf;

use flamegraph_out::{Exporter, Folded, StatprofTable};
use sprof_core::SymbolizedProfile;

fn render(exporter: &dyn Exporter, profile: &SymbolizedProfile) -> String {
    let mut out = Vec::new();
    exporter
        .export(profile, &mut out)
        .expect("export to memory");
    String::from_utf8(out).expect("exporters write UTF-8")
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("SPROFD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with SPROFD_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs (SPROFD_BLESS=1 to accept)\n--- expected\n{expected}--- actual\n{actual}---",
            path.display()
        );
    }
}

const BY_FUNCTION: StatprofTable = StatprofTable {
    by_line: false,
    max_rows: None,
};
const BY_LINE: StatprofTable = StatprofTable {
    by_line: true,
    max_rows: None,
};

#[test]
fn folded_mixed() {
    check_golden("mixed.folded", &render(&Folded, &common::mixed()));
}

#[test]
fn table_by_function_mixed() {
    check_golden(
        "mixed.by_function.txt",
        &render(&BY_FUNCTION, &common::mixed()),
    );
}

#[test]
fn table_by_line_mixed() {
    check_golden("mixed.by_line.txt", &render(&BY_LINE, &common::mixed()));
}

#[test]
fn table_top_rows_mixed() {
    let top3 = StatprofTable {
        by_line: false,
        max_rows: Some(3),
    };
    check_golden("mixed.top3.txt", &render(&top3, &common::mixed()));
}

#[test]
fn empty_profile() {
    check_golden("empty.folded", &render(&Folded, &common::empty()));
    check_golden("empty.txt", &render(&BY_FUNCTION, &common::empty()));
}
