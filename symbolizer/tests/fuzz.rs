//! Mutated ELF files (section headers, symbol tables, DWARF, compressed sections, notes)
//! neither panic nor hang the symbolizer: parsing and lookups, DWARF included, stay bounded.
//! The red-team review's 13 hand-made malformed variants, generalized.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sprof_symbolizer::ElfModule;
use sprofd_tests::fuzz;

fn compile(out: &Path, flags: &[&str]) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inline_fixture.c");
    let st = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(st.success(), "compiling the fixture");
    std::fs::read(out).expect("read the fixture")
}

#[test]
fn mutated_elf_files_are_parsed_and_looked_up_without_panics() {
    let dir = std::env::temp_dir().join(format!("sprof-fuzz-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = vec![
        compile(&dir.join("plain"), &["-O2", "-g"]),
        compile(&dir.join("zlib"), &["-O2", "-g", "-gz=zlib"]),
        compile(&dir.join("stripped"), &["-O2", "-s"]),
    ];
    std::fs::remove_dir_all(&dir).unwrap();
    fuzz::run(
        "elf",
        &seeds,
        fuzz::iterations(1500),
        Duration::from_secs(2),
        |input| {
            let Ok(module) = ElfModule::parse("fuzzed", input.to_vec()) else {
                return;
            };
            // Offsets across the whole file: every segment, DWARF built on the first one.
            let step = (input.len() / 24).max(1);
            for offset in (0..input.len()).step_by(step) {
                let _ = module.lookup(offset as u64);
            }
            let _ = module.refusals();
        },
    );
}
