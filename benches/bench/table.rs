//! Markdown tables and the statistics printed in them.

use std::time::Duration;

/// A Markdown table printed once all rows are in.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table under a `##` title.
    pub fn new(title: impl Into<String>, headers: &[impl AsRef<str>]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.as_ref().to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        println!("## {}\n", self.title);
        println!("| {} |", self.headers.join(" | "));
        let rule: Vec<&str> = self.headers.iter().map(|_| "---:").collect();
        println!("|{}|", rule.join("|"));
        for row in &self.rows {
            println!("| {} |", row.join(" | "));
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("{note}");
            }
        }
        println!();
    }
}

/// The rates of repeated runs of `n` items, each taking one of `seconds`: `812,345, 799,001`.
pub fn run_rates(n: u64, seconds: impl IntoIterator<Item = f64>) -> String {
    let all: Vec<String> = seconds.into_iter().map(|s| rate(n as f64 / s)).collect();
    all.join(", ")
}

/// A count with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate rounded to a whole number with separators.
pub fn rate(per_second: f64) -> String {
    thousands(per_second.round().max(0.0) as u64)
}

/// Milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The `q` quantile (0..=1) of sorted samples, nearest-rank.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `PASS`/`MISS` against a target, for the notes under a table.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
