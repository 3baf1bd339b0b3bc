//! Windows waiting for the disk: kept in memory while the store refuses them (a full
//! disk), written oldest first when it takes them again, and at most [`MAX_PENDING`] of
//! them, the oldest dropped beyond that (said, and counted in
//! `sprofd_windows_dropped_total`).

use std::collections::VecDeque;
use std::time::SystemTime;

use sprof_store::WindowStore;

use super::metrics::Metrics;

/// Windows kept in memory while the disk refuses them.
pub const MAX_PENDING: usize = 60;

/// One encoded window and its range.
struct Window {
    start: SystemTime,
    end: SystemTime,
    bytes: Vec<u8>,
}

pub struct PendingWindows {
    windows: VecDeque<Window>,
    cap: usize,
}

impl PendingWindows {
    pub fn new(cap: usize) -> PendingWindows {
        PendingWindows {
            windows: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Queues a window; beyond the cap the oldest goes, said and counted.
    pub fn push(&mut self, start: SystemTime, end: SystemTime, bytes: Vec<u8>, m: &Metrics) {
        self.windows.push_back(Window { start, end, bytes });
        if self.windows.len() > self.cap {
            if let Some(w) = self.windows.pop_front() {
                m.windows_dropped.inc();
                eprintln!(
                    "sprofd: warning: dropped the window {}-{} (more than {} windows waiting for the disk)",
                    sprof_store::unix_millis(w.start),
                    sprof_store::unix_millis(w.end),
                    self.cap
                );
            }
        }
    }

    /// Writes the waiting windows, oldest first, until the store refuses one.
    pub fn flush(&mut self, store: &mut WindowStore, now: SystemTime, m: &Metrics) {
        while let Some(w) = self.windows.front() {
            match store.write(w.start, w.end, &w.bytes, now) {
                Ok(report) => {
                    m.windows_written.inc();
                    m.retention_deletions.inc_by(report.deleted as u64);
                    self.windows.pop_front();
                }
                Err(e) => {
                    m.window_write_errors.inc();
                    if self.windows.len() == 1 || !e.is_disk_full() {
                        eprintln!(
                            "sprofd: warning: {e}; keeping {} windows in memory and retrying",
                            self.windows.len()
                        );
                    }
                    break;
                }
            }
        }
        m.windows_stored.set(store.windows().len() as i64);
        m.stored_bytes
            .set(i64::try_from(store.total_bytes()).unwrap_or(i64::MAX));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The red-team review's D13: windows beyond the cap were dropped without a word; the
    /// oldest goes, counted, and the rest are written once the store takes them.
    #[test]
    fn beyond_the_cap_the_oldest_window_is_dropped_and_counted() {
        let dir = std::env::temp_dir().join(format!("sprofd-pending-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let retention = sprof_store::Retention {
            max_age: Duration::from_secs(86400 * 365 * 100),
            max_bytes: 1 << 30,
        };
        let (mut store, _) = WindowStore::open(&dir, retention).unwrap();
        let m = Metrics::new();
        let mut pending = PendingWindows::new(3);
        let at = |i: u64| UNIX_EPOCH + Duration::from_secs(1_796_000_000 + 10 * i);
        let bytes = super::super::sampling::encode(&Default::default(), at(0)).unwrap();
        for i in 0..5 {
            pending.push(at(i), at(i + 1), bytes.clone(), &m);
        }
        assert_eq!(pending.len(), 3);
        assert_eq!(m.windows_dropped.get(), 2);
        pending.flush(&mut store, SystemTime::now(), &m);
        assert_eq!(pending.len(), 0);
        assert_eq!(m.windows_written.get(), 3);
        // The oldest went: what is stored starts at the third window.
        let first = store.windows().iter().map(|w| w.start_ms).min();
        assert_eq!(first, Some(sprof_store::unix_millis(at(2))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
