//! A bounded mutation fuzzer for the readers of untrusted input: each run mutates seed
//! inputs (bit flips, interesting values, cut, repeated and inserted blocks) with a seeded
//! generator, so a failure reproduces, and hands them to the reader under test, which must
//! neither panic nor hang. `make test` runs a few thousand inputs per reader in seconds;
//! `make fuzz` sets `SPROFD_FUZZ_ITERS` for a longer run. A panicking input is saved under
//! `target/fuzz-failures/` and named in the failure.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Inputs per reader: `SPROFD_FUZZ_ITERS`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("SPROFD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: small, seeded, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// One to eight mutations of `seed`.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(b.len());
        // In place most of the time: a shifted or cut file fails its first bounds check,
        // which is worth trying but teaches little.
        match rng.below(20) {
            0..=5 => b[at] ^= 1 << rng.below(8),
            6..=10 => b[at] = rng.next_u64() as u8,
            11..=16 => {
                // An interesting value, little-endian, 1, 2, 4 or 8 bytes wide.
                let width = 1 << rng.below(4);
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                for (i, byte) in v.iter().take(width).enumerate() {
                    if let Some(slot) = b.get_mut(at + i) {
                        *slot = *byte;
                    }
                }
            }
            17 => b.truncate(at),
            18 => {
                let len = rng.below(64).min(b.len() - at);
                let block = b[at..at + len].to_vec();
                let to = rng.below(b.len());
                b.splice(to..to, block);
            }
            _ => {
                let len = rng.below(16);
                let block: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, block);
            }
        }
    }
    b
}

/// Feeds `iters` mutations of `seeds` to `reader`. Fails, naming the saved input, on the
/// first panic or on an input that takes longer than `slowest`.
pub fn run(name: &str, seeds: &[Vec<u8>], iters: usize, slowest: Duration, reader: impl Fn(&[u8])) {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = Rng::new(0x5eed ^ name.len() as u64);
    let mut failure = None;
    for i in 0..iters {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| reader(&input)));
        let took = t0.elapsed();
        if outcome.is_err() || took > slowest {
            let dir = crate::workspace_root().join("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{i}.bin"));
            let _ = std::fs::write(&path, &input);
            failure = Some(format!(
                "{name}: input {i} {} (saved as {})",
                if outcome.is_err() {
                    "panicked".to_string()
                } else {
                    format!("took {took:?}")
                },
                path.display()
            ));
            break;
        }
    }
    if let Some(f) = failure {
        panic!("{f}");
    }
}
