//! How every command prints: tables (comfy-table, one look for all), JSON lines (serde_json),
//! and the progress bar's style (indicatif).

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
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
