//! The review as Markdown: what goes into the incident's ticket or wiki.
//! Text from events (labels, notes, names) is escaped: it shows, it never
//! makes a link, a heading or a table cell of its own.

use std::fmt::Write as _;

use super::{Review, Verdict};
use crate::text::markdown as md;
use crate::time::day_clock_words;

/// `2m30s`, or `-` when the moment never came.
fn dur(d: Option<crate::time::Dur>) -> String {
    d.map_or_else(|| "-".to_owned(), super::human)
}

pub fn render(r: &Review) -> String {
    let i = &r.incident;
    let mut o = String::new();
    let _ = writeln!(o, "# Incident review: {} (draft)\n", md(&i.id));
    if let Some(d) = &r.drill {
        let _ = writeln!(
            o,
            "> **DRILL**: played by `ripcord drill` ({}; event clock x{}). Nothing in production was affected.",
            md(&d.scenario),
            d.speed
        );
        for n in &d.notes {
            let _ = writeln!(o, "> - {}", md(n));
        }
        o.push('\n');
    }
    let labels: Vec<String> = i
        .labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}={}", md(k), md(v.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default();
    let value = r.value_vs_threshold().unwrap_or_else(|| "-".to_owned());
    let _ = writeln!(o, "| | |\n|---|---|");
    for (k, v) in [
        ("rule", md(&i.rule)),
        (
            "tier / severity",
            format!("{} / {}", md(&i.tier), md(&i.severity)),
        ),
        ("where", labels.join(", ")),
        // ripcord's own numbers: nothing to escape.
        ("value vs threshold", value),
        ("opened (breach)", crate::time::day_clock_words(i.opened_at)),
        (
            "resolved",
            i.resolved_at
                .map_or("not yet".into(), crate::time::day_clock_words),
        ),
        ("state", md(&i.state)),
        ("review drawn up", crate::time::day_clock_words(r.drawn_at)),
    ] {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    // The alert's own words (summary, description, runbook), as data.
    for (k, v) in &r.annotations {
        let _ = writeln!(o, "| {} | {} |", md(k), md(v));
    }

    if let Some(b) = &i.batch {
        let _ = writeln!(o, "\n## The batch: {}\n", md(&b.name()));
        let names = b.instances();
        let _ = writeln!(
            o,
            "{} of {} instances breached{}.\n",
            names.len(),
            b.size.max(b.batch_instances.len() as u32),
            if b.failed {
                "; the whole batch failed"
            } else {
                ""
            }
        );
        if !b.outside.is_empty() {
            let outside: Vec<&str> = b.outside.iter().map(|s| &**s).collect();
            let _ = writeln!(
                o,
                "Also breaching on {} instances not upgraded ({}): the fault may not have been the upgrade.\n",
                outside.len(),
                md(&crate::text::compact_names(&outside, 300))
            );
        }
        if let Some(scope) = r.approval.as_ref().and_then(|a| a.scope.as_ref()) {
            let _ = writeln!(o, "Approved blast radius: {}.\n", md(&scope.describe()));
        }
        let _ = writeln!(
            o,
            "| instance | rule | severity | joined | state |\n|---|---|---|---|---|"
        );
        for m in &b.members {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                if m.instance.is_empty() {
                    "(the batch as a whole)".to_owned()
                } else {
                    md(&m.instance)
                },
                md(&m.rule),
                m.severity,
                m.joined,
                if m.recovered {
                    "recovered"
                } else {
                    "breaching"
                }
            );
        }
    }

    let _ = writeln!(o, "\n## Timeline (UTC, from the journal)\n");
    let _ = writeln!(o, "| time | what |\n|---|---|");
    for m in &r.timeline {
        let _ = writeln!(o, "| {} | {} |", day_clock_words(m.at), md(&m.what));
    }

    let _ = writeln!(o, "\n## Durations\n");
    let _ = writeln!(o, "| step | from | to | took |\n|---|---|---|---|");
    for s in &r.spans {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            s.name,
            s.from,
            s.to,
            dur(s.took)
        );
    }

    let _ = writeln!(o, "\n## Budgets (the plan)\n");
    let _ = writeln!(
        o,
        "| budget | limit | measured | verdict |\n|---|---|---|---|"
    );
    for b in &r.budgets {
        let verdict = match b.verdict {
            Verdict::Missed => "**MISSED**".to_owned(),
            v => v.as_str().to_owned(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {verdict} |",
            b.name,
            b.limit,
            dur(b.measured)
        );
    }
    let names = |bs: Vec<&super::BudgetCheck>| {
        bs.iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (missed, open) = (r.missed(), r.still_open());
    if !missed.is_empty() {
        let _ = writeln!(o, "\nMissed: {}.", names(missed));
    }
    if !open.is_empty() {
        let _ = writeln!(o, "\nStill open (time left): {}.", names(open));
    }
    if r.budgets
        .iter()
        .all(|b| b.verdict != Verdict::Missed && b.verdict != Verdict::Open)
    {
        let _ = writeln!(o, "\nEvery budget met.");
    }

    let c = &r.chart;
    let _ = writeln!(o, "\n## Evidence\n");
    match (c.series.first(), c.series.last()) {
        (Some(first), Some(last)) => {
            let peak = c.series.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            let _ = writeln!(
                o,
                "{} values of {} from {} ({}) to {}; peak {}{}. The HTML review (`--format html`) draws them.",
                c.series.len(),
                md(&c.metric),
                if c.source.is_some() {
                    "Prometheus, before the alert fired"
                } else {
                    "the window just before the first breach"
                },
                first.0,
                last.0,
                crate::engine::fmt_num(peak),
                c.threshold
                    .map(|t| format!(", threshold {}", crate::engine::fmt_num(t)))
                    .unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(o, "{}", md(&c.why_empty()));
        }
    }

    let _ = writeln!(o, "\n## Root cause\n\n_To be written._");
    let _ = writeln!(o, "\n## Improvements\n\n_To be written._");

    let _ = writeln!(o, "\n## Journal\n");
    let _ = writeln!(o, "| time | kind | message |\n|---|---|---|");
    for t in &r.journal {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            day_clock_words(t.at),
            md(&t.kind),
            md(&t.message)
        );
    }
    o
}
