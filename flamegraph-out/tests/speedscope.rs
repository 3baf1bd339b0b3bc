//! The speedscope exporter: the JSON parsed back and checked against the required keys of
//! speedscope's file format schema (`file-format-schema.json`, checked by hand here: no
//! network), per-thread profiles, frame indices and weights.

mod common;

use std::collections::HashMap;

use common::{FullDisk, ENOSPC, PERIOD_NS};
use flamegraph_out::{
    folded_lines, ExportError, Exporter, OutputFormat, Speedscope, SPEEDSCOPE_SCHEMA,
};
use serde_json::Value;
use sprof_core::SymbolizedProfile;

fn export(profile: &SymbolizedProfile) -> Value {
    let mut out = Vec::new();
    Speedscope
        .export(profile, &mut out)
        .expect("export to memory");
    serde_json::from_slice(&out).expect("valid JSON")
}

/// The keys the schema knows for an object, and those it requires.
fn check_keys(what: &str, v: &Value, required: &[&str], optional: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is an object"));
    for key in required {
        assert!(obj.contains_key(*key), "{what} lacks required {key:?}");
    }
    for key in obj.keys() {
        assert!(
            required.contains(&key.as_str()) || optional.contains(&key.as_str()),
            "{what} has {key:?}, which the schema does not define"
        );
    }
}

/// Checks a file against the schema's `FileFormat.File`, `Frame` and `SampledProfile`
/// definitions; returns the frame names.
fn check_schema(file: &Value) -> Vec<String> {
    check_keys(
        "the file",
        file,
        &["$schema", "shared", "profiles"],
        &["name", "activeProfileIndex", "exporter"],
    );
    assert_eq!(file["$schema"], SPEEDSCOPE_SCHEMA);
    assert_eq!(
        SPEEDSCOPE_SCHEMA,
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert!(file["name"].is_string());
    let exporter = file["exporter"].as_str().unwrap();
    assert_eq!(exporter, concat!("sprofd ", env!("CARGO_PKG_VERSION")));
    check_keys("shared", &file["shared"], &["frames"], &[]);
    let frames = file["shared"]["frames"].as_array().expect("frames array");
    let mut names = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        check_keys(
            &format!("frame {i}"),
            frame,
            &["name"],
            &["file", "line", "col"],
        );
        names.push(
            frame["name"]
                .as_str()
                .expect("name is a string")
                .to_string(),
        );
        if let Some(file) = frame.get("file") {
            assert!(file.is_string());
        }
        if let Some(line) = frame.get("line") {
            assert!(line.is_u64());
        }
    }
    let profiles = file["profiles"].as_array().expect("profiles array");
    assert!(!profiles.is_empty());
    let active = file["activeProfileIndex"].as_u64().unwrap() as usize;
    assert!(active < profiles.len());
    for (i, profile) in profiles.iter().enumerate() {
        let what = format!("profile {i}");
        check_keys(
            &what,
            profile,
            &[
                "type",
                "name",
                "unit",
                "startValue",
                "endValue",
                "samples",
                "weights",
            ],
            &[],
        );
        assert_eq!(profile["type"], "sampled");
        assert!(profile["name"].is_string());
        let unit = profile["unit"].as_str().unwrap();
        assert!(
            [
                "none",
                "nanoseconds",
                "microseconds",
                "milliseconds",
                "seconds",
                "bytes"
            ]
            .contains(&unit),
            "{unit}"
        );
        let samples = profile["samples"].as_array().unwrap();
        let weights = profile["weights"].as_array().unwrap();
        assert_eq!(samples.len(), weights.len(), "{what}");
        for sample in samples {
            for index in sample.as_array().expect("a sample is an array") {
                let index = index.as_u64().expect("frame indices are integers") as usize;
                assert!(index < frames.len(), "{what}: frame {index} out of range");
            }
        }
        let total: u64 = weights.iter().map(|w| w.as_u64().unwrap()).sum();
        assert_eq!(profile["startValue"], 0);
        assert_eq!(profile["endValue"].as_u64(), Some(total), "{what}");
    }
    names
}

/// Folded lines rebuilt from a file: the profile name's `process: thread` as the root
/// frames, then the sample's frame names, weighted by `per_weight`.
fn refolded(file: &Value, names: &[String], per_weight: u64) -> Vec<String> {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for profile in file["profiles"].as_array().unwrap() {
        let roots = profile["name"].as_str().unwrap().replace(": ", ";");
        let samples = profile["samples"].as_array().unwrap();
        let weights = profile["weights"].as_array().unwrap();
        for (sample, weight) in samples.iter().zip(weights) {
            let mut key = roots.clone();
            for i in sample.as_array().unwrap() {
                key.push(';');
                key.push_str(&names[i.as_u64().unwrap() as usize]);
            }
            *merged.entry(key).or_default() += weight.as_u64().unwrap() / per_weight;
        }
    }
    let mut lines: Vec<String> = merged
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    lines.sort_unstable();
    lines
}

#[test]
fn file_matches_the_schema() {
    let file = export(&common::mixed());
    check_schema(&file);
    assert_eq!(file["name"], "sprofd: ./cratio (pid 4242)");
    assert_eq!(file["activeProfileIndex"], 0);
}

#[test]
fn one_profile_per_thread_busiest_first() {
    let profile = common::mixed();
    let file = export(&profile);
    check_schema(&file);
    let profiles = file["profiles"].as_array().unwrap();
    let summary: Vec<(&str, &str, u64, usize)> = profiles
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["unit"].as_str().unwrap(),
                p["endValue"].as_u64().unwrap(),
                p["samples"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("cratio", "nanoseconds", 85 * PERIOD_NS, 6),
            ("cratio: worker-1", "nanoseconds", 15 * PERIOD_NS, 1),
        ]
    );
    let total: u64 = summary.iter().map(|s| s.2).sum();
    assert_eq!(
        total,
        profile.total_period(),
        "weights sum to the total period"
    );
}

#[test]
fn frames_are_labelled_as_in_folded_stacks_without_roots() {
    let profile = common::mixed();
    let file = export(&profile);
    let names = check_schema(&file);
    for root in ["cratio", "worker-1"] {
        assert!(!names.iter().any(|n| n == root), "root {root} is no frame");
    }
    let frames = file["shared"]["frames"].as_array().unwrap();
    let frame = |name: &str| {
        frames
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("a frame {name}"))
    };
    let memcpy = frame("memcpy_[i]");
    assert_eq!(memcpy["file"], "/usr/include/bits/string_fortified.h");
    assert_eq!(memcpy["line"], 29);
    frame("do_syscall_64_[k]");
    frame("<[u8: 8] as core::fmt::Debug>::fmt");
    let truncated = frame("[truncated]");
    assert!(truncated.get("file").is_none() && truncated.get("line").is_none());
    // Frames differing only in line stay apart; each (name, file, line) appears once.
    let mut seen = std::collections::HashSet::new();
    for f in frames {
        assert!(seen.insert((
            f["name"].to_string(),
            f["file"].to_string(),
            f["line"].to_string()
        )));
    }
    assert_eq!(names.iter().filter(|n| *n == "main").count(), 2);
    assert_eq!(names.iter().filter(|n| *n == "recurse").count(), 2);

    // Samples are root first: with the roots put back, they are the folded stacks.
    assert_eq!(
        refolded(&file, &names, PERIOD_NS),
        folded_lines(&profile).unwrap()
    );
}

#[test]
fn sample_counts_when_no_periods_were_kept() {
    let mut profile = common::mixed();
    for stack in &mut profile.stacks {
        stack.period = 0;
    }
    let file = export(&profile);
    let names = check_schema(&file);
    for p in file["profiles"].as_array().unwrap() {
        assert_eq!(p["unit"], "none");
    }
    let total: u64 = file["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["endValue"].as_u64().unwrap())
        .sum();
    assert_eq!(total, profile.total_samples());
    assert_eq!(refolded(&file, &names, 1), folded_lines(&profile).unwrap());
}

#[test]
fn stacks_without_roots_and_empty_profiles() {
    let mut profile = common::mixed();
    for stack in &mut profile.stacks {
        stack.frames.retain(|&f| f > 1);
    }
    let file = export(&profile);
    check_schema(&file);
    let profiles = file["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0]["name"], "sprofd: ./cratio (pid 4242)");
    assert_eq!(
        profiles[0]["endValue"].as_u64(),
        Some(profile.total_period())
    );

    // No samples at all: one empty profile, so activeProfileIndex still points at one.
    let file = export(&common::empty());
    check_schema(&file);
    let profiles = file["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0]["samples"].as_array().unwrap().len(), 0);
    assert_eq!(profiles[0]["unit"], "none");
    assert_eq!(file["shared"]["frames"].as_array().unwrap().len(), 0);
}

#[test]
fn output_is_deterministic_and_chosen_by_extension() {
    let profile = common::mixed();
    let render = |exporter: &dyn Exporter| {
        let mut out = Vec::new();
        exporter.export(&profile, &mut out).unwrap();
        out
    };
    let first = render(&Speedscope);
    assert_eq!(render(&Speedscope), first);
    let format = OutputFormat::from_path(std::path::Path::new("out/x.speedscope.json")).unwrap();
    assert_eq!(format, OutputFormat::Speedscope);
    assert_eq!(render(format.exporter().as_ref()), first);
}

#[test]
fn bad_frame_index_and_full_disk_are_errors() {
    let mut profile = common::mixed();
    profile.stacks[0].frames.push(77);
    assert!(matches!(
        Speedscope.export(&profile, &mut Vec::new()),
        Err(ExportError::BadFrameIndex { frame: 77, .. })
    ));

    let profile = common::mixed();
    let mut out = Vec::new();
    Speedscope.export(&profile, &mut out).unwrap();
    let size = out.len();
    for capacity in [0, 1, size / 2, size - 1] {
        match Speedscope.export(&profile, &mut FullDisk::new(capacity)) {
            Err(ExportError::Io(e)) => assert_eq!(e.raw_os_error(), Some(ENOSPC)),
            other => panic!("at {capacity}/{size}: expected an I/O error, got {other:?}"),
        }
    }
    Speedscope
        .export(&profile, &mut FullDisk::new(size))
        .expect("exactly enough room");
}
