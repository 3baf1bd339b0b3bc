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
    pub socket_group: Option<String>,
    /// What is sampled: `cpu` (default) or `memory` (page faults, opt-in).
    pub mode: Option<String>,
    /// Bytes of each sampled thread's stack copied for DWARF unwinding.
    pub stack_size: Option<u32>,
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
            stack_size: over.stack_size.or(self.stack_size),
            cmdline: over.cmdline.or(self.cmdline),
            socket_group: over.socket_group.or(self.socket_group),
            mode: over.mode.or(self.mode),
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("mode {0:?}: the daemon samples \"cpu\" (default) or \"memory\"")]
    Mode(String),
    #[error("cannot read config file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("config file {}{}: {reason}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        reason: String,
        line: Option<usize>,
    },
    #[error("invalid listen address {0:?}: use ADDR:PORT, such as 127.0.0.1:7171 or [::1]:7171, or unix:/ABSOLUTE/PATH")]
    Listen(String),
    #[error("socket_group: no group {0:?} in /etc/group")]
    Group(String),
    #[error("socket_group needs listen = \"unix:/PATH\"")]
    GroupWithoutSocket,
    #[error("frequency must be between 1 and {max} Hz, not {asked}")]
    Frequency { asked: u64, max: u64 },
    #[error("stack_size must be a multiple of 8 between 8 and 65528, not {0}")]
    StackSize(u32),
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

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// A Unix socket, mode 0660: only its owner and group can connect.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Listen, ConfigError> {
        match s.strip_prefix("unix:") {
            Some(p) if p.starts_with('/') && p.len() > 1 => Ok(Listen::Unix(PathBuf::from(p))),
            Some(_) => Err(ConfigError::Listen(s.to_string())),
            None => s
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| ConfigError::Listen(s.to_string())),
        }
    }
}

/// A group's id: a number, or a name looked up in /etc/group.
fn group_id(group: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                (f.next()? == group).then_some(())?;
                f.nth(1)?.parse().ok()
            })
        })
        .ok_or_else(|| ConfigError::Group(group.chars().take(64).collect()))
}

/// Settings resolved and checked.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: Listen,
    /// The group the Unix socket is given to (its members can connect).
    pub socket_group: Option<u32>,
    pub data_dir: PathBuf,
    pub frequency: u64,
    pub window: Duration,
    pub retention: sprof_store::Retention,
    pub pids: Vec<u32>,
    pub comm: Option<regex::Regex>,
    pub kernel: bool,
    pub python: bool,
    pub cmdline: CmdlineMode,
    /// What the windows measure: CPU samples, or new resident memory (`mode = "memory"`).
    pub mode: sprof_core::Measure,
    /// Bytes of stack copied with each sample.
    pub stack_size: u32,
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
        let listen: Listen = listen_text.parse()?;
        let socket_group = match s.socket_group.as_deref() {
            None | Some("") => None,
            Some(g) => Some(group_id(g)?),
        };
        if socket_group.is_some() && !matches!(listen, Listen::Unix(_)) {
            return Err(ConfigError::GroupWithoutSocket);
        }
        let frequency = s.frequency.unwrap_or(DEFAULT_FREQUENCY);
        let max = max_rate.unwrap_or(100_000);
        if frequency == 0 || frequency > max {
            return Err(ConfigError::Frequency {
                asked: frequency,
                max,
            });
        }
        // The same default as record's: rustc's compiler thread, the deepest busy stack on a
        // build host, was 70% truncated at 16 KiB, 16% at 32 KiB and 7% at 64 KiB (`sprofd
        // record -F 499 --stack-size N -- rustc -O` on a 400-function crate, 2026-12-08), but
        // a larger copy costs the daemon more CPU (docs/benchmarks.md).
        let stack_size = s.stack_size.unwrap_or(crate::config::DEFAULT_STACK_SIZE);
        if !crate::config::stack_size_ok(stack_size) {
            return Err(ConfigError::StackSize(stack_size));
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
        let mode = match s.mode.as_deref() {
            None | Some("cpu") => sprof_core::Measure::Cpu,
            Some("memory") => sprof_core::Measure::Memory,
            Some(other) => return Err(ConfigError::Mode(other.to_string())),
        };
        Ok(DaemonConfig {
            listen,
            socket_group,
            data_dir: s.data_dir.unwrap_or_else(default_data_dir),
            frequency,
            window: Duration::from_secs(window),
            retention: sprof_store::Retention { max_age, max_bytes },
            pids,
            comm,
            kernel: s.kernel.unwrap_or(false),
            python: s.python.unwrap_or(true),
            cmdline,
            mode,
            stack_size,
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
                u.cmdline,
                u.stack_size
            ),
            (
                c.listen,
                c.frequency,
                c.window,
                c.retention,
                c.kernel,
                c.python,
                c.cmdline,
                c.stack_size
            )
        );
        assert!(uncommented.contains("stack_size = "), "{uncommented}");
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
        for size in [0, 12, 65536] {
            let e = bad(FileSettings {
                stack_size: Some(size),
                ..Default::default()
            });
            assert!(e.contains("multiple of 8 between 8 and 65528"), "{e}");
        }
        let deep = FileSettings {
            stack_size: Some(65528),
            ..Default::default()
        };
        assert_eq!(resolve(deep).unwrap().stack_size, 65528);
        assert_eq!(
            resolve(FileSettings::default()).unwrap().stack_size,
            crate::config::DEFAULT_STACK_SIZE
        );
        let e = bad(FileSettings {
            mode: Some("wall".into()),
            ..Default::default()
        });
        assert!(e.contains("\"cpu\" (default) or \"memory\""), "{e}");
        let memory = FileSettings {
            mode: Some("memory".into()),
            ..Default::default()
        };
        assert_eq!(resolve(memory).unwrap().mode, sprof_core::Measure::Memory);
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
        let c = resolve(FileSettings {
            listen: Some("unix:/run/sprofd/sprofd.sock".into()),
            socket_group: Some("0".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen, Listen::Unix("/run/sprofd/sprofd.sock".into()));
        assert_eq!(c.listen.to_string(), "unix:/run/sprofd/sprofd.sock");
        assert_eq!(c.socket_group, Some(0));
        let root = resolve(FileSettings {
            listen: Some("unix:/s".into()),
            socket_group: Some("root".into()),
            ..Default::default()
        });
        assert_eq!(root.unwrap().socket_group, Some(0));
        let e = bad(FileSettings {
            listen: Some("unix:relative.sock".into()),
            ..Default::default()
        });
        assert!(e.contains("unix:/ABSOLUTE/PATH"), "{e}");
        let e = bad(FileSettings {
            socket_group: Some("0".into()),
            ..Default::default()
        });
        assert!(e.contains("needs listen"), "{e}");
        let e = bad(FileSettings {
            listen: Some("unix:/s".into()),
            socket_group: Some("no-such-group-here".into()),
            ..Default::default()
        });
        assert!(e.contains("no group"), "{e}");
        let err = toml::from_str::<FileSettings>("frequncy = 3").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }
}
