//! The daemon's Prometheus metrics (`GET /metrics`), in the text exposition format, through
//! the `prometheus-client` crate.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Every metric, updated by the sampling thread and the HTTP handlers.
pub struct Metrics {
    registry: Registry,
    pub samples: Counter,
    pub lost: Counter,
    pub dropped: Counter,
    pub lost_side_records: Counter,
    pub mmaps_skipped: Counter,
    pub queued: Gauge,
    pub truncated: Counter,
    pub over_limit: Counter,
    pub processes: Gauge,
    pub processes_evicted: Counter,
    pub windows_written: Counter,
    pub window_write_errors: Counter,
    pub window_encode_errors: Counter,
    pub windows_dropped: Counter,
    pub windows_stored: Gauge,
    pub stored_bytes: Gauge,
    pub retention_deletions: Counter,
    pub corrupt_windows: Counter,
    pub unwind_seconds: Histogram,
    pub requests: Counter,
    pub bad_requests: Counter,
    pub busy_requests: Counter,
    pub connections: Gauge,
    pub connections_refused: Counter,
    pub connections_closed_idle: Counter,
    cpu_seconds: Counter<f64, AtomicU64>,
    cpu_seen: Mutex<f64>,
    phase_cpu: Family<PhaseLabel, Counter<f64, AtomicU64>>,
    rss_bytes: Gauge,
    rss_reader: super::rss::ReaderMetrics,
}

/// Where the daemon's own CPU goes (`sprofd_phase_cpu_seconds_total{phase=...}`): each
/// phase is timed by the CPU clock of the thread doing it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Phase {
    /// The drain thread: copying records out of the ring buffers.
    Drain,
    /// The engine on the sampling thread: unwinding, Python reads, and the /proc and
    /// module reads for processes seen for the first time.
    Events,
    /// Naming a slice's frames (the sampling thread and the symbolizer's workers).
    Symbolize,
    /// Labelling a slice's processes from /proc, and their memory readings.
    Labels,
    /// Encoding a window as gzipped pprof.
    Encode,
    /// Writing windows to the store.
    Write,
}

impl EncodeLabelValue for Phase {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Phase::Drain => "drain",
            Phase::Events => "events",
            Phase::Symbolize => "symbolize",
            Phase::Labels => "labels",
            Phase::Encode => "encode",
            Phase::Write => "write",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    phase: Phase,
}

/// Registers metrics on one registry, one line each.
struct Reg(Registry);

impl Reg {
    fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.0.register(name, help, c.clone());
        c
    }

    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>) -> Gauge {
        let g = Gauge::default();
        match unit {
            Some(unit) => self.0.register_with_unit(name, help, unit, g.clone()),
            None => self.0.register(name, help, g.clone()),
        }
        g
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Reg(Registry::with_prefix("sprofd"));
        let samples = r.counter("samples", "Samples taken");
        let lost = r.counter(
            "lost_samples",
            "Samples the kernel dropped (ring buffer full)",
        );
        let dropped = r.counter(
            "dropped_samples",
            "Samples the drain thread dropped because the engine fell behind by more than its queue holds",
        );
        let lost_side_records = r.counter(
            "lost_side_records",
            "Side records lost to an mmap flood: dropped by the kernel from their own ring buffer, or mmap records dropped from the full queue to the engine; maps are read again for processes sampled in unknown code",
        );
        let mmaps_skipped = r.counter(
            "mmaps_skipped",
            "Mmap records skipped because their process was over its budget per second (its maps are read again later)",
        );
        let queued = r.gauge(
            "queued",
            "Bytes of drained records waiting for the engine",
            Some(Unit::Bytes),
        );
        let truncated = r.counter(
            "truncated_stacks",
            "Samples whose stack walk stopped before the root",
        );
        let over_limit = r.counter(
            "over_limit_samples",
            "Samples counted in [other] because a window reached its cap on unique stacks",
        );
        let processes = r.gauge(
            "processes_tracked",
            "Processes whose address space the daemon keeps",
            None,
        );
        let processes_evicted = r.counter(
            "processes_evicted",
            "Address spaces dropped to stay within the cap on tracked processes",
        );
        let windows_written = r.counter("windows_written", "Windows written to disk");
        let window_write_errors = r.counter(
            "window_write_errors",
            "Windows that could not be written (kept in memory and retried)",
        );
        let window_encode_errors = r.counter(
            "window_encode_errors",
            "Windows that could not be encoded as pprof (not stored; the log says which)",
        );
        let windows_dropped = r.counter(
            "windows_dropped",
            "Windows lost because more than 60 were waiting for the disk (the oldest go)",
        );
        let windows_stored = r.gauge("windows_stored", "Windows on disk", None);
        let stored_bytes = r.gauge("stored", "Bytes of windows on disk", Some(Unit::Bytes));
        let retention_deletions = r.counter(
            "retention_deletions",
            "Windows deleted by retention (age or size)",
        );
        let corrupt_windows = r.counter(
            "corrupt_windows",
            "Window files that could not be read and were moved aside",
        );
        let requests = r.counter("http_requests", "HTTP requests answered");
        let bad_requests = r.counter("http_bad_requests", "HTTP requests answered with a 4xx");
        let busy_requests = r.counter(
            "http_busy_requests",
            "Requests answered 503 because too many scrapes or long range queries were running",
        );
        let connections = r.gauge("http_connections", "HTTP connections open now", None);
        let connections_refused = r.counter(
            "http_connections_refused",
            "Connections closed at once: the cap on connections was reached and none was idle",
        );
        let connections_closed_idle = r.counter(
            "http_connections_closed_idle",
            "Connections closed without a request in progress: idle or slow past the timeout, or the oldest idle one when the cap was reached",
        );
        let rss_bytes = r.gauge(
            "process_resident_memory",
            "The daemon's resident set size",
            Some(Unit::Bytes),
        );
        let mut registry = r.0;
        // 1 µs to ~16 ms.
        let unwind_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register_with_unit(
            "unwind",
            "Time to walk one sample's stack",
            Unit::Seconds,
            unwind_seconds.clone(),
        );
        // 100 µs to ~0.2 s: a round stops at 0.1 s.
        let rss_reader = super::rss::ReaderMetrics {
            round_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 12)),
            skipped: Counter::default(),
            dropped: Counter::default(),
        };
        registry.register_with_unit(
            "rss_round",
            "Time to read the resident memory of the window's most sampled processes",
            Unit::Seconds,
            rss_reader.round_seconds.clone(),
        );
        registry.register(
            "rss_skipped_reads",
            "Processes whose memory was not read because their round ran out of time",
            rss_reader.skipped.clone(),
        );
        registry.register(
            "rss_dropped_readings",
            "Memory readings dropped because the window in progress held the most it keeps",
            rss_reader.dropped.clone(),
        );
        let phase_cpu = Family::<PhaseLabel, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "phase_cpu",
            "CPU time the daemon used, by what it was doing (drain, events, symbolize, labels, encode, write; the rest is HTTP and start-up)",
            Unit::Seconds,
            phase_cpu.clone(),
        );
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time the daemon itself used (user + system)",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        Metrics {
            registry,
            samples,
            lost,
            dropped,
            lost_side_records,
            mmaps_skipped,
            queued,
            truncated,
            over_limit,
            processes,
            processes_evicted,
            windows_written,
            window_write_errors,
            window_encode_errors,
            windows_dropped,
            windows_stored,
            stored_bytes,
            retention_deletions,
            corrupt_windows,
            unwind_seconds,
            requests,
            bad_requests,
            busy_requests,
            connections,
            connections_refused,
            connections_closed_idle,
            cpu_seconds,
            cpu_seen: Mutex::new(0.0),
            phase_cpu,
            rss_bytes,
            rss_reader,
        }
    }

    /// Counts `cpu` of the daemon's CPU time as spent in `phase`.
    pub fn add_phase_cpu(&self, phase: Phase, cpu: std::time::Duration) {
        if !cpu.is_zero() {
            self.phase_cpu
                .get_or_create(&PhaseLabel { phase })
                .inc_by(cpu.as_secs_f64());
        }
    }

    /// The memory reader's counters (shared: they count where the reader runs).
    pub fn rss_reader(&self) -> super::rss::ReaderMetrics {
        self.rss_reader.clone()
    }

    /// The text exposition of every metric, the daemon's own CPU and RSS read now.
    pub fn render(&self) -> String {
        if let Some((cpu, rss)) = own_usage() {
            let mut seen = self.cpu_seen.lock().unwrap_or_else(|e| e.into_inner());
            if cpu > *seen {
                self.cpu_seconds.inc_by(cpu - *seen);
                *seen = cpu;
            }
            self.rss_bytes.set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// This process's CPU seconds (user + system, all threads) and resident bytes.
pub fn own_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 11 and 12 after the state field.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which the kernel fixes at 100 on every architecture.
    let hz = 100.0;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        ticks as f64 / hz,
        pages * sprof_perf::sys::page_size() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_unit() {
        let m = Metrics::new();
        m.samples.inc_by(7);
        m.unwind_seconds.observe(3e-6);
        m.add_phase_cpu(Phase::Events, std::time::Duration::from_millis(3));
        let text = m.render();
        for name in [
            "sprofd_samples_total 7",
            "sprofd_lost_samples_total",
            "sprofd_truncated_stacks_total",
            "sprofd_processes_tracked",
            "sprofd_windows_stored",
            "sprofd_stored_bytes",
            "sprofd_retention_deletions_total",
            "sprofd_windows_dropped_total",
            "sprofd_http_connections_refused_total",
            "sprofd_http_connections_closed_idle_total",
            "sprofd_http_busy_requests_total",
            "sprofd_unwind_seconds_bucket",
            "sprofd_process_cpu_seconds_total",
            "sprofd_phase_cpu_seconds_total{phase=\"events\"}",
            "sprofd_process_resident_memory_bytes",
            "sprofd_rss_round_seconds_bucket",
            "sprofd_rss_skipped_reads_total",
            "sprofd_rss_dropped_readings_total",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
