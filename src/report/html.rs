//! The review as one self-contained HTML page: no script, no external
//! asset, an inline SVG chart of the rule's metric around the incident
//! against its threshold (and baseline), with the decisions marked. Every
//! piece of text from the journal is escaped.

use std::fmt::Write as _;

use super::{Chart, Review, Verdict};
use crate::engine::fmt_num;
use crate::text::html as esc;
use crate::time::Ts;

/// The series' colour (a distinct orange-red; the browser test looks for it).
pub const SERIES_COLOUR: &str = "#e4572e";
/// The threshold's colour (a distinct blue).
pub const THRESHOLD_COLOUR: &str = "#1b6ca8";
const BASELINE_COLOUR: &str = "#7a7a7a";
const DECISION_COLOUR: &str = "#2e7d32";

const W: f64 = 960.0;
const H: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1d;max-width:1000px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:.92em}\
th{background:#f4f4f4}.missed{color:#b00020;font-weight:bold}.met{color:#2e7d32}.drill{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px}\
.blank{min-height:4em;border:1px dashed #bbb;padding:8px;color:#888}svg{max-width:100%;height:auto;border:1px solid #eee}";

fn dur(d: Option<crate::time::Dur>) -> String {
    d.map_or_else(|| "-".to_owned(), super::human)
}

pub fn render(r: &Review) -> String {
    let i = &r.incident;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Incident review {}</title><style>{STYLE}</style></head><body>",
        esc(&i.id)
    );
    let _ = write!(o, "<h1>Incident review: {} (draft)</h1>", esc(&i.id));
    if let Some(d) = &r.drill {
        let _ = write!(
            o,
            "<div class=\"drill\"><strong>DRILL</strong>: played by <code>ripcord drill</code> ({}; event clock x{}). Nothing in production was affected.<ul>",
            esc(&d.scenario),
            d.speed
        );
        for n in &d.notes {
            let _ = write!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul></div>");
    }
    let labels: Vec<String> = i
        .labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}={}", esc(k), esc(v.as_str().unwrap_or(""))))
                .collect()
        })
        .unwrap_or_default();
    o.push_str("<table>");
    for (k, v) in [
        ("rule", esc(&i.rule)),
        (
            "tier / severity",
            format!("{} / {}", esc(&i.tier), esc(&i.severity)),
        ),
        ("where", labels.join(", ")),
        (
            "value vs threshold",
            esc(&r.value_vs_threshold().unwrap_or_else(|| "-".into())),
        ),
        ("opened (breach)", i.opened_at.to_string()),
        (
            "resolved",
            i.resolved_at.map_or("not yet".into(), |t| t.to_string()),
        ),
        ("state", esc(&i.state)),
        ("review drawn up", r.drawn_at.to_string()),
    ] {
        let _ = write!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    // The alert's own words (summary, description, runbook), as data.
    for (k, v) in &r.annotations {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    o.push_str("</table>");

    o.push_str("<h2>Evidence</h2>");
    o.push_str(&chart(&r.chart));

    o.push_str(
        "<h2>Timeline (UTC, from the journal)</h2><table><tr><th>time</th><th>what</th></tr>",
    );
    for m in &r.timeline {
        let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", m.at, esc(&m.what));
    }
    o.push_str("</table>");

    o.push_str(
        "<h2>Durations</h2><table><tr><th>step</th><th>from</th><th>to</th><th>took</th></tr>",
    );
    for s in &r.spans {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.name,
            s.from,
            s.to,
            dur(s.took)
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Budgets (the plan)</h2><table><tr><th>budget</th><th>limit</th><th>measured</th><th>verdict</th></tr>");
    for b in &r.budgets {
        let class = match b.verdict {
            Verdict::Missed => "missed",
            Verdict::Met => "met",
            _ => "",
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            esc(&b.name),
            b.limit,
            dur(b.measured),
            b.verdict.as_str()
        );
    }
    o.push_str("</table>");

    o.push_str("<h2>Root cause</h2><div class=\"blank\">To be written.</div>");
    o.push_str("<h2>Improvements</h2><div class=\"blank\">To be written.</div>");

    o.push_str("<h2>Journal</h2><table><tr><th>time</th><th>kind</th><th>message</th></tr>");
    for t in &r.journal {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.at,
            esc(&t.kind),
            esc(&t.message)
        );
    }
    o.push_str("</table></body></html>\n");
    o
}

/// `HH:MM:SS` of a time, for the axis (and the console's timeline).
pub fn clock(t: Ts) -> String {
    let s = t.to_string();
    s.get(11..19).unwrap_or(&s).to_owned()
}

/// The SVG chart: the series, its threshold and baseline, the decisions.
pub fn chart(c: &Chart) -> String {
    if c.series.is_empty() {
        return format!("<p class=\"no-chart\">{}</p>", esc(&c.why_empty()));
    }
    let mut t0 = c.series[0].0.millis();
    let mut t1 = c.series[c.series.len() - 1].0.millis();
    for (t, _) in &c.decisions {
        t0 = t0.min(t.millis());
        t1 = t1.max(t.millis());
    }
    if t1 <= t0 {
        t1 = t0 + 60_000;
    }
    let mut hi = c.series.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let mut lo = c.series.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    for v in [c.threshold, c.baseline].into_iter().flatten() {
        hi = hi.max(v);
        lo = lo.min(v);
    }
    lo = lo.min(0.0);
    if hi <= lo {
        hi = lo + 1.0;
    }
    hi += (hi - lo) * 0.1;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (H - TOP - BOTTOM);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{} around the incident\">",
        esc(&c.metric)
    );
    o.push_str("<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    // Axes and ticks.
    let _ = write!(
        o,
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#444\"/>",
        H - BOTTOM,
        W - RIGHT,
        H - BOTTOM,
        H - BOTTOM
    );
    for k in 0..=4i64 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = write!(
            o,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            LEFT - 6.0,
            y(v) + 4.0,
            fmt_num((v * 1000.0).round() / 1000.0)
        );
        let t = t0 + (t1 - t0) * k / 4;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            x(t),
            H - BOTTOM + 16.0,
            clock(Ts(t))
        );
    }
    // Decisions: a vertical line each, labelled.
    for (k, (t, action)) in c.decisions.iter().enumerate() {
        let xt = x(t.millis());
        // Near the right edge the label goes to the left of its line.
        let (lx, anchor) = if xt > W - RIGHT - 110.0 {
            (xt - 3.0, "end")
        } else {
            (xt + 3.0, "start")
        };
        let _ = write!(
            o,
            "<line x1=\"{xt:.1}\" y1=\"{TOP}\" x2=\"{xt:.1}\" y2=\"{}\" stroke=\"{DECISION_COLOUR}\" stroke-dasharray=\"2,3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"{DECISION_COLOUR}\">{}</text>",
            H - BOTTOM,
            lx,
            TOP + 10.0 + 11.0 * (k % 6) as f64,
            action.as_str()
        );
    }
    // Threshold and baseline.
    for (v, colour, what) in [
        (c.threshold, THRESHOLD_COLOUR, "threshold"),
        (c.baseline, BASELINE_COLOUR, "baseline"),
    ] {
        if let Some(v) = v {
            let yv = y(v);
            let _ = write!(
                o,
                "<line x1=\"{LEFT}\" y1=\"{yv:.1}\" x2=\"{}\" y2=\"{yv:.1}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"8,4\"/>\
                 <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"{colour}\">{what} {}</text>",
                W - RIGHT,
                W - RIGHT - 4.0,
                yv - 4.0,
                fmt_num(v)
            );
        }
    }
    // The series.
    let points: Vec<String> = c
        .series
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(t.millis()), y(*v)))
        .collect();
    let _ = write!(
        o,
        "<polyline fill=\"none\" stroke=\"{SERIES_COLOUR}\" stroke-width=\"3\" points=\"{}\"/>",
        points.join(" ")
    );
    for (t, v) in &c.series {
        let _ = write!(
            o,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{SERIES_COLOUR}\"/>",
            x(t.millis()),
            y(*v)
        );
    }
    o.push_str("</svg>");
    if let Some(q) = c.source.as_ref().and_then(|s| s.query.as_deref()) {
        let _ = write!(
            o,
            "<p class=\"chart-source\">Prometheus: <code>{}</code></p>",
            esc(q)
        );
    }
    o
}
