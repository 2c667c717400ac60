//! `ripcord incidents --since 30d --format md|csv`: a period's incidents
//! with the review's durations, for the quarter's review of reviews.

use std::fmt::Write as _;

use super::Review;
use crate::time::Dur;

const COLUMNS: [&str; 13] = [
    "incident",
    "opened",
    "tier",
    "severity",
    "rule",
    "where",
    "to detect",
    "to decide",
    "to approve",
    "to start the rollback",
    "to roll back",
    "to recover",
    "budgets missed",
];

fn cells(r: &Review) -> Vec<String> {
    let i = &r.incident;
    let whom: Vec<String> = i
        .labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let span = |name: &str| {
        r.spans
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.took)
            .map_or_else(String::new, |d: Dur| super::human(d))
    };
    let missed: Vec<&str> = r.missed().iter().map(|b| b.name.as_str()).collect();
    vec![
        i.id.clone(),
        i.opened_at.to_string(),
        i.tier.clone(),
        i.severity.clone(),
        i.rule.clone(),
        whom.join(","),
        span("to detect"),
        span("to decide"),
        span("to approve"),
        span("to start the rollback"),
        span("to roll back"),
        span("to recover"),
        missed.join("; "),
    ]
}

pub fn markdown(reviews: &[Review]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(COLUMNS.len()));
    for r in reviews {
        let row: Vec<String> = cells(r).iter().map(|c| crate::text::markdown(c)).collect();
        let _ = writeln!(o, "| {} |", row.join(" | "));
    }
    o
}

/// One CSV cell (RFC 4180). A cell a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or CR) gets a leading `'`.
pub fn csv_cell(s: &str) -> String {
    let s = crate::text::one_line(s);
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.into_owned()
    };
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn csv(reviews: &[Review]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", COLUMNS.join(","));
    for r in reviews {
        let row: Vec<String> = cells(r).iter().map(|c| csv_cell(c)).collect();
        let _ = writeln!(o, "{}", row.join(","));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("web"), "web");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("-1+2"), "'-1+2");
        assert_eq!(csv_cell("line\nbreak"), "line\\u{a}break");
    }
}
