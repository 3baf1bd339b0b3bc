//! A failing output (a full disk) is an `Err`, never a panic, for every exporter, whether it
//! fails at once, mid-way, or when the last buffered bytes go out.

mod common;

use common::{FullDisk, ENOSPC};
use flamegraph_out::{ExportError, Exporter, Folded, OutputFormat, StatprofTable, Svg};
use sprof_core::SymbolizedProfile;

fn full_size(exporter: &dyn Exporter, profile: &SymbolizedProfile) -> usize {
    let mut out = Vec::new();
    exporter.export(profile, &mut out).unwrap();
    out.len()
}

fn assert_enospc(exporter: &dyn Exporter, what: &str, profile: &SymbolizedProfile) {
    let size = full_size(exporter, profile);
    assert!(size > 0, "{what}: nothing written");
    for capacity in [0, 1, size / 3, size / 2, size - 1] {
        let mut disk = FullDisk::new(capacity);
        match exporter.export(profile, &mut disk) {
            Err(ExportError::Io(e)) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(ENOSPC),
                    "{what} at {capacity}/{size}: {e}"
                )
            }
            other => {
                panic!("{what} at {capacity}/{size} bytes: expected an I/O error, got {other:?}")
            }
        }
    }
    let mut disk = FullDisk::new(size);
    exporter
        .export(profile, &mut disk)
        .unwrap_or_else(|e| panic!("{what} with exactly enough room: {e}"));
}

#[test]
fn full_disk_is_an_error_for_every_exporter() {
    let mixed = common::mixed();
    assert_enospc(&Folded, "folded", &mixed);
    assert_enospc(&Svg::default(), "svg", &mixed);
    assert_enospc(&StatprofTable::default(), "table", &mixed);
    assert_enospc(
        &StatprofTable {
            by_line: true,
            max_rows: Some(3),
        },
        "table by line",
        &mixed,
    );

    let empty = common::empty();
    assert_enospc(&Svg::default(), "empty svg", &empty);
    assert_enospc(&StatprofTable::default(), "empty table", &empty);
}

#[test]
fn the_cli_formats_report_errors_too() {
    for format in [OutputFormat::Svg, OutputFormat::Folded, OutputFormat::Table] {
        let mut disk = FullDisk::new(0);
        let result = format.exporter().export(&common::mixed(), &mut disk);
        assert!(
            matches!(result, Err(ExportError::Io(_))),
            "{format:?}: {result:?}"
        );
    }
}
