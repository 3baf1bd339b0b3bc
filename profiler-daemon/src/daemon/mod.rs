//! `sprofd daemon`: always-on profiling of the whole host (or of chosen processes), kept on
//! disk window by window and served over HTTP.
//!
//! * [`sampling`]: the sampling thread: the source, engine and symbolizer from the driver
//!   kit, and the I/O of [`windows`], the state machine of slices, windows and taps;
//!   [`labels`] the processes' labels from /proc, [`pending`] the windows the disk refused.
//! * [`query`]: ranges of history as one profile or a process list.
//! * [`http`]: the API's router over a [`http::Backend`], and [`page`] its HTML page;
//!   [`server`] the accept loop that serves it (connection cap, timeouts).
//! * [`redact`]: command lines as they are kept (`--cmdline`).
//! * [`rss`]: which processes' resident memory is read, and the reader thread;
//!   [`rss_window`] the readings in the window's file; [`memory`] them in the API, the page
//!   and `/metrics`.
//! * [`metrics`], [`notify`] (sd_notify), [`config`]; the capabilities it needs are checked
//!   by [`crate::privileges::check_daemon`].

pub mod api;
pub mod config;
pub mod http;
pub mod labels;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod pending;
pub mod query;
pub mod redact;
pub mod rss;
pub mod rss_window;
pub mod sampling;
pub mod server;
pub mod summary;
#[cfg(test)]
mod test_api;
pub mod timeline;
pub mod visibility;
pub mod windows;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::http::StatusCode;
use sprof_core::SymbolizedProfile;
use sprof_store::{unix_millis, WindowStore};
use tokio::sync::{oneshot, watch};

use self::config::{DaemonConfig, FileSettings};
use self::query::{QueryError, Selection, Sources};
use self::sampling::{Control, Shared, StackFilter};

/// The daemon's side of the API.
struct DaemonBackend {
    shared: Arc<Shared>,
    running: AtomicBool,
}

impl http::Backend for DaemonBackend {
    fn health(&self) -> Result<(), String> {
        if !self.running.load(Ordering::SeqCst) {
            return Err("sampling has stopped".into());
        }
        match self.shared.health() {
            sampling::Health::Ok => Ok(()),
            sampling::Health::Dead => Err("the sampling thread has ended".into()),
            sampling::Health::Stalled(d) => Err(format!(
                "the sampling loop has not turned for {:.1} s (stuck in a read or a symbolization)",
                d.as_secs_f64()
            )),
        }
    }

    fn sources(
        &self,
        sel: &Selection,
        max_windows: usize,
        max_bytes: u64,
    ) -> Result<Sources, QueryError> {
        let live = {
            let window = self.shared.window.lock().unwrap_or_else(|e| e.into_inner());
            window
                .slices
                .iter()
                .map(|s| (unix_millis(s.start), unix_millis(s.end), s.profile.clone()))
                .collect()
        };
        let store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut sources = Sources::gather(&store, live, sel, max_windows, max_bytes)?;
        sources.live_rss = self.shared.rss.window();
        Ok(sources)
    }

    fn quarantine(&self, path: &Path, reason: &str) {
        let mut store = self.shared.store.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("sprofd: warning: {}", store.quarantine(path, reason));
        self.shared.metrics.corrupt_windows.inc();
    }

    fn open_tap(&self, keep: StackFilter) -> Option<oneshot::Receiver<u64>> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .send(Control::OpenTap { keep, reply })
            .then_some(rx)
    }

    fn close_tap(&self, id: u64) -> Option<oneshot::Receiver<SymbolizedProfile>> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .send(Control::CloseTap { id, reply })
            .then_some(rx)
    }

    fn metrics(&self) -> String {
        self.shared.metrics.render()
    }

    fn process_metrics(&self, viewer: query::Viewer) -> String {
        memory::exposition(&self.shared.rss.latest(), viewer)
    }

    fn describe(&self) -> String {
        self.shared
            .describe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn count(&self, status: StatusCode) {
        self.shared.metrics.requests.inc();
        if status.is_client_error() {
            self.shared.metrics.bad_requests.inc();
        }
    }

    fn count_busy(&self) {
        self.shared.metrics.busy_requests.inc();
    }
}

/// How long the sampling thread gets to write the window in progress at SIGTERM; with the
/// HTTP side's grace periods the daemon is gone within 5 s even if sampling is stuck.
const SAMPLER_STOP_GRACE: Duration = Duration::from_millis(2500);
/// How long scrapes in progress get to answer at SIGTERM.
const TAPS_STOP_GRACE: Duration = Duration::from_millis(1500);

/// The API's listening socket.
enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl Bound {
    fn bind(config: &DaemonConfig) -> anyhow::Result<Bound> {
        let bound = match &config.listen {
            config::Listen::Tcp(addr) => Bound::Tcp(
                std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            config::Listen::Unix(path) => Bound::Unix(
                bind_unix(path, config.socket_group)
                    .with_context(|| format!("cannot listen on {}", config.listen))?,
            ),
        };
        match &bound {
            Bound::Tcp(l) => l.set_nonblocking(true)?,
            Bound::Unix(l) => l.set_nonblocking(true)?,
        }
        Ok(bound)
    }

    /// Where it serves, for the log (port 0 asks for any free port: it says which one).
    fn describe(&self) -> String {
        match self {
            Bound::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}/"),
                Err(_) => "http".into(),
            },
            Bound::Unix(l) => match l.local_addr().ok().and_then(|a| {
                a.as_pathname()
                    .map(|p| format!("http over unix:{}", p.display()))
            }) {
                Some(d) => d,
                None => "http over a unix socket".into(),
            },
        }
    }
}

/// Binds a Unix socket at `path`, mode 0660, given to `group`: only the daemon's user and
/// that group's members can connect. A socket left there by an earlier run is replaced;
/// anything else at `path` is an error.
fn bind_unix(path: &Path, group: Option<u32>) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Until the chmod below the mode is 0777 less the umask; connecting needs write
    // permission, which a umask of 022 (or the unit's 077) already denies to others.
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Why the HTTP side stopped.
#[derive(Debug, PartialEq)]
enum Stopped {
    Signal,
    SamplerEnded,
}

/// Raises the soft limit on open files to the hard limit: systemd's default soft limit (1024)
/// is what a host-wide sampler's per-CPU events, the symbolizer's files and the API's
/// connections share. The old and new soft limits.
fn raise_nofile_limit() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives on our stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; it has no other memory effects.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

/// Runs the daemon until SIGTERM or SIGINT; the exit code.
pub fn run(config: DaemonConfig) -> anyhow::Result<i32> {
    match raise_nofile_limit() {
        Ok((old, new)) if new > old => {
            eprintln!("sprofd: open-file limit raised from {old} to {new}")
        }
        Ok(_) => {}
        Err(e) => eprintln!("sprofd: warning: cannot raise the open-file limit: {e}"),
    }
    for w in crate::privileges::check_daemon(config.pids.is_empty(), config.kernel)
        .map_err(anyhow::Error::msg)?
    {
        eprintln!("sprofd: warning: {w}");
    }
    if matches!(config.listen, config::Listen::Tcp(a) if !a.ip().is_loopback()) {
        eprintln!(
            "sprofd: warning: listening on {}, which is not a loopback address: anyone who can reach it can read every process's profile",
            config.listen
        );
    }
    // The store's errors name the directory and say what is wrong with it.
    let (store, warnings) = WindowStore::open(&config.data_dir, config.retention)?;
    for w in &warnings {
        eprintln!("sprofd: warning: {w}");
    }
    let listener = Bound::bind(&config)?;
    let listen = listener.describe();
    let notifier = Arc::new(notify::Notifier::from_env());
    let (stored, quarantined) = (store.windows().len(), store.quarantined);
    let (shared, sampler) = sampling::start(&config, store, notifier.clone())?;
    shared.metrics.corrupt_windows.inc_by(quarantined);
    let backend = Arc::new(DaemonBackend {
        shared: shared.clone(),
        running: AtomicBool::new(true),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let describe = shared
        .describe
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let announce = || {
        eprintln!(
            "sprofd: sampling {describe}; serving {listen} ; data in {} ({stored} windows stored)",
            config.data_dir.display()
        );
        notifier.ready(&describe);
    };
    let socket = match &config.listen {
        config::Listen::Unix(path) => Some(path.clone()),
        config::Listen::Tcp(_) => None,
    };
    let stopped = runtime.block_on(serve(listener, backend.clone(), &config, announce))?;
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
    }
    notifier.stopping();
    // Handlers still running on the blocking pool (a long query) are not waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    backend.running.store(false, Ordering::SeqCst);
    Ok(wind_down(stopped, &shared, sampler))
}

/// Ends the sampling thread after the HTTP side stopped; the exit code. A thread that ended
/// by itself died (a panic): 1, so that `Restart=on-failure` restarts the daemon. Otherwise
/// it is told to write the window in progress and stop, within [`SAMPLER_STOP_GRACE`].
fn wind_down(stopped: Stopped, shared: &Shared, sampler: std::thread::JoinHandle<()>) -> i32 {
    let stop_started = Instant::now();
    if stopped == Stopped::SamplerEnded {
        let _ = sampler.join();
        eprintln!(
            "sprofd: error: the sampling thread ended; exiting so that the service manager restarts the daemon"
        );
        return 1;
    }
    shared.send(Control::Stop);
    while !sampler.is_finished() && stop_started.elapsed() < SAMPLER_STOP_GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !sampler.is_finished() {
        // Stuck in a system call (a FIFO, a hung file system): what was written is all
        // there is; the window in progress is lost. Exiting ends the thread.
        eprintln!(
            "sprofd: error: the sampling thread did not stop within {} ms; exiting without the window in progress",
            SAMPLER_STOP_GRACE.as_millis()
        );
        return 1;
    }
    let _ = sampler.join();
    eprintln!(
        "sprofd: stopped; window in progress written ({} ms)",
        stop_started.elapsed().as_millis()
    );
    0
}

/// Serves the API until SIGTERM/SIGINT; SIGHUP reloads the config file. `announce` says the
/// daemon is ready, once the signal handlers are in place (a SIGHUP before them would kill it).
async fn serve(
    listener: Bound,
    backend: Arc<DaemonBackend>,
    config: &DaemonConfig,
    announce: impl FnOnce(),
) -> anyhow::Result<Stopped> {
    use tokio::signal::unix::{signal, SignalKind};
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let summaries = Arc::new(summary::SummaryCache::default());
    summary::warm_up(backend.clone(), summaries.clone());
    let app = http::router_with(
        backend.clone(),
        shutdown_rx,
        http::Limits::default(),
        summaries,
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let visibility = visibility::Visibility::of_host();
    if let visibility::Visibility::Own { exempt_gid } = visibility {
        let exempt = exempt_gid.map_or(String::new(), |g| format!(" and group {g}"));
        eprintln!(
            "sprofd: /proc hides other users' processes (hidepid): readers but root{exempt} see only their own"
        );
    }
    announce();
    let config = config.clone();
    let shared = backend.shared.clone();
    let stop = async move {
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload(&config, &shared),
                _ = check.tick() => {
                    // A dead sampler does not come back: stop serving "unhealthy" and exit
                    // non-zero, which is what restarts the service.
                    if shared.sampler_ended() {
                        break;
                    }
                }
            }
        }
        eprintln!("sprofd: stopping");
        // Scrapes in progress answer with what they have; then the server drains.
        let _ = shutdown_tx.send(true);
        let deadline = Instant::now() + TAPS_STOP_GRACE;
        while shared.open_taps.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let m = &backend.shared.metrics;
    let metrics = server::ConnMetrics {
        open: m.connections.clone(),
        refused: m.connections_refused.clone(),
        closed_idle: m.connections_closed_idle.clone(),
    };
    let limits = server::ServerLimits::default();
    match listener {
        Bound::Tcp(l) => {
            let l = tokio::net::TcpListener::from_std(l)?;
            server::serve(l, app, limits, visibility, metrics, stop).await;
        }
        Bound::Unix(l) => {
            let l = tokio::net::UnixListener::from_std(l)?;
            server::serve(l, app, limits, visibility, metrics, stop).await;
        }
    }
    // Stop has not been sent yet: an ended thread died.
    Ok(if backend.shared.sampler_ended() {
        Stopped::SamplerEnded
    } else {
        Stopped::Signal
    })
}

/// SIGHUP: re-reads the config file. Retention applies at once; the other settings need a
/// restart, and the log says which changed.
fn reload(config: &DaemonConfig, shared: &Shared) {
    let Some(path) = &config.config_file else {
        eprintln!("sprofd: SIGHUP: no --config file to reload");
        return;
    };
    let settings = match FileSettings::read(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sprofd: warning: SIGHUP: {e}; keeping the current settings");
            return;
        }
    };
    match DaemonConfig::resolve(
        settings,
        Some(path.clone()),
        sprof_perf::procfs::perf_event_max_sample_rate(),
    ) {
        Ok(new) => {
            shared.send(Control::Retention(new.retention));
            let restart: Vec<&str> = [
                ("listen", new.listen != config.listen),
                ("data_dir", new.data_dir != config.data_dir),
                ("frequency", new.frequency != config.frequency),
                ("window", new.window != config.window),
                ("pids", new.pids != config.pids),
                (
                    "comm",
                    new.comm.as_ref().map(|r| r.as_str())
                        != config.comm.as_ref().map(|r| r.as_str()),
                ),
                ("kernel", new.kernel != config.kernel),
                ("python", new.python != config.python),
                ("cmdline", new.cmdline != config.cmdline),
            ]
            .into_iter()
            .filter_map(|(k, changed)| changed.then_some(k))
            .collect();
            eprintln!(
                "sprofd: SIGHUP: reloaded {}: retention {}, max disk {} MiB{}",
                path.display(),
                humantime::format_duration(new.retention.max_age),
                new.retention.max_bytes >> 20,
                if restart.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} changed and take effect at the next restart",
                        restart.join(", ")
                    )
                }
            );
        }
        Err(e) => eprintln!("sprofd: warning: SIGHUP: {e}; keeping the current settings"),
    }
}

/// `sprofd report`: the stored windows of a range, written as `attach` writes profiles but
/// 0600: they hold every command line and stack of the range, which the store keeps 0600.
/// Window files that are not regular files of the data directory's owner (a FIFO, a symlink,
/// another user's file) are never opened and get one warning line each.
pub fn report(args: ReportConfig) -> anyhow::Result<i32> {
    let mut outputs = Vec::new();
    for spec in &args.outputs {
        outputs.push(crate::output::prepare_private(spec.clone())?);
    }
    let windows = WindowStore::list(&args.data_dir)?;
    let sources = Sources {
        windows: windows
            .into_iter()
            .filter(|w| w.overlaps(args.selection.from_ms, args.selection.to_ms))
            .collect(),
        live: Vec::new(),
        live_rss: Vec::new(),
    };
    if sources.windows.is_empty() {
        anyhow::bail!(
            "no stored windows in {} between the given times",
            args.data_dir.display()
        );
    }
    let n = sources.windows.len();
    let (profile, bad) = query::merged(&sources, &args.selection);
    // The reason names the file already.
    for (_, reason) in bad {
        eprintln!("sprofd: warning: {reason}; skipped");
    }
    let mut profile = profile.with_python_view(sprof_core::PythonView::Python);
    profile.meta.target = format!("{} ({n} windows)", profile.meta.target);
    let shows_source = outputs.iter().any(|o| {
        matches!(
            o.spec.format,
            flamegraph_out::OutputFormat::Lines | flamegraph_out::OutputFormat::Heatmap
        )
    });
    // A process of the range that still runs is read in its root; one that has exited, on
    // the host, as changed if its files are newer than the range's start.
    let range_start =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(args.selection.from_ms);
    let options = flamegraph_out::ExportOptions {
        functions: args.functions,
        sources: std::sync::Arc::new(if shows_source {
            crate::sources::read_sources(&profile, &args.sources, Some(range_start))
        } else {
            Default::default()
        }),
        ..Default::default()
    };
    let mut failed = false;
    for out in outputs {
        let path = out.spec.path.clone();
        match out.write(&profile, &options, crate::output::sudo_owner()) {
            Ok(()) => {
                if !args.quiet {
                    eprintln!("sprofd: wrote {}", path.display());
                }
            }
            Err(e) => {
                eprintln!("sprofd: error: {e}");
                failed = true;
            }
        }
    }
    if !args.quiet {
        eprintln!(
            "sprofd: {n} windows, {} samples, {:.0} s",
            profile.total_samples(),
            profile.meta.duration_secs
        );
    }
    Ok(i32::from(failed))
}

/// What `sprofd report` was asked for.
pub struct ReportConfig {
    pub data_dir: std::path::PathBuf,
    pub selection: Selection,
    pub outputs: Vec<crate::config::OutputSpec>,
    pub quiet: bool,
    /// Functions in an annotated source output.
    pub functions: usize,
    pub sources: crate::sources::SourceConfig,
}

/// Resolves report's times (default: all history).
pub fn report_selection(
    from: Option<&str>,
    to: Option<&str>,
    pid: Option<u32>,
    comm: Option<&str>,
) -> Result<Selection, String> {
    let now = SystemTime::now();
    let time = |name: &str, t: Option<&str>, default: SystemTime| match t {
        Some(t) => sprof_store::parse_time(t, now).map_err(|e| format!("--{name}: {e}")),
        None => Ok(default),
    };
    let from = time("from", from, std::time::UNIX_EPOCH)?;
    let to = time("to", to, now)?;
    if from > to {
        return Err("--from is after --to".into());
    }
    let comm = comm
        .map(|c| {
            config::compile_comm(c).map_err(|e| format!("invalid --comm regular expression: {e}"))
        })
        .transpose()?;
    Ok(Selection {
        from_ms: unix_millis(from),
        to_ms: unix_millis(to),
        pid,
        comm,
        // `report` reads the store itself: whoever can read it may see all of it.
        viewer: query::Viewer::All,
    })
}

#[cfg(test)]
mod tests;
