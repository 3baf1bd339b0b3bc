//! The daemon's settings: from the TOML file, overridden by flags, checked before anything
//! starts (a bad value is one line and exit 2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sprof_store::{parse_duration, parse_size};

/// The settings as the config file spells them; every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub frequency: Option<u64>,
    pub window: Option<u64>,
    pub retention: Option<String>,
    pub max_disk: Option<String>,
    pub pids: Option<Vec<u32>>,
    pub comm: Option<String>,
    pub kernel: Option<bool>,
    pub python: Option<bool>,
    pub cmdline: Option<String>,
}

impl FileSettings {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<FileSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            // toml's message spans lines (a caret under the column); one line is enough.
            reason: e.message().to_string(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        })
    }

    /// `self` with every setting `over` has replacing it (flags over the file).
    pub fn overridden_by(self, over: FileSettings) -> FileSettings {
        FileSettings {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            frequency: over.frequency.or(self.frequency),
            window: over.window.or(self.window),
            retention: over.retention.or(self.retention),
            max_disk: over.max_disk.or(self.max_disk),
            pids: over.pids.filter(|p| !p.is_empty()).or(self.pids),
            comm: over.comm.or(self.comm),
            kernel: over.kernel.or(self.kernel),
            python: over.python.or(self.python),
            cmdline: over.cmdline.or(self.cmdline),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("config file {}{}: {reason}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        reason: String,
        line: Option<usize>,
    },
    #[error("invalid listen address {0:?}: use ADDR:PORT, such as 127.0.0.1:7171 or [::1]:7171")]
    Listen(String),
    #[error("frequency must be between 1 and {max} Hz, not {asked}")]
    Frequency { asked: u64, max: u64 },
    #[error("window must be between 1 and 3600 seconds, not {0}")]
    Window(u64),
    #[error("retention: {0}")]
    Retention(sprof_store::UnitError),
    #[error("retention must be at least the window ({0} s)")]
    RetentionShort(u64),
    #[error("max-disk: {0}")]
    MaxDisk(sprof_store::UnitError),
    #[error("max-disk must be at least 1MiB")]
    MaxDiskSmall,
    #[error("invalid --comm regular expression: {0}")]
    Comm(String),
    #[error("pid 0 is not a process")]
    Pid,
    #[error("cmdline must be full, redacted or off, not {0:?}")]
    Cmdline(String),
}

/// How much of each process's command line the daemon keeps (and serves to every local user
/// who can reach the API, for the whole retention period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineMode {
    /// As the process has it.
    Full,
    /// Secrets-shaped values replaced (see [`super::redact`]).
    Redacted,
    /// No command line at all.
    Off,
}

impl std::str::FromStr for CmdlineMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<CmdlineMode, ConfigError> {
        match s {
            "full" => Ok(CmdlineMode::Full),
            "redacted" => Ok(CmdlineMode::Redacted),
            "off" => Ok(CmdlineMode::Off),
            other => Err(ConfigError::Cmdline(other.chars().take(32).collect())),
        }
    }
}

/// Settings resolved and checked.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub frequency: u64,
    pub window: Duration,
    pub retention: sprof_store::Retention,
    pub pids: Vec<u32>,
    pub comm: Option<regex::Regex>,
    pub kernel: bool,
    pub python: bool,
    pub cmdline: CmdlineMode,
    /// Where the settings came from, for SIGHUP.
    pub config_file: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7171";
pub const DEFAULT_FREQUENCY: u64 = 19;
pub const DEFAULT_WINDOW: u64 = 10;
pub const DEFAULT_RETENTION: &str = "7d";
pub const DEFAULT_MAX_DISK: &str = "1GiB";
pub const DEFAULT_CMDLINE: &str = "redacted";

/// `$STATE_DIRECTORY` (its first entry) under systemd, else `/var/lib/sprofd`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            let v = v.to_string_lossy().into_owned();
            v.split(':')
                .next()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/sprofd"))
}

/// A comm regex, compiled with a size limit (it runs once per process, but comes from
/// users and query strings).
pub fn compile_comm(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            e.to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
}

impl DaemonConfig {
    /// Checks every setting; `max_rate` is the kernel's maximum sample rate.
    pub fn resolve(
        s: FileSettings,
        config_file: Option<PathBuf>,
        max_rate: Option<u64>,
    ) -> Result<DaemonConfig, ConfigError> {
        let listen_text = s.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let frequency = s.frequency.unwrap_or(DEFAULT_FREQUENCY);
        let max = max_rate.unwrap_or(100_000);
        if frequency == 0 || frequency > max {
            return Err(ConfigError::Frequency {
                asked: frequency,
                max,
            });
        }
        let window = s.window.unwrap_or(DEFAULT_WINDOW);
        if !(1..=3600).contains(&window) {
            return Err(ConfigError::Window(window));
        }
        let max_age = parse_duration(s.retention.as_deref().unwrap_or(DEFAULT_RETENTION))
            .map_err(ConfigError::Retention)?;
        if max_age < Duration::from_secs(window) {
            return Err(ConfigError::RetentionShort(window));
        }
        let max_bytes = parse_size(s.max_disk.as_deref().unwrap_or(DEFAULT_MAX_DISK))
            .map_err(ConfigError::MaxDisk)?;
        if max_bytes < 1 << 20 {
            return Err(ConfigError::MaxDiskSmall);
        }
        let pids = s.pids.unwrap_or_default();
        if pids.contains(&0) {
            return Err(ConfigError::Pid);
        }
        let comm = match s.comm.as_deref() {
            None | Some("") => None,
            Some(p) => Some(compile_comm(p).map_err(ConfigError::Comm)?),
        };
        let cmdline = s
            .cmdline
            .as_deref()
            .unwrap_or(DEFAULT_CMDLINE)
            .parse::<CmdlineMode>()?;
        Ok(DaemonConfig {
            listen,
            data_dir: s.data_dir.unwrap_or_else(default_data_dir),
            frequency,
            window: Duration::from_secs(window),
            retention: sprof_store::Retention { max_age, max_bytes },
            pids,
            comm,
            kernel: s.kernel.unwrap_or(false),
            python: s.python.unwrap_or(true),
            cmdline,
            config_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(s: FileSettings) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::resolve(s, None, Some(100_000))
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = resolve(FileSettings::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7171");
        assert_eq!(c.frequency, 19);
        assert_eq!(c.window, Duration::from_secs(10));
        assert_eq!(c.retention.max_age, Duration::from_secs(7 * 86400));
        assert_eq!(c.retention.max_bytes, 1 << 30);
        assert!(c.python && !c.kernel && c.pids.is_empty() && c.comm.is_none());
        assert_eq!(c.cmdline, CmdlineMode::Redacted);
    }

    #[test]
    fn the_shipped_config_file_parses_and_means_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/sprofd.toml");
        let s = FileSettings::read(&path).unwrap();
        let c = resolve(s).unwrap();
        assert_eq!(c.frequency, DEFAULT_FREQUENCY);
        // Every commented setting, uncommented, still parses and gives the same defaults.
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.contains(" = ") && !l.starts_with(' '))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.lines().count() >= 10, "{uncommented}");
        let s: FileSettings = toml::from_str(&uncommented).unwrap();
        let u = resolve(s).unwrap();
        assert_eq!(
            (
                u.listen,
                u.frequency,
                u.window,
                u.retention,
                u.kernel,
                u.python,
                u.cmdline
            ),
            (
                c.listen,
                c.frequency,
                c.window,
                c.retention,
                c.kernel,
                c.python,
                c.cmdline
            )
        );
    }

    #[test]
    fn flags_override_the_file_and_bad_values_say_what_is_wrong() {
        let file = FileSettings {
            frequency: Some(49),
            window: Some(5),
            ..Default::default()
        };
        let flags = FileSettings {
            frequency: Some(97),
            ..Default::default()
        };
        let c = resolve(file.overridden_by(flags)).unwrap();
        assert_eq!((c.frequency, c.window), (97, Duration::from_secs(5)));
        let bad = |s: FileSettings| resolve(s).unwrap_err().to_string();
        let e = bad(FileSettings {
            listen: Some("localhost".into()),
            ..Default::default()
        });
        assert!(e.contains("ADDR:PORT"), "{e}");
        let e = bad(FileSettings {
            retention: Some("forever".into()),
            ..Default::default()
        });
        assert!(e.starts_with("retention: invalid duration"), "{e}");
        let e = bad(FileSettings {
            max_disk: Some("1GB".into()),
            ..Default::default()
        });
        assert!(e.contains("KiB, MiB, GiB"), "{e}");
        let e = bad(FileSettings {
            comm: Some("py(".into()),
            ..Default::default()
        });
        assert!(
            e.starts_with("invalid --comm regular expression") && !e.contains('\n'),
            "{e}"
        );
        let e = bad(FileSettings {
            frequency: Some(0),
            ..Default::default()
        });
        assert!(e.contains("between 1 and"), "{e}");
        let e = bad(FileSettings {
            cmdline: Some("some".into()),
            ..Default::default()
        });
        assert!(e.contains("full, redacted or off"), "{e}");
        for (text, mode) in [
            ("full", CmdlineMode::Full),
            ("redacted", CmdlineMode::Redacted),
            ("off", CmdlineMode::Off),
        ] {
            let c = resolve(FileSettings {
                cmdline: Some(text.into()),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(c.cmdline, mode);
        }
        let err = toml::from_str::<FileSettings>("frequncy = 3").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }
}
