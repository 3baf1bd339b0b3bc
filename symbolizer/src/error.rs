//! The crate's one error type: what can go wrong for a whole module (never for one address).

use std::path::PathBuf;

/// A per-module failure: the file could not be read or is not a usable ELF file.
///
/// Failures for single addresses are not errors; they are [`crate::Resolved::Unknown`].
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// The bytes are not an ELF file (another object format, or garbage).
    #[error("{name}: not an ELF file ({detail})")]
    NotElf { name: String, detail: String },
    /// The ELF headers claim more than the bytes hold, or are otherwise inconsistent.
    #[error("{name}: malformed ELF file: {detail}")]
    Malformed { name: String, detail: String },
    /// A debug file was offered whose build-id differs from the binary's.
    #[error("{name}: debug file build-id {found} does not match the binary's {expected}")]
    BuildIdMismatch {
        name: String,
        expected: String,
        found: String,
    },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
