//! `ripcord incidents`, `show` and `report`: what the journal holds, for people.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{JournalArgs, now_ts, open_journal, plural, write_out};

pub fn incidents(at: &JournalArgs, status: &str, json: bool) -> Result<ExitCode> {
    let (_, j) = open_journal(at)?;
    let rows = j.incidents(if status == "all" { None } else { Some(status) })?;
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows_text: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let whom: Vec<String> = r
                .labels
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            let waiting = if r.attention.is_empty() {
                String::new()
            } else {
                format!(" [{}]", r.attention.join(", "))
            };
            [
                r.id.clone(),
                r.state.clone(),
                r.tier.clone(),
                r.severity.clone(),
                ripcord::time::day_clock_words(r.opened_at),
                r.rule.clone(),
                ripcord::text::one_line(&format!("{}{}", whom.join(","), waiting)).into_owned(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "STATE",
        "TIER",
        "SEVERITY",
        "OPENED",
        "RULE",
        "WHERE / WAITING",
    ];
    // Columns as wide as their widest cell, so times of any precision line up.
    let mut widths = header.map(str::len);
    for row in &rows_text {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |out: &mut io::StdoutLock<'_>, cells: &[&str]| -> io::Result<()> {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())
    };
    print(&mut out, &header)?;
    for row in &rows_text {
        print(&mut out, &row.each_ref().map(String::as_str))?;
    }
    if rows.is_empty() {
        writeln!(out, "(no {status} incidents)")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn incidents_review(
    at: &JournalArgs,
    status: &str,
    since: Option<&str>,
    format: &str,
) -> Result<ExitCode> {
    let (cfg, j) = open_journal(at)?;
    let now = now_ts();
    let from = match since {
        Some(s) => now.saturating_sub(
            s.parse::<ripcord::time::Dur>()
                .with_context(|| format!("--since {s}: expected a span like 30d or 90d"))?,
        ),
        None => ripcord::time::Ts::MIN,
    };
    let mut rows = j.incidents(if status == "all" { None } else { Some(status) })?;
    rows.retain(|r| r.opened_at >= from);
    rows.sort_by_key(|r| r.opened_at);
    let reviews = rows
        .iter()
        .map(|r| ripcord::report::Review::build(&*j, &r.id, &cfg.budgets, now))
        .collect::<Result<Vec<_>, _>>()?;
    let text = match format {
        "csv" => ripcord::report::list::csv(&reviews),
        _ => ripcord::report::list::markdown(&reviews),
    };
    write_out(None, &text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn render_review(r: &ripcord::report::Review, format: &str) -> String {
    match format {
        "html" => ripcord::report::html::render(r),
        _ => ripcord::report::markdown::render(r),
    }
}

pub fn report_cmd(
    id: &str,
    format: &str,
    out: Option<&Path>,
    at: &JournalArgs,
) -> Result<ExitCode> {
    let (cfg, j) = open_journal(at)?;
    let review = ripcord::report::Review::build(&*j, id, &cfg.budgets, now_ts())?;
    write_out(out, &render_review(&review, format))?;
    Ok(ExitCode::SUCCESS)
}

pub fn show(id: &str, at: &JournalArgs) -> Result<ExitCode> {
    let (_, j) = open_journal(at)?;
    let Some(inc) = j.incident(id)? else {
        eprintln!("ripcord: no incident {id}");
        return Ok(ExitCode::from(1));
    };
    let mut out = io::stdout().lock();
    let when = |t| ripcord::time::clock_words(now_ts(), t);
    writeln!(
        out,
        "{} {} ({} tier, {}), {} since {}",
        inc.id,
        inc.rule,
        inc.tier,
        inc.severity,
        inc.state,
        when(inc.opened_at)
    )?;
    writeln!(out, "labels: {}", inc.labels)?;
    if let Some(a) = j.approval(id)? {
        writeln!(
            out,
            "approval: {} (requested {}, expires {}{})",
            a.state,
            when(a.requested_at),
            when(a.expires_at),
            a.decided_by
                .map(|b| format!(", by {b}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(e) = j.escalation(id)? {
        // A next step only while paging runs; `step` counts the steps sent.
        let sent = format!(
            "{} {} sent",
            e.step,
            plural(e.step as usize, "step", "steps")
        );
        let line = match (e.state.as_str(), &e.acked_by) {
            ("active", _) => format!("active ({sent}; next: step {})", e.step + 1),
            (_, Some(by)) => format!("acknowledged by {by} ({sent})"),
            (state, None) => format!("{state} ({sent})"),
        };
        writeln!(out, "paging: {line}")?;
    }
    writeln!(out, "actions:")?;
    for a in j.actions_of(id)? {
        writeln!(
            out,
            "  {:<17} {:<18} {}",
            a.action.as_str(),
            a.state.as_str(),
            a.detail.unwrap_or_default()
        )?;
    }
    writeln!(out, "timeline:")?;
    for t in j.timeline(id)? {
        writeln!(out, "  {}  {:<8} {}", when(t.at), t.kind, t.message)?;
    }
    Ok(ExitCode::SUCCESS)
}
