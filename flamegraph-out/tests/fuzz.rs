//! Mutated pprof files (what `sprofd diff` and `report` read, and what the daemon's stored
//! windows are) never panic the reader: raw protobuf, and gzip of mutated protobuf.

mod common;

use std::io::Write;
use std::time::Duration;

use flamegraph_out::{read_pprof, Exporter, Pprof};
use sprofd_tests::fuzz;

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(raw).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

#[test]
fn mutated_pprof_files_are_read_without_panics() {
    let mut gz = Vec::new();
    Pprof::default()
        .export(&common::mixed(), &mut gz)
        .expect("export");
    let raw = flamegraph_out::decode_pprof(&gz).expect("own output decodes");
    let raw = prost::Message::encode_to_vec(&raw);
    let iters = fuzz::iterations(3000);
    fuzz::run(
        "pprof",
        std::slice::from_ref(&raw),
        iters,
        Duration::from_secs(1),
        |input| {
            let _ = read_pprof(input);
        },
    );
    // Through gzip: the decoder's bound and the protobuf reader behind it.
    fuzz::run(
        "pprof-gz",
        &[raw],
        iters / 4,
        Duration::from_secs(1),
        |input| {
            let _ = read_pprof(&gzip(input));
        },
    );
    fuzz::run(
        "pprof-gz-stream",
        &[gz],
        iters,
        Duration::from_secs(1),
        |input| {
            let _ = read_pprof(input);
        },
    );
}
