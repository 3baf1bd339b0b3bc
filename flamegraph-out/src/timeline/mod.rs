//! `.timeline.svg`: the profiled processes' resident memory and CPU use over time, as
//! `mprof plot` draws them, from [`sprof_core::ProfileMeta::resources`].
//!
//! Time runs along x in seconds since the readings started. The upper panel is resident
//! memory in MiB: for one process, anon, file and shmem stacked with the total on top; for
//! several, one line per process (legend: pid, name, peak). The peak is marked and labelled
//! in MiB (for several processes, the largest [`MAX_PEAK_LABELS`]), with the kernel's
//! high-water mark (`VmHWM`) beside it when that is 5% higher: a peak between two readings. The lower panel is CPU
//! use in percent of one core, from the CPU counter between readings at least
//! [`CPU_SPAN_NS`] apart (the kernel counts CPU time in 10 ms ticks). Numbered markers show
//! where the heaviest functions weighed most ([`markers`]), explained under the legend.
//!
//! Self-contained (no script, font or image). Every text that comes from the processes
//! passes through [`chart::xml_text`].

mod chart;
mod markers;

use std::io::{self, BufWriter, Write};

use sprof_core::{Measure, ProcessResources, ResourcePoint, SymbolizedProfile};

use crate::svg::{percent, sanitize, write_empty};
use crate::{ExportError, Exporter};
use chart::{fmt_tick, mib, nice_ticks, points, xml_text, Scale};
use markers::HotSpot;

/// The timeline chart exporter.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimelineSvg;

/// Most processes whose peak is labelled on the chart (every one is in the legend).
pub const MAX_PEAK_LABELS: usize = 8;

/// Shortest span CPU use is computed over, nanoseconds.
pub const CPU_SPAN_NS: u64 = 200_000_000;

/// Functions marked on the chart.
const HOT_SPOTS: usize = 3;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 1160.0;
const MEM_TOP: f64 = 84.0;
const MEM_BOTTOM: f64 = 400.0;
const CPU_TOP: f64 = 430.0;
const CPU_BOTTOM: f64 = 550.0;
const LEGEND_TOP: f64 = 610.0;
/// Where marker badges sit: above the memory panel, clear of the peak's label.
const BADGE_Y: f64 = MEM_TOP - 13.0;
const ROW: f64 = 18.0;
/// Longest name shown, in characters.
const MAX_NAME: usize = 100;

/// Line colours of processes, in turn (then again, dashed).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];
/// One process's anon, file and shmem areas, and its total and CPU lines.
const AREAS: [(&str, &str); 3] = [
    ("anon", "#9ecae1"),
    ("file", "#a1d99b"),
    ("shmem", "#dadaeb"),
];
const TOTAL_COLOUR: &str = "#08519c";
const CPU_COLOUR: &str = "#d95f02";

const STYLE: &str = "text{font-family:Verdana,sans-serif;font-size:12px;fill:#222}\
.title{font-size:17px;text-anchor:middle}.subtitle{fill:#555;text-anchor:middle}\
.axis{font-size:11px;fill:#555}.grid{stroke:#e4e4e4}.frame{fill:none;stroke:#999}\
.peak{font-weight:bold}.rss,.cpu{fill:none;stroke-linejoin:round}.rss{stroke-width:2}\
.cpu{stroke-width:1.5}.marker line{stroke:#c00;stroke-dasharray:4 3}.marker circle{fill:#c00}\
.marker text{fill:#fff;font-weight:bold;font-size:11px;text-anchor:middle}";

impl Exporter for TimelineSvg {
    fn export(&self, profile: &SymbolizedProfile, out: &mut dyn Write) -> Result<(), ExportError> {
        let mut w = BufWriter::new(out);
        write_chart(&mut w, profile)?;
        w.flush()?;
        Ok(())
    }
}

/// Everything drawn, in pixels' terms.
struct Chart<'p> {
    profile: &'p SymbolizedProfile,
    processes: Vec<&'p ProcessResources>,
    /// Seconds since the start, to x.
    x: Scale,
    x_step: f64,
    /// MiB, to y.
    mem: Scale,
    mem_step: f64,
    /// Percent of a core, to y.
    cpu: Scale,
    cpu_step: f64,
    /// Per process: (seconds, percent) corners of its CPU steps.
    cpu_lines: Vec<Vec<(f64, f64)>>,
    spots: Vec<HotSpot>,
}

fn write_chart(w: &mut dyn Write, profile: &SymbolizedProfile) -> io::Result<()> {
    let meta = &profile.meta;
    let target = if meta.target.is_empty() {
        "sprofd profile"
    } else {
        &meta.target
    };
    let title = format!("Resident memory and CPU use: {target}");
    let processes: Vec<&ProcessResources> = meta
        .resources
        .processes
        .iter()
        .filter(|p| !p.points.is_empty())
        .collect();
    if processes.is_empty() {
        return write_empty(
            w,
            &sanitize(&title),
            None,
            "No resident-memory readings: they are taken by record, attach and top while a .timeline.svg is asked for.",
        );
    }
    let chart = Chart::new(profile, processes);
    let notes = chart.notes();
    let legend_rows = chart.legend_rows();
    let height = LEGEND_TOP + (legend_rows + chart.spots.len() + notes.len()) as f64 * ROW + 30.0;
    writeln!(
        w,
        r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">
<style>{STYLE}</style>
<rect width="100%" height="100%" fill="white"/>
<text class="title" x="{mid}" y="26">{}</text>
<text class="subtitle" x="{mid}" y="48">{}</text>"#,
        xml_text(&title, 2 * MAX_NAME),
        xml_text(&chart.subtitle(), 2 * MAX_NAME),
        mid = WIDTH / 2.0,
    )?;
    chart.write_axes(w)?;
    chart.write_memory(w)?;
    chart.write_cpu(w)?;
    chart.write_markers(w)?;
    let mut y = LEGEND_TOP;
    chart.write_legend(w, &mut y)?;
    for (i, spot) in chart.spots.iter().enumerate() {
        writeln!(
            w,
            r#"<text class="key" x="{LEFT}" y="{y}"><tspan style="font-weight:bold;fill:#c00">{n}</tspan> {name}: {what}</text>"#,
            n = i + 1,
            name = spot_name(spot),
            what = xml_text(&spot_text(spot, meta.measure), MAX_NAME),
        )?;
        y += ROW;
    }
    for note in notes {
        writeln!(
            w,
            r#"<text class="note axis" x="{LEFT}" y="{y}">{}</text>"#,
            xml_text(&note, 4 * MAX_NAME)
        )?;
        y += ROW;
    }
    writeln!(w, "</svg>")
}

/// A marked function as the key shows it, XML-escaped: `caller → function`.
fn spot_name(spot: &HotSpot) -> String {
    let function = xml_text(&spot.function, MAX_NAME);
    match &spot.caller {
        Some(caller) => format!("{} → {function}", xml_text(caller, MAX_NAME)),
        None => function,
    }
}

/// What a marker says of its function's stretch.
fn spot_text(spot: &HotSpot, measure: Measure) -> String {
    let when = format!("{:.2}–{:.2} s", spot.from, spot.to);
    let share = percent(spot.weight, spot.stretch_total);
    match measure {
        Measure::Cpu => format!("{share:.0}% of the samples in {when}"),
        Measure::Wall | Measure::OffCpu => format!("{share:.0}% of on-CPU time in {when}"),
        Measure::Memory => format!(
            "+{} MiB in {when} ({share:.0}% of the growth then)",
            mib(spot.weight)
        ),
    }
}

/// Seconds from `start` to `p`.
fn secs(start: u64, p: &ResourcePoint) -> f64 {
    p.time.saturating_sub(start) as f64 / 1e9
}

/// A process's CPU use as steps: percent of one core between readings at least
/// [`CPU_SPAN_NS`] apart.
fn cpu_steps(start: u64, points: &[ResourcePoint]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let Some(mut from) = points.first() else {
        return out;
    };
    for (i, p) in points.iter().enumerate().skip(1) {
        let span = p.time.saturating_sub(from.time);
        // The last readings close a last, shorter span (at least half of one).
        let last = i + 1 == points.len() && span >= CPU_SPAN_NS / 2;
        if span < CPU_SPAN_NS && !last {
            continue;
        }
        let pct = p.cpu_ns.saturating_sub(from.cpu_ns) as f64 * 100.0 / span as f64;
        out.push((secs(start, from), pct));
        out.push((secs(start, p), pct));
        from = p;
    }
    out
}

impl<'p> Chart<'p> {
    fn new(profile: &'p SymbolizedProfile, processes: Vec<&'p ProcessResources>) -> Chart<'p> {
        let series = &profile.meta.resources;
        let last = processes
            .iter()
            .filter_map(|p| p.points.last())
            .map(|p| secs(series.start, p))
            .fold(0.0, f64::max);
        let end = last.max(profile.meta.duration_secs).max(0.1);
        // The data fills the width; ticks stop at the last round second before the end.
        let (x_step, _) = nice_ticks(end, 10);
        let peak = processes
            .iter()
            .filter_map(|p| p.peak())
            .map(|p| p.rss())
            .max()
            .unwrap_or(0);
        let (mem_step, mem_top) = nice_ticks(peak as f64 / (1u64 << 20) as f64 * 1.08, 6);
        let cpu_lines: Vec<Vec<(f64, f64)>> = processes
            .iter()
            .map(|p| cpu_steps(series.start, &p.points))
            .collect();
        let cpu_max = cpu_lines
            .iter()
            .flatten()
            .map(|c| c.1)
            .fold(100.0, f64::max);
        let (cpu_step, cpu_top) = nice_ticks(cpu_max, 4);
        let scale = |d1, r0, r1| Scale {
            d0: 0.0,
            d1,
            r0,
            r1,
        };
        Chart {
            profile,
            processes,
            x: scale(end, LEFT, RIGHT),
            x_step,
            mem: scale(mem_top, MEM_BOTTOM, MEM_TOP),
            mem_step,
            cpu: scale(cpu_top, CPU_BOTTOM, CPU_TOP),
            cpu_step,
            cpu_lines,
            spots: markers::hot_spots(profile, series.start, end, HOT_SPOTS),
        }
    }

    fn start(&self) -> u64 {
        self.profile.meta.resources.start
    }

    fn single(&self) -> bool {
        self.processes.len() == 1
    }

    fn subtitle(&self) -> String {
        let meta = &self.profile.meta;
        let n = self.processes.len();
        let mut s = format!(
            "{:.2} s · {n} process{} · read every {} ms or less",
            meta.duration_secs,
            if n == 1 { "" } else { "es" },
            meta.resources.interval / 1_000_000
        );
        if !self.spots.is_empty() {
            s += &format!(
                " · markers: heaviest functions by {}",
                meta.measure.describe()
            );
        }
        s
    }

    fn notes(&self) -> Vec<String> {
        let meta = &self.profile.meta;
        let mut notes = Vec::new();
        if meta.resources.processes_left_out > 0 {
            notes.push(format!(
                "{} more processes were not followed (at most {} are).",
                meta.resources.processes_left_out,
                sprof_core::resources::MAX_PROCESSES
            ));
        }
        if self.profile.timeline.is_empty() && meta.stats.samples > 0 {
            notes.push(
                "Functions are not marked: the profile kept no sample times (off-CPU time has none)."
                    .into(),
            );
        }
        notes
    }

    fn legend_rows(&self) -> usize {
        if self.single() {
            1
        } else {
            self.processes.len().div_ceil(2)
        }
    }

    fn colour(&self, i: usize) -> (&'static str, &'static str) {
        if self.single() {
            return (TOTAL_COLOUR, "");
        }
        let dash = if i >= PALETTE.len() {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        (PALETTE[i % PALETTE.len()], dash)
    }

    /// Grid lines, tick labels, panel frames and axis titles.
    fn write_axes(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, r#"<g id="axes">"#)?;
        for (scale, step, top, bottom) in [
            (self.mem, self.mem_step, MEM_TOP, MEM_BOTTOM),
            (self.cpu, self.cpu_step, CPU_TOP, CPU_BOTTOM),
        ] {
            let mut v = 0.0;
            while v <= scale.d1 + step * 1e-6 {
                let y = scale.at(v);
                writeln!(
                    w,
                    r#"<line class="grid" x1="{LEFT}" x2="{RIGHT}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 6.0,
                    y + 4.0,
                    fmt_tick(v, step)
                )?;
                v += step;
            }
            let mut t = 0.0;
            while t <= self.x.d1 + self.x_step * 1e-6 {
                let x = self.x.at(t);
                writeln!(
                    w,
                    r#"<line class="grid" x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{bottom}"/>"#
                )?;
                t += self.x_step;
            }
            writeln!(
                w,
                r#"<rect class="frame" x="{LEFT}" y="{top}" width="{}" height="{}"/>"#,
                RIGHT - LEFT,
                bottom - top
            )?;
        }
        let mut t = 0.0;
        while t <= self.x.d1 + self.x_step * 1e-6 {
            writeln!(
                w,
                r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                self.x.at(t),
                CPU_BOTTOM + 16.0,
                fmt_tick(t, self.x_step)
            )?;
            t += self.x_step;
        }
        let (mem_mid, cpu_mid) = ((MEM_TOP + MEM_BOTTOM) / 2.0, (CPU_TOP + CPU_BOTTOM) / 2.0);
        writeln!(
            w,
            r#"<text class="axis" transform="translate(24,{mem_mid}) rotate(-90)" text-anchor="middle">resident memory (MiB)</text>
<text class="axis" transform="translate(24,{cpu_mid}) rotate(-90)" text-anchor="middle">CPU (% of a core)</text>
<text class="axis" x="{}" y="{}" text-anchor="middle">seconds since start</text>
</g>"#,
            (LEFT + RIGHT) / 2.0,
            CPU_BOTTOM + 34.0
        )
    }

    fn xy(&self, p: &ResourcePoint, bytes: u64) -> (f64, f64) {
        let x = self.x.at(secs(self.start(), p));
        (x, self.mem.at(bytes as f64 / (1u64 << 20) as f64))
    }

    /// The memory panel: stacked areas (one process) or lines, and the peaks.
    fn write_memory(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, r#"<g id="memory">"#)?;
        if self.single() {
            let pts = &self.processes[0].points;
            let parts = |p: &ResourcePoint| [p.rss_anon, p.rss_file, p.rss_shmem];
            let mut below = vec![0u64; pts.len()];
            for (k, (name, colour)) in AREAS.iter().enumerate() {
                let above: Vec<u64> = pts
                    .iter()
                    .zip(&below)
                    .map(|(p, b)| b + parts(p)[k])
                    .collect();
                let upper = pts.iter().zip(&above).map(|(p, &v)| self.xy(p, v));
                let lower = pts.iter().zip(&below).rev().map(|(p, &v)| self.xy(p, v));
                writeln!(
                    w,
                    r#"<polygon class="area {name}" fill="{colour}" points="{}"/>"#,
                    points(upper.chain(lower))
                )?;
                below = above;
            }
        }
        for (i, p) in self.processes.iter().enumerate() {
            let (colour, dash) = self.colour(i);
            writeln!(
                w,
                r#"<polyline class="rss" data-pid="{pid}" stroke="{colour}"{dash} points="{}"><title>pid {pid} {}</title></polyline>"#,
                points(p.points.iter().map(|q| self.xy(q, q.rss()))),
                xml_text(&p.comm, MAX_NAME),
                pid = p.pid,
            )?;
        }
        let mut by_peak: Vec<(usize, &ResourcePoint)> = self
            .processes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.peak()?)))
            .collect();
        by_peak.sort_by_key(|&(i, p)| (std::cmp::Reverse(p.rss()), i));
        for &(i, peak) in by_peak.iter().take(MAX_PEAK_LABELS) {
            self.write_peak(w, i, peak)?;
        }
        writeln!(w, "</g>")
    }

    fn write_peak(&self, w: &mut dyn Write, i: usize, peak: &ResourcePoint) -> io::Result<()> {
        let (x, y) = self.xy(peak, peak.rss());
        let anchor = if x > RIGHT - 160.0 {
            "end"
        } else if x < LEFT + 160.0 {
            "start"
        } else {
            "middle"
        };
        let (colour, _) = self.colour(i);
        let pid = self.processes[i].pid;
        let whose = if self.single() {
            format!(" at {:.2} s", secs(self.start(), peak))
        } else {
            format!(" (pid {pid})")
        };
        // A peak between two readings (a spike, growth just before exit) shows only in the
        // kernel's high-water mark.
        let hwm = self.processes[i].high_water_mark();
        let between = if hwm > peak.rss() + peak.rss() / 20 {
            format!(
                r#"<tspan class="hwm"> · high-water mark {} MiB</tspan>"#,
                mib(hwm)
            )
        } else {
            String::new()
        };
        writeln!(
            w,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{colour}"/><text class="peak" data-pid="{pid}" x="{x:.1}" y="{:.1}" text-anchor="{anchor}" style="fill:{colour}">peak {} MiB{whose}{between}</text>"#,
            y - 9.0,
            mib(peak.rss())
        )
    }

    /// The CPU panel: one step line per process.
    fn write_cpu(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, r#"<g id="cpu">"#)?;
        for (i, (p, line)) in self.processes.iter().zip(&self.cpu_lines).enumerate() {
            if line.is_empty() {
                continue;
            }
            let (colour, dash) = if self.single() {
                (CPU_COLOUR, "")
            } else {
                self.colour(i)
            };
            let max = line.iter().map(|c| c.1).fold(0.0, f64::max);
            writeln!(
                w,
                r#"<polyline class="cpu" data-pid="{}" data-max-percent="{max:.0}" stroke="{colour}"{dash} points="{}"/>"#,
                p.pid,
                points(
                    line.iter()
                        .map(|&(t, pct)| (self.x.at(t), self.cpu.at(pct)))
                )
            )?;
        }
        writeln!(w, "</g>")
    }

    /// Numbered markers where the heaviest functions weighed most.
    fn write_markers(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(w, r#"<g id="markers">"#)?;
        for (i, spot) in self.spots.iter().enumerate() {
            let x = self.x.at((spot.from + spot.to) / 2.0);
            // Badges of markers in the same stretch go side by side.
            let same = self.spots[..i]
                .iter()
                .filter(|s| (s.from - spot.from).abs() < 1e-9)
                .count();
            let (cx, cy) = (x + 20.0 * same as f64, BADGE_Y);
            writeln!(
                w,
                r#"<g class="marker" data-function="{}" data-caller="{}" data-from="{:.3}" data-to="{:.3}"><title>{name}: {}</title><line x1="{x:.1}" x2="{x:.1}" y1="{cy:.1}" y2="{CPU_BOTTOM}"/><circle cx="{cx:.1}" cy="{cy:.1}" r="9"/><text x="{cx:.1}" y="{:.1}">{}</text></g>"#,
                xml_text(&spot.function, MAX_NAME),
                xml_text(spot.caller.as_deref().unwrap_or(""), MAX_NAME),
                spot.from,
                spot.to,
                xml_text(&spot_text(spot, self.profile.meta.measure), MAX_NAME),
                cy + 4.0,
                i + 1,
                name = spot_name(spot),
            )?;
        }
        writeln!(w, "</g>")
    }

    /// What each colour is; moves `y` past it.
    fn write_legend(&self, w: &mut dyn Write, y: &mut f64) -> io::Result<()> {
        writeln!(w, r#"<g id="legend">"#)?;
        let swatch = |w: &mut dyn Write, x: f64, y: f64, colour: &str| {
            writeln!(
                w,
                r#"<rect x="{x}" y="{:.1}" width="14" height="10" fill="{colour}"/>"#,
                y - 9.0
            )
        };
        if self.single() {
            let p = self.processes[0];
            let mut x = LEFT;
            for (name, colour) in AREAS {
                swatch(w, x, *y, colour)?;
                writeln!(w, r#"<text x="{}" y="{y}">{name}</text>"#, x + 18.0)?;
                x += 80.0;
            }
            swatch(w, x, *y, TOTAL_COLOUR)?;
            writeln!(
                w,
                r#"<text class="legend" data-pid="{pid}" x="{}" y="{y}">total resident memory of pid {pid} {}</text>"#,
                x + 18.0,
                xml_text(&p.comm, MAX_NAME),
                pid = p.pid
            )?;
            swatch(w, RIGHT - 150.0, *y, CPU_COLOUR)?;
            writeln!(w, r#"<text x="{}" y="{y}">CPU use</text>"#, RIGHT - 132.0)?;
            *y += ROW;
        } else {
            for (i, p) in self.processes.iter().enumerate() {
                let x = if i % 2 == 0 {
                    LEFT
                } else {
                    (LEFT + RIGHT) / 2.0
                };
                let row = *y + (i / 2) as f64 * ROW;
                swatch(w, x, row, self.colour(i).0)?;
                let cpu = match (p.points.first(), p.points.last()) {
                    (Some(a), Some(b)) => b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9,
                    _ => 0.0,
                };
                writeln!(
                    w,
                    r#"<text class="legend" data-pid="{pid}" x="{}" y="{row}">pid {pid} {} · peak {} MiB · CPU {cpu:.2} s</text>"#,
                    x + 18.0,
                    xml_text(&p.comm, 40),
                    p.peak().map_or_else(|| "0".into(), |q| mib(q.rss())),
                    pid = p.pid
                )?;
            }
            *y += self.legend_rows() as f64 * ROW;
        }
        writeln!(w, "</g>")
    }
}

#[cfg(test)]
mod tests;
