//! How every command prints: tables (comfy-table, one look for all), JSON lines (serde_json),
//! the progress bar's style (indicatif), and horizontal bar charts (plotters).

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::Serialize;

use crate::CliResult;

/// A table with these column headers, in Markdown's shape (it pastes into a README as it is):
/// the first column left-aligned, the others right-aligned (numbers), none wrapped.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_cell_alignment(if i == 0 {
            CellAlignment::Left
        } else {
            CellAlignment::Right
        });
    }
    t
}

/// Left-aligns column `i` (a column of words, such as "what happened").
pub(crate) fn left(t: &mut Table, i: usize) {
    if let Some(c) = t.column_mut(i) {
        c.set_cell_alignment(CellAlignment::Left);
    }
}

/// Prints one JSON object on its own line.
pub(crate) fn json_line(value: &impl Serialize) -> CliResult {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// The progress bar of the long measurements (on stderr, so that stdout stays the report).
pub(crate) fn progress(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// One bar of [`hbars`]: its label, its value (`None`: no bar), its colour.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) value: Option<f64>,
    pub(crate) color: RGBAColor,
}

/// Draws `bars` on `area` as horizontal bars, top to bottom in their order, the values along
/// the x axis (described by `unit`), the labels `label_width` pixels wide.
pub(crate) fn hbars(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    unit: &str,
    bars: &[Bar],
    label_width: u32,
) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let n = bars.len();
    // A segmented range of 0..k has k + 1 segments: k = n - 1 for n bars.
    let last = n.saturating_sub(1);
    let top = bars
        .iter()
        .filter_map(|b| b.value)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0.0..top, (0..last).into_segmented())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars
                .get(last - (*i).min(last))
                .map_or(String::new(), |b| b.label.clone()),
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
            let row = last - i;
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (b.value?, SegmentValue::Exact(row + 1)),
                ],
                b.color.filled(),
            );
            bar.set_margin(6, 6, 0, 0);
            Some(bar)
        }))
        .map_err(|x| e(&x))?;
    Ok(())
}
