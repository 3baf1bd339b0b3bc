//! The RSS readings of a window ([`super::rss`]) in the window's own file.
//!
//! They are one more field of the window's pprof `Profile` message, 1901 (far above pprof's
//! own, 1 to 15, so that no field pprof adds takes it), in a second
//! gzip member appended to the file. A gzip reader decompresses members one after another
//! (flate2's `MultiGzDecoder`, which the store and `read_pprof` use, as do Go's and Python's
//! readers) and a protobuf message's fields may come in any order, so the file still decodes
//! as one `Profile`, in which pprof readers (`go tool pprof`, `read_pprof`) skip the field
//! they do not know. The store needs no change of what a window is: one file, written by one
//! atomic rename, listed, bounded, counted by retention and quarantined as before. A window
//! written before (or without readings) has no such member and no series.
//!
//! Times are unix milliseconds, each stored as the difference to the one before; sizes are
//! KiB, as `/proc` counts them.

use std::io::Write;

use sprof_core::SymbolizedProfile;
use sprof_store::{StoreError, StoredWindow, WindowStore};

use super::rss::{ProcessRss, RssPoint, MAX_POINTS};

/// Processes one window's series may have (a reading a second of [`super::rss::MAX_PROCESSES`]
/// is far fewer); a file with more is read up to this.
const MAX_SERIES: usize = 10_000;

/// The extension as a message of its own (field 1901 of `Profile`): decoding a whole window
/// with it skips every pprof field.
#[derive(Clone, PartialEq, prost::Message)]
struct Extension {
    #[prost(message, repeated, tag = "1901")]
    rss: Vec<Series>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Series {
    #[prost(uint32, tag = "1")]
    pid: u32,
    #[prost(uint32, optional, tag = "2")]
    uid: Option<u32>,
    #[prost(string, tag = "3")]
    comm: String,
    /// The first reading's time, then each one's difference to the one before.
    #[prost(sint64, repeated, tag = "4")]
    t_ms: Vec<i64>,
    #[prost(uint64, repeated, tag = "5")]
    anon_kib: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    file_kib: Vec<u64>,
    #[prost(uint64, repeated, tag = "7")]
    shmem_kib: Vec<u64>,
}

/// The gzip member to append to a window's file; empty when there are no readings (the
/// file is then what it was before the series existed).
pub fn encode(series: &[ProcessRss]) -> Vec<u8> {
    use prost::Message;
    if series.iter().all(|s| s.points.is_empty()) {
        return Vec::new();
    }
    let ext = Extension {
        rss: series
            .iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| {
                let mut last = 0i64;
                let t_ms = s
                    .points
                    .iter()
                    .map(|p| {
                        let t = i64::try_from(p.t_ms).unwrap_or(i64::MAX);
                        let d = t.saturating_sub(last);
                        last = t;
                        d
                    })
                    .collect();
                let kib = |f: fn(&RssPoint) -> u64| s.points.iter().map(|p| f(p) / 1024).collect();
                Series {
                    pid: s.pid,
                    uid: s.uid,
                    comm: s.comm.clone(),
                    t_ms,
                    anon_kib: kib(|p| p.anon),
                    file_kib: kib(|p| p.file),
                    shmem_kib: kib(|p| p.shmem),
                }
            })
            .collect(),
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into memory cannot fail.
    let _ = gz.write_all(&ext.encode_to_vec());
    gz.finish().unwrap_or_default()
}

/// The series in a decompressed window (pprof fields skipped), at most [`MAX_SERIES`]
/// processes and [`MAX_POINTS`] readings. A window without them, or whose extension does not
/// decode, has none: its profile is read all the same.
pub fn decode(raw: &[u8]) -> Vec<ProcessRss> {
    use prost::Message;
    let Ok(ext) = Extension::decode(raw) else {
        return Vec::new();
    };
    let mut points = 0usize;
    let mut out = Vec::new();
    for s in ext.rss.into_iter().take(MAX_SERIES) {
        let n = s
            .t_ms
            .len()
            .min(s.anon_kib.len())
            .min(s.file_kib.len())
            .min(s.shmem_kib.len())
            .min(MAX_POINTS - points);
        let mut t = 0i64;
        let mut series = Vec::with_capacity(n);
        for i in 0..n {
            t = t.saturating_add(s.t_ms[i]);
            let Ok(t_ms) = u64::try_from(t) else { continue };
            let bytes = |kib: u64| kib.saturating_mul(1024);
            series.push(RssPoint {
                t_ms,
                anon: bytes(s.anon_kib[i]),
                file: bytes(s.file_kib[i]),
                shmem: bytes(s.shmem_kib[i]),
            });
        }
        points += series.len();
        if !series.is_empty() {
            out.push(ProcessRss {
                pid: s.pid,
                uid: s.uid,
                comm: s.comm,
                points: series,
            });
        }
    }
    out
}

/// A stored window's profile and series, from one read of its file.
pub fn load_window(w: &StoredWindow) -> Result<(SymbolizedProfile, Vec<ProcessRss>), StoreError> {
    let raw = WindowStore::load_raw(w)?;
    let profile = flamegraph_out::read_pprof(&raw).map_err(|e| StoreError::Corrupt {
        path: w.path.clone(),
        reason: e.to_string(),
    })?;
    Ok((profile, decode(&raw)))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn series() -> Vec<ProcessRss> {
        let p = |t_ms, mib: u64| RssPoint {
            t_ms,
            anon: mib << 20,
            file: 3 << 20,
            shmem: 4096,
        };
        vec![
            ProcessRss {
                pid: 42,
                uid: Some(1000),
                comm: "grow".into(),
                points: vec![
                    p(1_796_000_001_000, 10),
                    p(1_796_000_002_000, 150),
                    p(1_796_000_003_000, 150),
                ],
            },
            ProcessRss {
                pid: 7,
                uid: None,
                comm: "<db>".into(),
                points: vec![p(1_796_000_002_000, 1)],
            },
        ]
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
        raw
    }

    /// A window with its series appended still reads as the same pprof (here and in the
    /// store), gives the series back, and one without gives none.
    #[test]
    fn the_series_ride_along_in_the_window_and_pprof_readers_skip_them() {
        let profile = SymbolizedProfile {
            frames: vec![sprof_core::Frame::bare("grow", sprof_core::FrameKind::Root)],
            stacks: vec![sprof_core::SampledStack {
                frames: vec![0],
                samples: 5,
                period: 50,
                thread: Some(sprof_core::ThreadRef { pid: 42, tid: 42 }),
            }],
            ..Default::default()
        };
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let plain = super::super::sampling::encode(&profile, start).unwrap();
        let mut with = plain.clone();
        with.extend(encode(&series()));
        assert!(encode(&[]).is_empty());
        let a = flamegraph_out::read_pprof(&plain).unwrap();
        let b = flamegraph_out::read_pprof(&with).unwrap();
        assert_eq!(a.total_samples(), 5);
        assert_eq!(a.stacks, b.stacks);
        assert_eq!(decode(&gunzip(&with)), series());
        // Field 1901, length-delimited: the varint of 1901 << 3 | 2.
        assert_eq!(gunzip(&encode(&series()))[..2], [0xea, 0x76]);
        assert!(decode(&gunzip(&plain)).is_empty());
        // Through the store, as the summaries read it.
        let dir = std::env::temp_dir().join(format!("sprofd-rss-window-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let retention = sprof_store::Retention {
            max_age: std::time::Duration::from_secs(86400 * 365 * 100),
            max_bytes: 1 << 30,
        };
        let (mut store, _) = WindowStore::open(&dir, retention).unwrap();
        let end = start + std::time::Duration::from_secs(10);
        store
            .write(start, end, &with, std::time::SystemTime::now())
            .unwrap();
        let w = store.windows()[0].clone();
        let (p, s) = load_window(&w).unwrap();
        assert_eq!((p.total_samples(), s), (5, series()));
        assert_eq!(WindowStore::load(&w).unwrap().total_samples(), 5);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Mutated extensions never panic and stay within the caps.
    #[test]
    fn mutated_series_decode_to_something_bounded_or_nothing() {
        use sprofd_tests::fuzz;
        let seed = gunzip(&encode(&series()));
        let mut rng = fuzz::Rng::new(19);
        for _ in 0..fuzz::iterations(3000) {
            let raw = fuzz::mutate(&mut rng, &seed);
            let s = decode(&raw);
            assert!(s.len() <= MAX_SERIES);
            assert!(s.iter().map(|p| p.points.len()).sum::<usize>() <= MAX_POINTS);
        }
    }
}
