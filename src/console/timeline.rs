//! `/rollouts`' timeline: an upgrade's batches over time, one row each (a
//! bar from its start to its done, then its soak until the next batch
//! started), the gate's verdict, and the pause with its incident. An
//! inline SVG sized by its viewBox (it reads at 390 px as at 1280), with
//! an HTML legend that wraps on a phone.

use std::fmt::Write;

use crate::gate::Answer;
use crate::journal::RolloutRow;
use crate::report::html::{clock, swatch};
use crate::text::html as esc;
use crate::time::Ts;

/// One batch of an upgrade, from its progress reports.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStep {
    pub batch: String,
    pub started: Ts,
    pub last: Ts,
    pub stage: String,
    /// Instances in the batch, when the reports count them (`done` before
    /// and after it).
    pub size: Option<u64>,
    pub done: Option<u64>,
    pub total: Option<u64>,
}

const W: f64 = 600.0;
/// Row labels ("Batch 3") take the left of the drawing.
const LEFT: f64 = 150.0;
const RIGHT: f64 = 12.0;
const AXIS: f64 = 34.0;
const ROW: f64 = 40.0;
const BAR: f64 = 22.0;
/// About 12 px at 390 px wide, 22 px at the 560 px the drawing keeps to
/// on a desktop (style.css).
const FONT: u32 = 24;
const TEXT: &str = "#333333";
const RUNNING: &str = "#1565c0";
const DONE: &str = "#2e7d32";
const FAILED: &str = "#c62828";
const SOAK: &str = "#a5d6a7";
const PAUSE: &str = "#c62828";
/// Batch names longer than this are cut in the row label.
const LABEL_CHARS: usize = 10;

/// The timeline of one upgrade's batches (`steps`, oldest first; `state`
/// of each as the steps list says it); empty when there are none.
pub fn batch_timeline(
    now: Ts,
    service: &str,
    steps: &[(BatchStep, &'static str)],
    open: bool,
    gate: Option<&Answer>,
    pause: Option<&RolloutRow>,
) -> String {
    let Some((first, _)) = steps.first() else {
        return String::new();
    };
    let t0 = first.started.millis();
    let mut t1 = if open {
        now.millis()
    } else {
        steps
            .iter()
            .map(|(s, _)| s.last.millis())
            .max()
            .unwrap_or(t0)
    };
    if let Some(p) = pause {
        t1 = t1.max(p.changed_at.millis());
    }
    if t1 <= t0 {
        t1 = t0 + 60_000;
    }
    let x = |t: Ts| {
        LEFT + (t.millis().clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - RIGHT)
    };
    let rows = steps.len() + usize::from(gate.is_some()) + usize::from(pause.is_some());
    let h = AXIS + rows as f64 * ROW + 6.0;
    let mut o = format!(
        "<figure class=\"timeline\"><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline-svg\" viewBox=\"0 0 {W} {h}\" width=\"{W}\" height=\"{h}\" role=\"img\" aria-label=\"batches of {} over time\">\
         <rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>",
        esc(service)
    );
    // Three ticks: start, middle, end (the end is now while it runs).
    for (k, anchor) in ["start", "middle", "end"].iter().enumerate() {
        let t = Ts(t0 + (t1 - t0) * k as i64 / 2);
        let _ = write!(
            o,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{}\" font-size=\"{FONT}\" text-anchor=\"{anchor}\" fill=\"{TEXT}\">{}</text>",
            x(t),
            FONT,
            &clock(t)[..5]
        );
    }
    let row_y = |i: usize| AXIS + i as f64 * ROW;
    for (i, (s, state)) in steps.iter().enumerate() {
        let y = row_y(i);
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"{FONT}\" fill=\"{TEXT}\">Batch {}</text>",
            y + BAR - 3.0,
            esc(&cut(&s.batch))
        );
        let running = *state == "running";
        let end = if running && open { now } else { s.last };
        let colour = match *state {
            "failed" => FAILED,
            "running" => RUNNING,
            _ => DONE,
        };
        let (a, b) = (x(s.started), x(end));
        let _ = write!(
            o,
            "<rect class=\"bar b-{state}\" x=\"{a:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR}\" fill=\"{colour}\"><title>Batch {}: {} to {} UTC, {state}</title></rect>",
            (b - a).max(3.0),
            esc(&s.batch),
            clock(s.started),
            clock(end)
        );
        // The soak: from the batch's done to the next batch's start (or
        // now, while the last batch soaks).
        let soak_end = match steps.get(i + 1) {
            Some((next, _)) => Some(next.started),
            None if *state == "soaking" && open => Some(now),
            None => None,
        };
        if let (Some(until), false) = (soak_end, running || *state == "failed") {
            let (a, b) = (x(end), x(until));
            if b > a {
                let _ = write!(
                    o,
                    "<rect class=\"soak\" x=\"{a:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{SOAK}\"><title>Batch {} soaked {} to {} UTC</title></rect>",
                    y + BAR / 4.0,
                    b - a,
                    BAR / 2.0,
                    esc(&s.batch),
                    clock(end),
                    clock(until)
                );
            }
        }
    }
    let mut next = steps.len();
    if let Some(g) = gate {
        let y = row_y(next);
        next += 1;
        let verdict = g.decision.as_str();
        let colour = if verdict == "go" { DONE } else { "#8a4b00" };
        let _ = write!(
            o,
            "<text x=\"0\" y=\"{:.1}\" font-size=\"{FONT}\" fill=\"{TEXT}\">Gate</text>\
             <text class=\"verdict\" x=\"{LEFT}\" y=\"{:.1}\" font-size=\"{FONT}\" font-weight=\"700\" fill=\"{colour}\">{verdict}</text>",
            y + BAR - 3.0,
            y + BAR - 3.0,
        );
    }
    if let Some(p) = pause {
        let px = x(p.changed_at);
        let y = row_y(next);
        let _ = write!(
            o,
            "<line class=\"pause\" x1=\"{px:.1}\" y1=\"{AXIS}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"{PAUSE}\" stroke-width=\"3\" stroke-dasharray=\"6,4\"/>\
             <text x=\"0\" y=\"{:.1}\" font-size=\"{FONT}\" fill=\"{TEXT}\">Paused</text>\
             <text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"{FONT}\" fill=\"{PAUSE}\">{} at {}</text>",
            y + BAR,
            y + BAR - 3.0,
            y + BAR - 3.0,
            p.incident
                .as_ref()
                .map(|i| format!("for {}", esc(i)))
                .unwrap_or_else(|| format!("by {}", esc(&p.changed_by))),
            &clock(p.changed_at)[..5]
        );
    }
    o.push_str("</svg><ul class=\"legend\" aria-label=\"timeline legend\">");
    for (colour, kind, what) in [
        (DONE, "bar", "batch done"),
        (RUNNING, "bar", "batch running"),
        (FAILED, "bar", "batch failed"),
        (SOAK, "bar", "soak"),
    ] {
        let _ = write!(o, "<li>{} {what}</li>", swatch(colour, kind));
    }
    if pause.is_some() {
        let _ = write!(o, "<li>{} paused by ripcord</li>", swatch(PAUSE, "dashed"));
    }
    o.push_str("</ul></figure>");
    o
}

fn cut(batch: &str) -> String {
    match batch.char_indices().nth(LABEL_CHARS) {
        Some((at, _)) => format!("{}…", &batch[..at]),
        None => batch.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(batch: &str, started: i64, last: i64, stage: &str) -> BatchStep {
        BatchStep {
            batch: batch.into(),
            started: Ts(started),
            last: Ts(last),
            stage: stage.into(),
            size: None,
            done: None,
            total: None,
        }
    }

    #[test]
    fn each_batch_is_a_bar_its_soak_runs_to_the_next_start_and_the_pause_is_marked() {
        let t = 1_795_255_200_000;
        let steps = [
            (step("1", t, t + 30_000, "batch_done"), "done"),
            (
                step("2<x>", t + 60_000, t + 60_000, "batch_started"),
                "running",
            ),
        ];
        let pause = RolloutRow {
            service: "cart".into(),
            paused: true,
            changed_at: Ts(t + 90_000),
            changed_by: "ripcord".into(),
            incident: Some("inc-00ab".into()),
        };
        let svg = batch_timeline(Ts(t + 120_000), "cart", &steps, true, None, Some(&pause));
        assert_eq!(svg.matches("<rect class=\"bar ").count(), 2, "{svg}");
        // Batch 1: 0 to 30 s of a 120 s span over 438 units from 150.
        assert!(svg.contains("class=\"bar b-done\" x=\"150.0\""), "{svg}");
        assert!(
            svg.contains("Batch 1 soaked 10:00:30 to 10:01:00 UTC"),
            "{svg}"
        );
        // The running batch runs to now: the right edge.
        assert!(
            svg.contains("Batch 2&lt;x&gt;: 10:01:00 to 10:02:00 UTC, running"),
            "{svg}"
        );
        assert!(svg.contains("class=\"pause\" x1=\"478.5\""), "{svg}");
        assert!(svg.contains(">for inc-00ab at 10:01</text>"), "{svg}");
        assert!(!svg.contains("<x>"), "names are escaped");
        assert_eq!(batch_timeline(Ts(t), "cart", &[], true, None, None), "");
    }
}
