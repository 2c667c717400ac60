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
/// Dark enough for text on white (4.5:1 and more).
const BASELINE_COLOUR: &str = "#616161";
const DECISION_COLOUR: &str = "#2e7d32";
/// The breach period's shade, behind the series.
pub const BREACH_COLOUR: &str = "#fde2dc";

// The chart's own units: narrow enough that its type stays readable when a
// phone shrinks it to ~360 px (16 units are ~10 px there), and no wider on
// a desktop than the page's column.
const W: f64 = 600.0;
const H: f64 = 330.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 34.0;
/// Type size of ticks and marks, in chart units.
const FONT: f64 = 16.0;
/// Decision marks closer than this (chart units) share one numbered mark,
/// so their numbers never overlap.
const MARK_GAP: f64 = 56.0;

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d1d1d;max-width:1000px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;font-size:.92em}\
th{background:#f4f4f4}.missed{color:#b00020;font-weight:bold}.met{color:#2e7d32}.drill{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px}\
.blank{min-height:4em;border:1px dashed #bbb;padding:8px;color:#888}svg{max-width:100%;height:auto;border:1px solid #eee}\
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.92em}.legend svg{border:none;vertical-align:middle}";

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
        ("opened (breach)", crate::time::day_clock_words(i.opened_at)),
        (
            "resolved",
            i.resolved_at
                .map_or("not yet".into(), crate::time::day_clock_words),
        ),
        ("state", esc(&i.state)),
        ("review drawn up", crate::time::day_clock_words(r.drawn_at)),
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
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td></tr>",
            crate::time::day_clock_words(m.at),
            esc(&m.what)
        );
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
            crate::time::day_clock_words(t.at),
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

/// Runs of the series past its threshold, as (from, to) times: the breach
/// period the chart shades. Past means above when the incident opened
/// above the threshold (the usual case), below otherwise.
pub fn breach_spans(c: &Chart) -> Vec<(Ts, Ts)> {
    let Some(th) = c.threshold else {
        return Vec::new();
    };
    let below = c.opening_value.is_some_and(|v| v < th);
    let past = |v: f64| if below { v < th } else { v > th };
    let mut spans: Vec<(Ts, Ts)> = Vec::new();
    let mut open: Option<Ts> = None;
    for (k, (t, v)) in c.series.iter().enumerate() {
        match (open, past(*v)) {
            (None, true) => open = Some(*t),
            (Some(from), false) => {
                spans.push((from, *t));
                open = None;
            }
            _ => {}
        }
        if k + 1 == c.series.len() {
            if let Some(from) = open {
                spans.push((from, *t));
            }
        }
    }
    spans
}

/// Decisions grouped into marks: those within `gap` (chart units) of a
/// mark's first one share it. Each mark: its x and the decisions' numbers
/// (1-based, in time order).
fn decision_marks(xs: &[f64], gap: f64) -> Vec<(f64, Vec<usize>)> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|a, b| xs[*a].total_cmp(&xs[*b]));
    let mut marks: Vec<(f64, Vec<usize>)> = Vec::new();
    for k in order {
        match marks.last_mut() {
            Some((x, ns)) if xs[k] - *x < gap => ns.push(k + 1),
            _ => marks.push((xs[k], vec![k + 1])),
        }
    }
    marks
}

/// A mark's label: `3`, `2,3`, `2–5` (a run) or `1,2,4`.
fn mark_label(ns: &[usize]) -> String {
    let run = ns.windows(2).all(|w| w[1] == w[0] + 1);
    match ns {
        [a, _, .., b] if run => format!("{a}–{b}"),
        _ => ns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// A small swatch for a legend: a line (dashed or not), a block (the
/// breach) or a bar (the console's rollout timeline).
pub fn swatch(colour: &str, kind: &str) -> String {
    let shape = match kind {
        "bar" => format!("<rect x=\"0\" y=\"2\" width=\"24\" height=\"10\" fill=\"{colour}\"/>"),
        "block" => format!(
            "<rect x=\"0\" y=\"1\" width=\"24\" height=\"12\" fill=\"{colour}\" stroke=\"#d08a7a\"/>"
        ),
        "dashed" => format!(
            "<line x1=\"0\" y1=\"7\" x2=\"24\" y2=\"7\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"6,3\"/>"
        ),
        _ => format!(
            "<line x1=\"0\" y1=\"7\" x2=\"24\" y2=\"7\" stroke=\"{colour}\" stroke-width=\"3\"/>"
        ),
    };
    format!(
        "<svg width=\"24\" height=\"14\" viewBox=\"0 0 24 14\" aria-hidden=\"true\" focusable=\"false\">{shape}</svg>"
    )
}

/// The SVG chart: the series, its threshold and baseline, the breach
/// shaded, the decisions as numbered marks; then a legend (HTML, so it
/// wraps on a phone) naming every colour and every mark.
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
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart-svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{} around the incident\">",
        esc(&c.metric)
    );
    o.push_str("<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>");
    // The breach, shaded behind everything else.
    for (from, to) in breach_spans(c) {
        let (a, b) = (x(from.millis()), x(to.millis()));
        let _ = write!(
            o,
            "<rect class=\"breach\" x=\"{a:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\" fill=\"{BREACH_COLOUR}\"/>",
            (b - a).max(2.0),
            H - TOP - BOTTOM
        );
    }
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
            "<text class=\"tick\" x=\"{}\" y=\"{:.1}\" font-size=\"{FONT}\" text-anchor=\"end\" fill=\"#333\">{}</text>",
            LEFT - 6.0,
            y(v) + 5.0,
            fmt_num((v * 1000.0).round() / 1000.0)
        );
    }
    // Three times on the axis: `HH:MM:SS` at this size fits three.
    for k in 0..=2i64 {
        let t = t0 + (t1 - t0) * k / 2;
        let anchor = match k {
            0 => "start",
            2 => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" font-size=\"{FONT}\" text-anchor=\"{anchor}\" fill=\"#333\">{}</text>",
            x(t),
            H - BOTTOM + 22.0,
            clock(Ts(t))
        );
    }
    // Threshold and baseline (named in the legend).
    for (v, colour) in [
        (c.threshold, THRESHOLD_COLOUR),
        (c.baseline, BASELINE_COLOUR),
    ] {
        if let Some(v) = v {
            let yv = y(v);
            let _ = write!(
                o,
                "<line x1=\"{LEFT}\" y1=\"{yv:.1}\" x2=\"{}\" y2=\"{yv:.1}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"8,4\"/>",
                W - RIGHT,
            );
        }
    }
    // Decisions: a dashed line each, and numbered marks above the plot
    // (close ones share a mark, so no two numbers overlap).
    // Numbered in time order, so a shared mark is a run (`2–4`).
    let mut decisions = c.decisions.clone();
    decisions.sort_by_key(|(t, _)| *t);
    let xs: Vec<f64> = decisions.iter().map(|(t, _)| x(t.millis())).collect();
    for xt in &xs {
        let _ = write!(
            o,
            "<line x1=\"{xt:.1}\" y1=\"{TOP}\" x2=\"{xt:.1}\" y2=\"{}\" stroke=\"{DECISION_COLOUR}\" stroke-dasharray=\"2,3\"/>",
            H - BOTTOM,
        );
    }
    for (xm, ns) in decision_marks(&xs, MARK_GAP) {
        let xm = xm.clamp(LEFT + 28.0, W - RIGHT - 28.0);
        let _ = write!(
            o,
            "<text class=\"mark\" x=\"{xm:.1}\" y=\"{:.1}\" font-size=\"{FONT}\" font-weight=\"700\" text-anchor=\"middle\" fill=\"{DECISION_COLOUR}\">{}</text>",
            TOP - 12.0,
            mark_label(&ns)
        );
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
    // The legend: every colour and every numbered mark, in words.
    o.push_str("<ul class=\"legend\" aria-label=\"chart legend\">");
    let _ = write!(
        o,
        "<li>{} {}</li>",
        swatch(SERIES_COLOUR, "line"),
        esc(&c.metric)
    );
    if let Some(v) = c.threshold {
        let _ = write!(
            o,
            "<li>{} threshold {}</li>",
            swatch(THRESHOLD_COLOUR, "dashed"),
            fmt_num(v)
        );
    }
    if let Some(v) = c.baseline {
        let _ = write!(
            o,
            "<li>{} baseline {}</li>",
            swatch(BASELINE_COLOUR, "dashed"),
            fmt_num(v)
        );
    }
    if c.threshold.is_some() {
        let _ = write!(
            o,
            "<li>{} breach: past the threshold</li>",
            swatch(BREACH_COLOUR, "block")
        );
    }
    for (k, (t, action)) in decisions.iter().enumerate() {
        let _ = write!(
            o,
            "<li class=\"decision\">{} <b>{}</b> {} at {}</li>",
            swatch(DECISION_COLOUR, "dashed"),
            k + 1,
            action.as_str().replace('_', " "),
            clock(*t)
        );
    }
    o.push_str("</ul>");
    if let Some(q) = c.source.as_ref().and_then(|s| s.query.as_deref()) {
        let _ = write!(
            o,
            "<p class=\"chart-source\">Prometheus: <code>{}</code></p>",
            esc(q)
        );
    }
    o
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn close_decisions_share_a_mark_so_their_numbers_never_overlap() {
        let marks = decision_marks(&[100.0, 110.0, 300.0, 120.0, 160.0], MARK_GAP);
        assert_eq!(
            marks,
            vec![(100.0, vec![1, 2, 4]), (160.0, vec![5]), (300.0, vec![3])]
        );
        assert_eq!(mark_label(&[1, 2, 4]), "1,2,4");
        assert_eq!(mark_label(&[2, 3, 4]), "2–4");
        assert_eq!(mark_label(&[2, 3]), "2,3");
        // Consecutive marks are at least MARK_GAP apart.
        for w in marks.windows(2) {
            assert!(w[1].0 - w[0].0 >= MARK_GAP, "{marks:?}");
        }
    }

    #[test]
    fn the_breach_is_the_run_past_the_threshold() {
        let c = Chart {
            metric: "m".into(),
            series: [0.01, 0.4, 0.5, 0.02, 0.3]
                .iter()
                .enumerate()
                .map(|(k, v)| (Ts(k as i64 * 10_000), *v))
                .collect(),
            threshold: Some(0.05),
            baseline: None,
            opening_value: Some(0.4),
            decisions: vec![],
            source: None,
        };
        assert_eq!(
            breach_spans(&c),
            vec![(Ts(10_000), Ts(30_000)), (Ts(40_000), Ts(40_000))]
        );
        let svg = chart(&c);
        assert_eq!(svg.matches("class=\"breach\"").count(), 2, "{svg}");
        assert!(svg.contains("breach: past the threshold"), "{svg}");
    }
}
