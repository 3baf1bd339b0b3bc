//! The flame graph SVG: well-formed XML, interactive, with the expected frames and subtitle.

mod common;

use flamegraph_out::{default_subtitle, Exporter, Svg};
use quick_xml::events::Event;
use quick_xml::Reader;
use sprof_core::SymbolizedProfile;

/// The SVG's `<title>` and `<text>` contents plus its element names, failing on malformed XML.
struct Parsed {
    titles: Vec<String>,
    texts: Vec<String>,
    elements: Vec<String>,
}

fn parse(svg: &str) -> Parsed {
    let mut reader = Reader::from_str(svg);
    let mut open: Vec<String> = Vec::new();
    let mut parsed = Parsed {
        titles: Vec::new(),
        texts: Vec::new(),
        elements: Vec::new(),
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                parsed.elements.push(name.clone());
                open.push(name);
            }
            Ok(Event::Empty(e)) => {
                parsed
                    .elements
                    .push(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
            }
            Ok(Event::End(e)) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                assert_eq!(
                    open.pop().as_deref(),
                    Some(name.as_str()),
                    "mismatched end tag"
                );
            }
            Ok(Event::Text(t)) => {
                let text = t.unescape().expect("valid escapes").into_owned();
                match open.last().map(String::as_str) {
                    Some("title") => parsed.titles.push(text),
                    Some("text") => parsed.texts.push(text),
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("malformed SVG at {}: {e}", reader.buffer_position()),
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert_eq!(parsed.elements.first().map(String::as_str), Some("svg"));
    parsed
}

fn render(svg: &Svg, profile: &SymbolizedProfile) -> String {
    let mut out = Vec::new();
    svg.export(profile, &mut out).expect("SVG export");
    String::from_utf8(out).unwrap()
}

#[test]
fn flame_graph_has_frames_title_subtitle_and_script() {
    let profile = common::mixed();
    let svg = render(&Svg::default(), &profile);
    let parsed = parse(&svg);

    let has_title = |name: &str| {
        parsed
            .titles
            .iter()
            .any(|t| t.starts_with(&format!("{name} (")))
    };
    for name in [
        "cratio",
        "worker-1",
        "main",
        "compress",
        "recurse",
        "memcpy", // inferno strips `_[i]` for display
        "<[u8: 8] as core::fmt::Debug>::fmt",
        "do_syscall_64",
        "ksys_write",
        "[truncated]",
        "libz.so.1+0x3f20",
        "[unknown]",
        "write",
    ] {
        assert!(
            has_title(name),
            "no <title> for {name}: {:#?}",
            parsed.titles
        );
    }
    assert!(
        parsed.titles.iter().any(|t| t == "all (100 samples, 100%)"),
        "{:#?}",
        parsed.titles
    );
    // Merged stacks: main;compress;fmt has 25 + 2 samples.
    assert!(
        parsed
            .titles
            .iter()
            .any(|t| t == "<[u8: 8] as core::fmt::Debug>::fmt (27 samples, 27.00%)"),
        "{:#?}",
        parsed.titles
    );

    let subtitle = default_subtitle(&profile.meta);
    assert_eq!(
        subtitle,
        "1.02 s at 99 Hz (cpu-clock) · 100 samples · 3 lost (2.9%) · 5 truncated stacks (5.0%) \
         · 1 throttled"
    );
    assert!(parsed.texts.contains(&subtitle), "{:#?}", parsed.texts);
    assert!(
        parsed
            .texts
            .iter()
            .any(|t| t == "sprofd: ./cratio (pid 4242)"),
        "{:#?}",
        parsed.texts
    );
    // Interactive: inferno's search and zoom script is embedded.
    assert!(parsed.elements.iter().any(|e| e == "script"));
    assert!(
        svg.contains("function search("),
        "search JavaScript missing"
    );
}

#[test]
fn custom_title_and_subtitle() {
    let svg = Svg {
        title: Some("A & B".into()),
        subtitle: Some("<sub>".into()),
    };
    let parsed = parse(&render(&svg, &common::mixed()));
    assert!(parsed.texts.iter().any(|t| t == "A & B"));
    assert!(parsed.texts.iter().any(|t| t == "<sub>"));
}

#[test]
fn output_is_deterministic() {
    let profile = common::mixed();
    assert_eq!(
        render(&Svg::default(), &profile),
        render(&Svg::default(), &profile)
    );
}

#[test]
fn empty_profile_gives_a_valid_note() {
    let profile = common::empty();
    let parsed = parse(&render(&Svg::default(), &profile));
    assert!(
        parsed.texts.iter().any(|t| t == "sprofd: ./idle (pid 7)"),
        "{:#?}",
        parsed.texts
    );
    assert!(
        parsed.texts.contains(&default_subtitle(&profile.meta)),
        "{:#?}",
        parsed.texts
    );
    assert!(parsed.texts.iter().any(|t| t == "No samples recorded."));

    // Stacks with zero samples, or no frames, draw nothing either.
    let mut zero = common::mixed();
    for s in &mut zero.stacks {
        s.samples = 0;
    }
    zero.stacks[0].frames.clear();
    parse(&render(&Svg::default(), &zero));
    parse(&render(&Svg::default(), &SymbolizedProfile::default()));
}
