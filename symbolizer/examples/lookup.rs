//! Resolves file offsets in an ELF file, like `addr2line -f -i -C` but taking file offsets.
//!
//! Usage: `cargo run --release -p sprof-symbolizer --example lookup -- FILE OFFSET...`
//! (offsets in hex, `0x` optional). A separate debug file is searched for under `/`.

use std::path::Path;

use sprof_symbolizer::{ElfModule, Resolved};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: lookup FILE OFFSET...");
        std::process::exit(2);
    };
    let absolute = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone().into());
    let module = match ElfModule::open(Path::new("/"), &absolute.to_string_lossy()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for arg in args {
        let Ok(offset) = u64::from_str_radix(arg.trim_start_matches("0x"), 16) else {
            eprintln!("{arg}: not a hex offset");
            continue;
        };
        match module.lookup(offset) {
            Resolved::Frames(frames) => {
                for f in frames {
                    println!(
                        "{offset:#x}: {}{} at {}:{} (declared {}:{})",
                        if f.inlined { "[inlined] " } else { "" },
                        f.function,
                        f.file.as_deref().unwrap_or("??"),
                        f.line.map_or("?".to_string(), |l| l.to_string()),
                        f.decl_file.as_deref().unwrap_or("??"),
                        f.decl_line.map_or("?".to_string(), |l| l.to_string()),
                    );
                }
            }
            Resolved::Unknown { svma, reason } => {
                println!("{offset:#x}: unknown (svma {svma:x?}): {reason}")
            }
        }
    }
}
