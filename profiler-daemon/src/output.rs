//! Output files: checked before sampling starts, written atomically at the end.
//!
//! Each output gets a temporary file next to it when the session starts, so a missing or
//! unwritable directory, an output path that is a directory and an existing file that is not
//! writable are errors before any sampling. At the end the exporter writes into it, it is
//! synced and renamed into place: an interrupted or failed write never leaves a half-written
//! profile under the final name. Special files (`/dev/stdout`, `/dev/full`) are written
//! directly. One output failing does not stop the others.
//!
//! Modes: `record`, `attach` and `diff` create their outputs 0644 (less the umask), as any
//! tool writing a file the user asked for; `sprofd report` creates its outputs 0600
//! ([`prepare_private`]), since it reads a store kept 0600 (every command line and stack of
//! the host) and must not make it world-readable.
//!
//! Temporary files are `.NAME.sprofd-PID-N.tmp`. A sprofd killed before its rename (SIGKILL, a
//! stack overflow) cannot remove its own; the next `prepare` of the same output removes those
//! whose PID no longer runs (and that are regular files of the same user), so at most one
//! aborted run's leftovers exist per output.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use flamegraph_out::{ExportOptions, OutputFormat};
use sprof_core::SymbolizedProfile;

use crate::config::{OutputSpec, SessionConfig};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{}: unknown output format (use .svg, .timeline.svg, .folded, .txt, .lines.txt, .heatmap.html, .pb.gz, .pprof or .speedscope.json)", .0.display())]
    UnknownExtension(PathBuf),
    #[error("{}: is a directory; name a file to write", .0.display())]
    IsDirectory(PathBuf),
    #[error("{}: directory {} does not exist", .path.display(), .dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("{}: cannot write there: {source}", .path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl OutputSpec {
    pub fn from_path(path: PathBuf) -> Result<OutputSpec, OutputError> {
        match OutputFormat::from_path(&path) {
            Some(format) => Ok(OutputSpec { path, format }),
            None => Err(OutputError::UnknownExtension(path)),
        }
    }
}

/// An output whose destination has been checked and reserved.
pub struct PreparedOutput {
    pub spec: OutputSpec,
    file: File,
    /// The temporary file to rename into place, or `None` when writing directly.
    temp: Option<PathBuf>,
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per reservation: the final output keeps its reservation while dumps write
    // through temporary files of their own.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.sprofd-{}-{n}.tmp", std::process::id()))
}

/// Reserves an output, 0644: creates its temporary file (or opens a special file).
pub fn prepare(spec: OutputSpec) -> Result<PreparedOutput, OutputError> {
    prepare_with_mode(spec, 0o644)
}

/// Reserves an output that only its owner may read (0600): `sprofd report`'s.
pub fn prepare_private(spec: OutputSpec) -> Result<PreparedOutput, OutputError> {
    prepare_with_mode(spec, 0o600)
}

fn prepare_with_mode(spec: OutputSpec, mode: u32) -> Result<PreparedOutput, OutputError> {
    let path = spec.path.clone();
    // `dir.svg/` names a directory whether or not it exists; the rename at the end would fail.
    if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Err(OutputError::IsDirectory(path));
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        let t = meta.file_type();
        if t.is_dir() {
            return Err(OutputError::IsDirectory(path));
        }
        if t.is_char_device() || t.is_fifo() || t.is_socket() {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| OutputError::NotWritable {
                    path: path.clone(),
                    source,
                })?;
            return Ok(PreparedOutput {
                spec,
                file,
                temp: None,
            });
        }
        // An existing file is replaced by the rename, which its own mode does not forbid; a
        // file the user may not write is refused all the same, as a shell's `>` would.
        if let Err(source) = writable(&path) {
            return Err(OutputError::NotWritable { path, source });
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(OutputError::NoDirectory { path, dir });
    }
    remove_stale_temps(&dir, &path);
    let temp = temp_name(&path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .map_err(|source| OutputError::NotWritable {
            path: path.clone(),
            source,
        })?;
    Ok(PreparedOutput {
        spec,
        file,
        temp: Some(temp),
    })
}

/// `access(path, W_OK)` with the effective ids (those the write will use).
fn writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `.NAME.sprofd-PID-N.tmp` files of `path` left by sprofd processes that no longer
/// run: regular files of this user only (never through a symlink), and never those of a PID
/// that exists (it may be a sprofd writing the same output right now).
fn remove_stale_temps(dir: &Path, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Some(name) = path.file_name() else { return };
    let prefix = format!(".{}.sprofd-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('-'))
            .filter(|(_, n)| n.parse::<u32>().is_ok())
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let ours = std::fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == euid);
        if gone && ours {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// An error from writing an output's content.
pub type ContentError = Box<dyn std::error::Error + Send + Sync>;

impl PreparedOutput {
    /// Writes the profile and moves the file into place. On failure the temporary file is
    /// removed and the error returned; the caller reports it and goes on.
    pub fn write(
        self,
        profile: &SymbolizedProfile,
        options: &ExportOptions,
        owner: Option<(u32, u32)>,
    ) -> Result<(), OutputError> {
        let options = ExportOptions {
            table_rows: None,
            ..options.clone()
        };
        let exporter = self.spec.format.exporter_with(&options);
        self.write_with(owner, |w| Ok(exporter.export(profile, w)?))
    }

    /// Writes what `content` produces and moves the file into place, as [`Self::write`]
    /// does for a profile (`sprofd diff` writes other content through the same path).
    pub fn write_with(
        self,
        owner: Option<(u32, u32)>,
        content: impl FnOnce(&mut dyn Write) -> Result<(), ContentError>,
    ) -> Result<(), OutputError> {
        let path = self.spec.path.clone();
        self.write_inner(owner, content)
            .map_err(|source| OutputError::Write { path, source })
    }

    fn write_inner(
        &self,
        owner: Option<(u32, u32)>,
        content: impl FnOnce(&mut dyn Write) -> Result<(), ContentError>,
    ) -> Result<(), ContentError> {
        let mut w = BufWriter::new(&self.file);
        content(&mut w)?;
        w.flush()?;
        drop(w);
        if let Some(temp) = &self.temp {
            self.file.sync_all()?;
            if let Some((uid, gid)) = owner {
                // Under sudo, hand the file to the user who asked for it.
                let _ = std::os::unix::fs::chown(temp, Some(uid), Some(gid));
            }
            std::fs::rename(temp, &self.spec.path)?;
        }
        Ok(())
    }
}

impl Drop for PreparedOutput {
    /// An output never written (the session failed, or the write did) leaves no temporary
    /// file behind; after a successful rename there is nothing left to remove.
    fn drop(&mut self) {
        if let Some(t) = &self.temp {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Writes every output and, unless `--quiet`, the table on stdout; reports each result on
/// stderr. Returns whether anything failed (the others are still written).
pub fn write_all(
    outputs: Vec<PreparedOutput>,
    profile: &SymbolizedProfile,
    config: &SessionConfig,
) -> bool {
    let owner = sudo_owner();
    let mut failed = false;
    let specs: Vec<&OutputSpec> = outputs.iter().map(|o| &o.spec).collect();
    let options = export_options(profile, &specs, config);
    for out in outputs {
        let path = out.spec.path.clone();
        match out.write(profile, &options, owner) {
            Ok(()) => eprintln!("sprofd: wrote {}", path.display()),
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                failed = true;
            }
        }
    }
    if !config.quiet {
        if let Err(e) = print_table(profile, config.by_line, config.rows) {
            eprintln!("sprofd: error: {e}");
            failed = true;
        }
    }
    failed
}

/// The export options of a session's outputs. Source files are read (see
/// [`crate::sources`]) only when an output shows them, at the end of the profile; a process
/// that has exited is taken to have started when the profile did.
pub fn export_options(
    profile: &SymbolizedProfile,
    outputs: &[&OutputSpec],
    config: &SessionConfig,
) -> ExportOptions {
    let shows_source = outputs
        .iter()
        .any(|o| matches!(o.format, OutputFormat::Lines | OutputFormat::Heatmap));
    let sources = if shows_source {
        let started = std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs_f64(
            profile.meta.duration_secs.max(0.0),
        ));
        crate::sources::read_sources(profile, &config.sources, started)
    } else {
        Default::default()
    };
    ExportOptions {
        by_line: config.by_line,
        table_rows: None,
        functions: config.functions,
        sources: std::sync::Arc::new(sources),
    }
}

/// The user behind `sudo`, whose files the outputs should be.
pub fn sudo_owner() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

/// `YYYYmmdd-HHMMSS` in UTC for default file names.
pub fn timestamp(now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Prints the table to stdout.
pub fn print_table(
    profile: &SymbolizedProfile,
    by_line: bool,
    rows: usize,
) -> Result<(), OutputError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let options = ExportOptions {
        by_line,
        table_rows: Some(rows),
        ..Default::default()
    };
    OutputFormat::Table
        .exporter_with(&options)
        .export(profile, &mut lock)
        .map_err(|e| OutputError::Write {
            path: PathBuf::from("<stdout>"),
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(timestamp(t), "20261118-110640");
        assert_eq!(timestamp(std::time::UNIX_EPOCH), "19700101-000000");
    }

    #[test]
    fn unknown_extension_and_missing_directory() {
        assert!(matches!(
            OutputSpec::from_path("x.png".into()),
            Err(OutputError::UnknownExtension(_))
        ));
        let spec = OutputSpec::from_path("/nonexistent-dir-sprofd/x.svg".into()).unwrap();
        assert!(matches!(
            prepare(spec),
            Err(OutputError::NoDirectory { .. })
        ));
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sprofd-out-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_directory_or_an_unwritable_file_is_refused_before_anything_is_created() {
        let dir = scratch("isdir");
        std::fs::create_dir(dir.join("dir2.svg")).unwrap();
        for p in [
            dir.join("dir2.svg"),
            dir.join("dir2.svg/"),
            dir.join("new.svg/"),
        ] {
            let spec = OutputSpec {
                path: p.clone(),
                format: OutputFormat::Svg,
            };
            assert!(
                matches!(prepare(spec), Err(OutputError::IsDirectory(_))),
                "{}",
                p.display()
            );
        }
        // Nothing reserved for them.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.join("ro.svg");
            std::fs::write(&ro, "x").unwrap();
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
            assert!(matches!(
                prepare(OutputSpec::from_path(ro).unwrap()),
                Err(OutputError::NotWritable { .. })
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn report_outputs_are_private_and_dead_runs_temporaries_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("private");
        let path = dir.join("r.folded");
        // A temp of a PID that cannot exist (above pid_max's ceiling), one of a live process
        // (ours, another reservation), and an unrelated file.
        let dead = dir.join(".r.folded.sprofd-2147483647-0.tmp");
        let live = dir.join(format!(".r.folded.sprofd-{}-99.tmp", std::process::id()));
        let other = dir.join(".x.folded.sprofd-2147483647-0.tmp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "half").unwrap();
        }
        let out = prepare_private(OutputSpec::from_path(path.clone()).unwrap()).unwrap();
        assert!(!dead.exists(), "a dead run's temporary stays");
        assert!(live.exists() && other.exists());
        out.write(
            &SymbolizedProfile::default(),
            &ExportOptions::default(),
            None,
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_atomically_and_failures_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("sprofd-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.folded");
        let out = prepare(OutputSpec::from_path(path.clone()).unwrap()).unwrap();
        assert!(
            !path.exists(),
            "nothing under the final name before the write"
        );
        out.write(
            &SymbolizedProfile::default(),
            &ExportOptions::default(),
            None,
        )
        .unwrap();
        assert!(path.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file renamed away"
        );

        if Path::new("/dev/full").exists() {
            let full = prepare(
                OutputSpec::from_path("/dev/full".into())
                    .map_err(|_| ())
                    .unwrap_or(OutputSpec {
                        path: "/dev/full".into(),
                        format: OutputFormat::Folded,
                    }),
            );
            if let Ok(full) = full {
                let mut p = SymbolizedProfile::default();
                p.frames.push(sprof_core::Frame::bare(
                    "main",
                    sprof_core::FrameKind::Native,
                ));
                p.stacks.push(sprof_core::SampledStack {
                    frames: vec![0],
                    samples: 1,
                    period: 1,
                    thread: None,
                });
                assert!(full.write(&p, &ExportOptions::default(), None).is_err());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
