//! sprofd's profile history on disk.
//!
//! The daemon aggregates every window (ten seconds by default) in memory, symbolizes it once
//! and hands it here as one self-contained gzipped pprof file: `windows/START-END.pb.gz`,
//! times in unix milliseconds. A file is written to a temporary name, synced and renamed,
//! so a crash leaves either the whole window or nothing. The store keeps an index of the
//! windows in memory (built by listing the directory at start, where a file that does not
//! decompress, or is not a regular file of the daemon's uid, is moved to `corrupt/` with a
//! warning) and prunes the oldest windows by age and total size after every write.
//!
//! The data directory is trusted only if the daemon's uid owns it (and `windows/`,
//! `corrupt/`), no other user's symlink leads to it, and no directory above it is writable by
//! every user without the sticky bit; it is opened once and used through its descriptors.
//!
//! This crate owns the layout of the data directory, the index and retention, and the
//! parsing of the times, durations and sizes users give for them ([`parse_time`],
//! [`parse_duration`], [`parse_size`]). Reading a window back is [`WindowStore::load`]
//! (bounded file and decompressed sizes, then [`flamegraph_out::read_pprof`]).

mod safe_fs;
mod store;
mod units;

pub use store::{
    read_window, Retention, StoreError, StoredWindow, WindowStore, WriteReport, MAX_FUTURE,
    MAX_WINDOW_DECODED, MAX_WINDOW_FILE,
};
pub use units::{parse_duration, parse_size, parse_time, unix_millis, UnitError};
