//! Drawing `sprofd top` with ratatui: a header (target, counters, threads, keys) above the
//! table of functions. Everything shown comes from the view model.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::model::{SortKey, Top};

/// Threads named in the header.
const HEADER_THREADS: usize = 4;

/// What the header says besides the model's numbers.
pub struct Header<'a> {
    pub target: &'a str,
    pub frequency: u64,
    /// `--mode memory`: the header counts bytes grown, not a sampling rate.
    pub memory: bool,
    /// A line of its own under the counters, e.g. that the command's output is discarded.
    pub note: Option<&'a str>,
}

pub fn draw(frame: &mut Frame<'_>, top: &Top, header: &Header<'_>) {
    let lines = header_lines(top, header);
    let [head, body] =
        Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Min(0)])
            .areas(frame.area());
    frame.render_widget(Paragraph::new(lines), head);
    frame.render_widget(table(top, body.height.saturating_sub(1) as usize), body);
}

fn header_lines<'a>(top: &Top, header: &Header<'a>) -> Vec<Line<'a>> {
    let s = top.summary();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let lost = if s.lost > 0 {
        format!("{} lost ({} in the window)", s.lost, s.window_lost)
    } else {
        "0 lost".to_string()
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled("sprofd top", bold),
            Span::raw(format!(" · {}", header.target)),
        ]),
        Line::from(if header.memory {
            let bytes = sprof_core::Unit::Bytes;
            let span = if s.window >= s.elapsed {
                "since the start".to_string()
            } else {
                format!("over the last {} s", s.window.as_secs())
            };
            format!(
                "{:.0} s elapsed · {} page-fault samples · {} grown {span} · {lost}",
                s.elapsed.as_secs_f64(),
                s.samples,
                bytes.human(s.window_weight),
            )
        } else {
            format!(
                "{:.0} s elapsed · {} samples · {:.0} samples/s over the last {} s at {} Hz · {lost}",
                s.elapsed.as_secs_f64(),
                s.samples,
                s.rate,
                s.window.as_secs(),
                header.frequency,
            )
        }),
        Line::from(threads_line(top)),
    ];
    if let Some(note) = header.note {
        lines.push(Line::from(note.to_string()));
    }
    let view = if top.can_switch_view() {
        format!("view: {} (p)", top.view.name())
    } else {
        format!("view: {} (Python frames not read)", top.view.name())
    };
    lines.push(Line::from(vec![
        Span::styled(
            format!("sort: {} (s)", top.sort.label(top.window()).to_lowercase()),
            bold,
        ),
        Span::raw(format!(" · {view} · q quits")),
    ]));
    lines
}

fn threads_line(top: &Top) -> String {
    let threads = top.top_threads(HEADER_THREADS);
    let window = top.summary().window_samples;
    let mut line = format!("threads: {} sampled", top.threads_seen());
    for t in threads {
        let share = if window > 0 {
            t.samples as f64 * 100.0 / window as f64
        } else {
            0.0
        };
        let name = if t.name.is_empty() { "?" } else { &t.name };
        line.push_str(&format!(" · {name} ({}) {share:.0}%", t.tid));
    }
    line
}

fn table(top: &Top, rows: usize) -> Table<'static> {
    let window = top.window();
    let heading = |k: SortKey| {
        let label = k.label(window);
        if k == top.sort {
            Cell::from(format!("{label}*")).style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            Cell::from(label)
        }
    };
    let mut cells: Vec<Cell<'static>> = SortKey::ALL.into_iter().map(heading).collect();
    cells.push(Cell::from("FUNCTION"));
    let header = Row::new(cells).style(Style::new().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'static>> = top
        .rows()
        .into_iter()
        .take(rows)
        .map(|r| {
            let mut cells: Vec<Cell<'static>> = r.cells().into_iter().map(Cell::from).collect();
            cells.push(Cell::from(r.name));
            Row::new(cells)
        })
        .collect();
    let widths = [
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    Table::new(body, widths).header(header)
}
