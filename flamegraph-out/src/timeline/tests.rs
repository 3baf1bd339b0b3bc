use sprof_core::{Frame, FrameKind, ProfileMeta, ResourceSeries, SampledStack, TimedSample};

use super::*;

const MIB: u64 = 1 << 20;
const START: u64 = 7_000_000_000;

/// A reading `ms` after the start: `anon` MiB of heap, 4 MiB of code, half a core busy.
fn reading(ms: u64, anon: u64) -> ResourcePoint {
    ResourcePoint {
        time: START + ms * 1_000_000,
        rss_anon: anon * MIB,
        rss_file: 4 * MIB,
        rss_shmem: 0,
        rss_hwm: 0,
        cpu_ns: ms * 500_000,
    }
}

fn process(pid: u32, comm: &str, points: Vec<ResourcePoint>) -> ProcessResources {
    ProcessResources {
        pid,
        comm: comm.into(),
        points,
    }
}

fn profile(processes: Vec<ProcessResources>) -> SymbolizedProfile {
    SymbolizedProfile {
        meta: ProfileMeta {
            target: "./grow (pid 42)".into(),
            duration_secs: 2.0,
            resources: ResourceSeries {
                start: START,
                interval: 50_000_000,
                processes,
                processes_left_out: 0,
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn render(p: &SymbolizedProfile) -> String {
    let mut out = Vec::new();
    TimelineSvg.export(p, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    // Well-formed XML, every element closed.
    let mut reader = quick_xml::Reader::from_str(&text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not XML: {e}\n{text}"),
        }
    }
    text
}

/// The numbers of every peak label (`<text class="peak" …>peak N MiB…`).
fn peaks(svg: &str) -> Vec<f64> {
    svg.split(r#"class="peak""#)
        .skip(1)
        .filter_map(|s| s.split(">peak ").nth(1)?.split(" MiB").next()?.parse().ok())
        .collect()
}

/// Grows to 200 MiB of heap in 2 s, then frees half.
fn growing() -> Vec<ResourcePoint> {
    let mut points: Vec<ResourcePoint> = (0..=40).map(|i| reading(i * 50, i * 5)).collect();
    points.extend((41..60).map(|i| reading(i * 50, 100)));
    points
}

#[test]
fn one_process_stacks_its_memory_and_labels_the_peak() {
    let svg = render(&profile(vec![process(42, "grow", growing())]));
    assert_eq!(peaks(&svg), [204.0], "200 MiB heap + 4 MiB code");
    assert!(svg.contains("peak 204.0 MiB at 2.00 s"), "{svg}");
    for area in ["area anon", "area file", "area shmem"] {
        assert_eq!(svg.matches(area).count(), 1, "{area}");
    }
    assert_eq!(svg.matches(r#"class="rss""#).count(), 1);
    // Half a core, over 200 ms spans.
    let cpu = svg.split(r#"class="cpu""#).nth(1).expect("a CPU line");
    assert!(cpu.contains("points="));
    assert!(svg.contains("total resident memory of pid 42 grow"));
    assert!(!svg.contains("<script"), "self-contained, no script");
}

#[test]
fn several_processes_get_a_line_each() {
    let child = |pid, mib: u64| {
        process(
            pid,
            "child",
            (0..20).map(|i| reading(i * 50, mib)).collect(),
        )
    };
    let svg = render(&profile(vec![
        process(1, "parent", growing()),
        child(2, 120),
        child(3, 40),
    ]));
    assert_eq!(svg.matches(r#"class="rss""#).count(), 3);
    assert_eq!(svg.matches(r#"class="legend""#).count(), 3);
    assert!(!svg.contains("area anon"), "no stacked areas for several");
    let mut seen = peaks(&svg);
    seen.sort_by(f64::total_cmp);
    assert_eq!(seen, [44.0, 124.0, 204.0]);
    assert!(svg.contains("pid 2 child · peak 124.0 MiB"), "{svg}");
}

#[test]
fn text_from_the_processes_is_escaped() {
    let hostile = "<script>alert(1)</script>&\"\x1b]2;x\x07\u{FFFF}";
    let mut p = profile(vec![
        process(42, hostile, growing()),
        process(43, hostile, growing()),
    ]);
    p.meta.target = hostile.into();
    p.frames = vec![Frame::bare(hostile, FrameKind::Native)];
    p.stacks = vec![SampledStack {
        frames: vec![0],
        samples: 1,
        period: 1,
        thread: None,
    }];
    p.timeline = vec![TimedSample {
        time: START + 1,
        stack: 0,
        weight: 1,
    }];
    let svg = render(&p);
    assert!(!svg.contains("<script"));
    assert!(!svg.contains('\x1b') && !svg.contains('\x07') && !svg.contains('\u{FFFF}'));
    assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;"));
    assert!(
        svg.contains(r#"class="marker""#),
        "the hostile function is marked, escaped"
    );
}

#[test]
fn no_readings_give_a_note() {
    let svg = render(&profile(Vec::new()));
    assert!(svg.contains("No resident-memory readings"), "{svg}");
    let svg = render(&profile(vec![process(1, "gone", Vec::new())]));
    assert!(svg.contains("No resident-memory readings"));
}

#[test]
fn a_single_reading_is_drawn() {
    let svg = render(&profile(vec![process(9, "brief", vec![reading(0, 10)])]));
    assert_eq!(peaks(&svg), [14.0]);
    assert!(
        !svg.contains(r#"class="cpu""#),
        "no CPU use from one reading"
    );
}

#[test]
fn hot_functions_are_marked_with_their_share() {
    let mut p = profile(vec![process(42, "grow", growing())]);
    p.frames = vec![
        Frame::bare("grow", FrameKind::Root),
        Frame::bare("touch_pages", FrameKind::Native),
        Frame::bare("spin", FrameKind::Native),
        Frame::bare("main", FrameKind::Native),
    ];
    let stack = |frames: Vec<u32>| SampledStack {
        frames,
        samples: 1,
        period: 1,
        thread: None,
    };
    p.stacks = vec![stack(vec![0, 3, 1]), stack(vec![0, 2])];
    // touch_pages alone in the first second; spin alone after 2 s.
    p.timeline = (0..3000u64)
        .filter(|ms| *ms < 1000 || *ms >= 2000)
        .map(|ms| TimedSample {
            time: START + ms * 1_000_000,
            stack: u32::from(ms >= 2000),
            weight: 1_000_000,
        })
        .collect();
    p.meta.duration_secs = 3.0;
    let svg = render(&p);
    assert_eq!(svg.matches(r#"class="marker""#).count(), 2);
    assert!(svg.contains(r#"data-function="touch_pages" data-caller="main""#));
    assert!(
        svg.contains("main → touch_pages: 100% of the samples in"),
        "{svg}"
    );
    assert!(svg.contains("100% of the samples in"), "{svg}");
    let from = |name: &str| -> f64 {
        let at = svg
            .find(&format!(r#"class="marker" data-function="{name}""#))
            .unwrap();
        let rest = &svg[at..];
        let v = rest.split("data-from=\"").nth(1).unwrap();
        v[..v.find('"').unwrap()].parse().unwrap()
    };
    assert!(from("touch_pages") < 1.0 && from("spin") >= 2.0);
}

#[test]
fn long_series_stay_small() {
    let mut r = sprof_core::ResourceRecorder::new(START, 50_000_000);
    let slot = r.add_process(1, "hour").unwrap();
    // An hour at 20 readings a second.
    for i in 0..72_000u64 {
        r.push(slot, reading(i * 50, (i % 1000) / 10));
    }
    let mut p = profile(Vec::new());
    p.meta.resources = r.series();
    p.meta.duration_secs = 3600.0;
    let svg = render(&p);
    assert!(svg.len() < 400_000, "{} bytes", svg.len());
    assert_eq!(peaks(&svg), [103.0]);
}

#[test]
fn memory_profiles_mark_growth_in_mib() {
    let mut p = profile(vec![process(42, "grow", growing())]);
    p.meta.measure = Measure::Memory;
    p.frames = vec![
        Frame::bare("[kept]", FrameKind::Root),
        Frame::bare("grow_big", FrameKind::Native),
        Frame::bare("write_kept", FrameKind::Native),
        Frame::bare("grow_small", FrameKind::Native),
    ];
    let stack = |frames: Vec<u32>| SampledStack {
        frames,
        samples: 1,
        period: 1,
        thread: None,
    };
    p.stacks = vec![stack(vec![0, 1, 2]), stack(vec![0, 3, 2])];
    // 256 KiB a sample: grow_big 30 MiB at 0.5 s, grow_small 10 MiB at 1.5 s.
    let at = |secs: f64, stack: u32, mib: u64| {
        (0..mib * 4).map(move |i| TimedSample {
            time: START + (secs * 1e9) as u64 + i * 1000,
            stack,
            weight: 256 << 10,
        })
    };
    p.timeline = at(0.5, 0, 30).chain(at(1.5, 1, 10)).collect();
    let svg = render(&p);
    // Stretches of 2.95 s / 40: the one holding 0.5 s, and the one holding 1.5 s.
    assert!(
        svg.contains("grow_big → write_kept: +30.0 MiB in 0.44–0.52 s (100% of the growth then)"),
        "{svg}"
    );
    assert!(svg.contains("grow_small → write_kept: +10.0 MiB in 1.48–1.55 s"));
    assert!(svg.contains("markers: heaviest functions by new resident memory"));
}

#[test]
fn a_peak_between_readings_shows_as_the_high_water_mark() {
    let mut points = growing();
    points.last_mut().unwrap().rss_hwm = 300 * MIB;
    let svg = render(&profile(vec![process(42, "spiky", points)]));
    assert_eq!(peaks(&svg), [204.0], "the drawn peak is the readings'");
    assert!(svg.contains(" · high-water mark 300.0 MiB"), "{svg}");
    let svg = render(&profile(vec![process(42, "steady", growing())]));
    assert!(!svg.contains("high-water"));
}

#[test]
fn cpu_use_is_averaged_over_spans_of_200_ms() {
    // Half a core, read every 50 ms for 0.5 s: two whole spans and a last one of 100 ms.
    let points: Vec<ResourcePoint> = (0..=10).map(|i| reading(i * 50, 1)).collect();
    let steps = cpu_steps(START, &points);
    let spans: Vec<(f64, f64)> = steps.chunks(2).map(|c| (c[0].0, c[1].0)).collect();
    assert_eq!(spans, [(0.0, 0.2), (0.2, 0.4), (0.4, 0.5)]);
    assert!(steps.iter().all(|s| (s.1 - 50.0).abs() < 1e-9), "{steps:?}");
    assert!(
        cpu_steps(START, &points[..2]).is_empty(),
        "50 ms is too short"
    );
}
