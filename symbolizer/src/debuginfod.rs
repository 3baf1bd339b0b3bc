//! A debuginfod client: debug files by build-id from the servers in `DEBUGINFOD_URLS`, for
//! modules that have neither symbols nor DWARF after the on-disk lookups.
//!
//! This module owns the elfutils conventions (`DEBUGINFOD_URLS` is a space-separated list,
//! `GET URL/buildid/<hex>/debuginfo`, the cache at `$DEBUGINFOD_CACHE_PATH`, else
//! `$XDG_CACHE_HOME/debuginfod_client`, else `~/.cache/debuginfod_client`, one
//! `<hex>/debuginfo` file per build-id), so sprofd shares its cache with gdb, perf and
//! eu-stack. It also owns the bounds that keep a slow or dead server from stalling a
//! profile: a time budget per module, a few fetches at once, a deadline for the whole batch,
//! and a server that fails once is not asked again this session. Failures are warnings
//! ([`Debuginfod::take_warnings`]), one per server, never errors: symbolization goes on
//! with what the module itself has.

use std::collections::HashSet;

use crate::hex;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Time allowed for one module, over all servers, unless `DEBUGINFOD_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches in flight at once.
const MAX_WORKERS: usize = 4;

/// No new fetch starts after this many per-module budgets since the batch began.
const BATCH_BUDGETS: u32 = 3;

/// The largest debug file accepted (a browser's is about 1 GiB).
const MAX_DEBUG_FILE: u64 = 2 << 30;

/// How long an empty cache file says "no server has it" before servers are asked again:
/// elfutils' default `cache_miss_s`, so gdb, perf and sprofd agree on a shared cache.
const CACHE_MISS: Duration = Duration::from_secs(600);

/// What the cache says about one build-id.
enum Cached {
    /// A debug file to read.
    File(PathBuf),
    /// Every server answered 404 within [`CACHE_MISS`]: not asked again yet.
    KnownMissing,
    /// Nothing usable: ask the servers.
    Unknown,
}

/// The client: servers, cache directory, and what went wrong so far.
#[derive(Debug)]
pub struct Debuginfod {
    servers: Vec<String>,
    cache: PathBuf,
    timeout: Duration,
    agent: ureq::Agent,
    /// Indexes of servers that failed: warned about once, then skipped.
    failed: Mutex<HashSet<usize>>,
    warnings: Mutex<Vec<String>>,
}

/// The elfutils cache directory for the given environment values.
fn cache_dir(cache_path: Option<&str>, xdg_cache: Option<&str>, home: Option<&str>) -> PathBuf {
    let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(dir) = nonempty(cache_path) {
        return dir;
    }
    if let Some(xdg) = nonempty(xdg_cache) {
        return xdg.join("debuginfod_client");
    }
    nonempty(home)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".cache/debuginfod_client")
}

impl Debuginfod {
    /// A client configured as the elfutils one is, from the environment; `None` when
    /// `DEBUGINFOD_URLS` is unset or lists no server.
    pub fn from_env() -> Option<Debuginfod> {
        let var = |k: &str| std::env::var(k).ok();
        let urls = var("DEBUGINFOD_URLS")?;
        let cache = cache_dir(
            var("DEBUGINFOD_CACHE_PATH").as_deref(),
            var("XDG_CACHE_HOME").as_deref(),
            var("HOME").as_deref(),
        );
        let timeout = var("DEBUGINFOD_TIMEOUT")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&s| s > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        Debuginfod::new(&urls, cache, timeout)
    }

    /// A client for the space-separated server `urls`, caching under `cache`, allowing
    /// `timeout` per module; `None` when `urls` lists no server.
    pub fn new(urls: &str, cache: PathBuf, timeout: Duration) -> Option<Debuginfod> {
        let listed: Vec<String> = urls
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if listed.is_empty() {
            return None;
        }
        // why: this build has no TLS stack. Debian's login shells list an https server by
        // default, so say once why it is skipped rather than fail on every module; the
        // cache (which other clients may have filled) is still read.
        let (https, servers): (Vec<String>, Vec<String>) = listed
            .into_iter()
            .partition(|u| u.to_ascii_lowercase().starts_with("https://"));
        let warnings = https
            .iter()
            .map(|u| {
                format!("debuginfod server {u}: https is not supported by this build (plain http only); skipped")
            })
            .collect();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Some(Debuginfod {
            servers,
            cache,
            timeout,
            agent,
            failed: Mutex::new(HashSet::new()),
            warnings: Mutex::new(warnings),
        })
    }

    /// Where the debug file of `build_id` is cached.
    pub fn cache_path(&self, build_id: &[u8]) -> PathBuf {
        self.cache.join(hex(build_id)).join("debuginfo")
    }

    /// What the cache holds for `build_id`. An empty file is elfutils' negative-cache
    /// marker: every server said 404, and until it is [`CACHE_MISS`] old nobody asks again.
    fn cached(&self, build_id: &[u8]) -> Cached {
        let path = self.cache_path(build_id);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Cached::Unknown;
        };
        if !meta.is_file() {
            return Cached::Unknown;
        }
        if meta.len() > 0 {
            return Cached::File(path);
        }
        let age = meta.modified().ok().and_then(|m| m.elapsed().ok());
        match age {
            Some(age) if age < CACHE_MISS => Cached::KnownMissing,
            _ => Cached::Unknown,
        }
    }

    /// Leaves the empty marker that says no server has `build_id` (see [`Self::cached`]).
    /// A failure to write it only means the servers are asked again next time.
    fn remember_missing(&self, build_id: &[u8]) {
        let dest = self.cache_path(build_id);
        if let Some(dir) = dest.parent() {
            if create_private_dir(dir).is_ok() && !dest.exists() {
                let _ = std::fs::File::create(&dest);
            }
        }
    }

    /// The debug file of each build-id, from the cache or fetched, in order. Fetches run on
    /// a few threads; none starts once the batch's deadline has passed.
    pub fn fetch_all(&self, build_ids: &[Vec<u8>]) -> Vec<Option<PathBuf>> {
        let cached: Vec<Cached> = build_ids.iter().map(|id| self.cached(id)).collect();
        let missing: Vec<usize> = (0..build_ids.len())
            .filter(|&i| matches!(cached[i], Cached::Unknown) && !build_ids[i].is_empty())
            .collect();
        let results: Vec<Mutex<Option<PathBuf>>> = cached
            .into_iter()
            .map(|c| {
                Mutex::new(if let Cached::File(p) = c {
                    Some(p)
                } else {
                    None
                })
            })
            .collect();
        let deadline = Instant::now() + self.timeout * BATCH_BUDGETS;
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..missing.len().min(MAX_WORKERS) {
                scope.spawn(|| loop {
                    let Some(&i) = missing.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        return;
                    };
                    if Instant::now() >= deadline {
                        return;
                    }
                    *lock(&results[i]) = self.fetch(&build_ids[i]);
                });
            }
        });
        results
            .into_iter()
            .map(|r| r.into_inner().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Asks each server that has not failed yet, in order, within one module's budget.
    fn fetch(&self, build_id: &[u8]) -> Option<PathBuf> {
        let start = Instant::now();
        let id = hex(build_id);
        // why: only a 404 from every server is remembered; a server that failed or was
        // skipped might have the file, so the next run asks again.
        let mut all_said_no = !self.servers.is_empty();
        for (i, server) in self.servers.iter().enumerate() {
            let left = self.timeout.checked_sub(start.elapsed())?;
            if lock(&self.failed).contains(&i) {
                all_said_no = false;
                continue;
            }
            let url = format!("{server}/buildid/{id}/debuginfo");
            match self.download(&url, left, build_id) {
                Ok(Some(path)) => return Some(path),
                Ok(None) => {}
                Err(why) => {
                    all_said_no = false;
                    self.server_failed(i, server, &why);
                }
            }
        }
        if all_said_no {
            self.remember_missing(build_id);
        }
        None
    }

    /// One GET: `Ok(None)` when the server does not have the file (404), the cached path on
    /// success, an error description otherwise.
    fn download(
        &self,
        url: &str,
        timeout: Duration,
        build_id: &[u8],
    ) -> Result<Option<PathBuf>, String> {
        let mut resp = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => {
                    format!("no answer within {:.1} s", timeout.as_secs_f64())
                }
                other => other.to_string(),
            })?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            other => return Err(format!("HTTP status {other}")),
        }
        let mut reader = resp.body_mut().with_config().limit(MAX_DEBUG_FILE).reader();
        let dest = self.cache_path(build_id);
        let dir = dest.parent().ok_or("cache path has no directory")?;
        create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // why: written beside the final name and renamed, so a reader (another sprofd, gdb)
        // never sees half a file, and an interrupted download leaves no cache entry.
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".debuginfo.{}.{serial}.tmp", std::process::id()));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| std::io::copy(&mut reader, &mut f).and_then(|_| f.flush()))
            .and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("download into {}: {e}", dir.display()));
        }
        Ok(Some(dest))
    }

    fn server_failed(&self, index: usize, server: &str, why: &str) {
        if lock(&self.failed).insert(index) {
            lock(&self.warnings).push(format!(
                "debuginfod server {server}: {why}; not asked again in this session"
            ));
        }
    }

    /// Warnings not yet taken: at most one per server.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }
}

/// Locks, ignoring poisoning: every value guarded here is valid after any partial update.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates `dir` and its parents, new ones readable by the owner only (as elfutils does: a
/// cache of what a user debugged is nobody else's business).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_elfutils_precedence() {
        let dir = |a, b, c| cache_dir(a, b, c);
        assert_eq!(dir(Some("/c"), Some("/x"), Some("/h")), PathBuf::from("/c"));
        assert_eq!(
            dir(Some(""), Some("/x"), Some("/h")),
            PathBuf::from("/x/debuginfod_client")
        );
        assert_eq!(
            dir(None, None, Some("/h")),
            PathBuf::from("/h/.cache/debuginfod_client")
        );
    }

    #[test]
    fn urls_are_space_separated_and_empty_lists_mean_no_client() {
        let tmp = std::env::temp_dir();
        assert!(Debuginfod::new("  ", tmp.clone(), DEFAULT_TIMEOUT).is_none());
        let c = Debuginfod::new("http://a:1/ \thttp://b:2", tmp, DEFAULT_TIMEOUT).unwrap();
        assert_eq!(c.servers, ["http://a:1", "http://b:2"]);
        assert!(c.cache_path(&[0xab, 0x01]).ends_with("ab01/debuginfo"));
        assert!(c.take_warnings().is_empty());
    }

    #[test]
    fn https_servers_are_skipped_with_one_warning_each() {
        let cache = std::env::temp_dir().join(format!("sprof-dbgd-tls-{}", std::process::id()));
        let c = Debuginfod::new("https://debuginfod.example.invalid", cache, DEFAULT_TIMEOUT)
            .expect("a client that still reads the cache");
        assert!(c.servers.is_empty());
        assert_eq!(c.fetch_all(&[vec![7u8; 20]]), vec![None]);
        let w = c.take_warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("https is not supported"), "{w:?}");
    }

    #[test]
    fn a_dead_server_is_one_warning_and_nothing_found() {
        // why: a port just closed by us refuses connections at once on loopback.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cache = std::env::temp_dir().join(format!("sprof-dbgd-{}", std::process::id()));
        let url = format!("http://127.0.0.1:{port}");
        let c = Debuginfod::new(&url, cache.clone(), Duration::from_secs(2)).unwrap();
        let ids = vec![vec![1u8; 20], vec![2u8; 20], vec![3u8; 20]];
        assert_eq!(c.fetch_all(&ids), vec![None, None, None]);
        let warnings = c.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&url), "{warnings:?}");
        assert!(c.take_warnings().is_empty());
        let _ = std::fs::remove_dir_all(cache);
    }

    #[test]
    fn a_404_from_every_server_is_remembered_like_elfutils() {
        let cache = std::env::temp_dir().join(format!("sprof-dbgd-miss-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let (url, asked) = sprof_testkit::not_found_server();
        let id = vec![9u8; 20];
        let c = Debuginfod::new(&url, cache.clone(), Duration::from_secs(2)).unwrap();
        assert_eq!(c.fetch_all(std::slice::from_ref(&id)), vec![None]);
        assert_eq!(lock(&asked).len(), 1, "{:?}", lock(&asked));
        let marker = c.cache_path(&id);
        assert_eq!(std::fs::metadata(&marker).unwrap().len(), 0);

        // A new session (another sprofd, or gdb) trusts the marker and asks nobody.
        let c = Debuginfod::new(&url, cache.clone(), Duration::from_secs(2)).unwrap();
        assert_eq!(c.fetch_all(std::slice::from_ref(&id)), vec![None]);
        assert_eq!(lock(&asked).len(), 1, "{:?}", lock(&asked));
        assert!(c.take_warnings().is_empty());

        // An old marker is stale: the servers are asked again.
        let old = std::time::SystemTime::now() - CACHE_MISS - Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&marker)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(c.fetch_all(std::slice::from_ref(&id)), vec![None]);
        assert_eq!(lock(&asked).len(), 2, "{:?}", lock(&asked));
        let _ = std::fs::remove_dir_all(cache);
    }

    #[test]
    fn a_dead_server_leaves_no_negative_marker() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cache = std::env::temp_dir().join(format!("sprof-dbgd-dead-{}", std::process::id()));
        let c = Debuginfod::new(
            &format!("http://127.0.0.1:{port}"),
            cache.clone(),
            Duration::from_secs(2),
        )
        .unwrap();
        let id = vec![4u8; 20];
        assert_eq!(c.fetch_all(std::slice::from_ref(&id)), vec![None]);
        assert!(!c.cache_path(&id).exists());
        let _ = std::fs::remove_dir_all(cache);
    }
}
