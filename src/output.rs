//! The decision stream on stdout, and ripcord's own lines on stderr.
//!
//! Decisions are printed as JSON lines (for pipes and tools) or as one
//! readable line each (`--output pretty`, the default on a terminal). The
//! journal is the record; stdout is a view of it. So the live responder
//! never waits for its reader: lines go through a buffer bounded in bytes
//! to a writer thread, and a reader that stops reading costs dropped lines
//! (counted, said once per interval), never a stalled pipeline. A closed
//! stdout or stderr is never a panic.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::decision::{Action, Decision, Severity, Tier};
use crate::telemetry::Metrics;

/// How decisions are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: the stable, machine-readable form.
    Json,
    /// One readable line per decision; `color` for a terminal.
    Pretty { color: bool },
}

impl Format {
    /// `pretty` or `json`, or (`None`) pretty on a terminal, JSON on a pipe.
    /// Colour only on a terminal, and never with `NO_COLOR` set.
    pub fn choose(asked: Option<&str>, stdout_is_terminal: bool) -> Format {
        let color = stdout_is_terminal && std::env::var_os("NO_COLOR").is_none();
        match asked {
            Some("json") => Format::Json,
            Some(_) => Format::Pretty { color },
            None if stdout_is_terminal => Format::Pretty { color },
            None => Format::Json,
        }
    }

    /// [`Format::choose`] for this process's stdout.
    pub fn for_stdout(asked: Option<&str>) -> Format {
        Format::choose(asked, std::io::stdout().is_terminal())
    }
}

/// One decision as one line (with its newline). `released` says why a
/// decision taken earlier acts now (a human approved it, its approval
/// timed out): it is printed when it is released, not when decided.
pub fn line(d: &Decision, released: Option<&str>, f: Format) -> Vec<u8> {
    noted_line(d, released.map(|why| ("released", why)), f)
}

/// [`line`] with a note under `key` (`released`, `held_back`).
fn noted_line(d: &Decision, note: Option<(&str, &str)>, f: Format) -> Vec<u8> {
    match f {
        Format::Json => {
            let mut v = match note {
                None => serde_json::to_vec(d),
                Some((key, why)) => serde_json::to_value(d).and_then(|mut v| {
                    v[key] = serde_json::Value::from(why);
                    serde_json::to_vec(&v)
                }),
            }
            .unwrap_or_default();
            v.push(b'\n');
            v
        }
        Format::Pretty { color } => pretty(d, note.map(|(_, why)| why), color).into_bytes(),
    }
}

const RESET: &str = "\x1b[0m";

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}{RESET}")
    } else {
        text.to_owned()
    }
}

/// `2026-11-21 10:04:00 UTC  HIGH   severe      pause_rollout     payments/i-p1: http_5xx_ratio avg over 1m is 0.15 (> 0.05) for 90s  [inc-…]`
fn pretty(d: &Decision, released: Option<&str>, color: bool) -> String {
    let at = crate::time::day_clock_words(d.at);
    let tier = format!("{:<6}", d.tier.as_str().to_uppercase());
    let tier = paint(
        color,
        match d.tier {
            Tier::High => "1;31",
            Tier::Medium => "1;33",
            Tier::Low => "1;36",
        },
        &tier,
    );
    let severity = format!("{:<10}", d.severity.as_str());
    let severity = match d.severity {
        Severity::Severe => paint(color, "31", &severity),
        Severity::Functional => paint(color, "33", &severity),
        Severity::Minor => paint(color, "2", &severity),
    };
    let action = format!("{:<16}", d.action.as_str());
    let action = paint(
        color,
        match d.action {
            Action::Rollback
            | Action::PauseRollout
            | Action::Page
            | Action::SwitchTraffic
            | Action::RestoreTraffic => "1",
            Action::Resolve => "32",
            _ => "0",
        },
        &action,
    );
    let mut s = format!(
        "{at}  {tier} {severity} {action}  {}",
        crate::text::one_line(&d.message)
    );
    if let Some(why) = released.filter(|w| !d.message.contains(*w)) {
        s.push_str(&format!("  ({})", crate::text::one_line(why)));
    }
    if let Some(inc) = &d.incident {
        s.push_str(&paint(color, "2", &format!("  [{inc}]")));
    }
    s.push('\n');
    s
}

/// Most bytes of lines held for a slow reader; past it, lines are dropped
/// (for decisions, the journal has them).
pub const MAX_BUFFERED_BYTES: usize = 4 << 20;

/// Lines for one writer (stdout, stderr), written by a thread of its own
/// from a buffer bounded in bytes: whoever pushes never waits.
pub struct Pipe {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a line is queued, when one is written, and at close.
    changed: Condvar,
    dropped: AtomicU64,
}

struct Queue {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
    /// The reader is gone (EPIPE or another write error): nothing more is
    /// written.
    broken: bool,
    /// The writer thread holds a line it has not finished writing.
    writing: bool,
}

/// Why a line was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The buffer is full: the reader is not reading.
    Full,
    /// The reader is gone, or the pipe closed.
    Closed,
}

impl Pipe {
    /// Starts the writer thread for `w`. The thread is detached on purpose:
    /// a reader that never reads blocks it in write(2) for good, and that
    /// must not hold up the exit.
    pub fn spawn(name: &str, w: Box<dyn Write + Send>) -> Pipe {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                lines: VecDeque::new(),
                bytes: 0,
                closed: false,
                broken: false,
                writing: false,
            }),
            changed: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_loop(&thread_shared, w));
        if spawned.is_err() {
            // No thread: every line is dropped (and counted), nothing blocks.
            shared.lock().broken = true;
        }
        Pipe { shared }
    }

    /// Queues `bytes`; never waits.
    pub fn push(&self, bytes: Vec<u8>) -> Result<(), Dropped> {
        let mut q = self.shared.lock();
        let refused = if q.broken || q.closed {
            Some(Dropped::Closed)
        } else if q.bytes + bytes.len() > MAX_BUFFERED_BYTES {
            Some(Dropped::Full)
        } else {
            None
        };
        if let Some(why) = refused {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        q.bytes += bytes.len();
        q.lines.push_back(bytes);
        drop(q);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for every queued line to be written; false if
    /// some are still waiting (a reader that does not read).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.lock();
        loop {
            if q.broken || (q.lines.is_empty() && !q.writing) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .shared
                .changed
                .wait_timeout(q, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Writes what is queued (up to `timeout`), then stops the thread.
    pub fn close(&self, timeout: Duration) {
        self.flush(timeout);
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn write_loop(shared: &Shared, mut w: Box<dyn Write + Send>) {
    loop {
        let next = {
            let mut q = shared.lock();
            loop {
                if let Some(l) = q.lines.pop_front() {
                    q.bytes -= l.len();
                    q.writing = true;
                    break Some((l, q.lines.is_empty()));
                }
                if q.closed {
                    break None;
                }
                q = shared.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some((bytes, last)) = next else {
            let _ = w.flush();
            return;
        };
        // The lock is not held here: a blocked write blocks only this thread.
        let mut ok = w.write_all(&bytes).is_ok();
        if ok && last {
            ok = w.flush().is_ok();
        }
        let mut q = shared.lock();
        q.writing = false;
        if !ok {
            q.broken = true;
            let n = q.lines.len() as u64;
            q.lines.clear();
            q.bytes = 0;
            shared.dropped.fetch_add(n, Ordering::Relaxed);
        }
        drop(q);
        shared.changed.notify_all();
        if !ok {
            return;
        }
    }
}

/// The live responder's decision stream.
pub struct Output {
    pipe: Pipe,
    format: Format,
    metrics: Arc<Metrics>,
    /// When a drop was last said, and how many since.
    drops: Mutex<(Option<Instant>, u64)>,
}

impl Output {
    /// Starts the writer thread for `w` (stdout in production).
    pub fn spawn(w: Box<dyn Write + Send>, format: Format, metrics: Arc<Metrics>) -> Arc<Output> {
        Arc::new(Output {
            pipe: Pipe::spawn("ripcord-stdout", w),
            format,
            metrics,
            drops: Mutex::new((None, 0)),
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Prints a decision as it is journaled.
    pub fn decision(&self, d: &Decision) {
        self.push(line(d, None, self.format));
    }

    /// Prints a decision that acts now for the reason `why`.
    pub fn released(&self, d: &Decision, why: &str) {
        self.push(line(d, Some(why), self.format));
    }

    /// Prints that a silence or window held back `action` of a decision
    /// (`why` names it): `"held_back": "held back by silence …"`.
    pub fn held(&self, d: &Decision, action: crate::decision::Action, why: &str) {
        let mut d = d.clone();
        d.action = action;
        self.push(noted_line(&d, Some(("held_back", why)), self.format));
    }

    /// Prints a paging step as it goes out: a `page` decision of the
    /// incident, released by the escalation chain.
    pub fn page_step(
        &self,
        at: crate::time::Ts,
        inc: &crate::journal::IncidentRow,
        what: &str,
        step: u32,
    ) {
        let labels: Vec<(Box<str>, Box<str>)> = inc
            .labels
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.as_str().into(), v.as_str().unwrap_or("").into()))
                    .collect()
            })
            .unwrap_or_default();
        let whom: Vec<&str> = ["service", "instance"]
            .iter()
            .filter_map(|k| inc.labels.get(*k).and_then(|v| v.as_str()))
            .collect();
        let d = Decision {
            at,
            action: Action::Page,
            tier: inc.tier.parse().unwrap_or(Tier::High),
            severity: inc.severity.parse().unwrap_or(Severity::Severe),
            rule: inc.rule.as_str().into(),
            incident: Some(crate::decision::IncidentId::from_string(inc.id.as_str())),
            labels: labels.into(),
            value: None,
            threshold: None,
            baseline: None,
            message: format!("{}: {what}", whom.join("/")),
            key: format!("{}/page-step/{step}", inc.id),
            seq: 0,
            fingerprint: None,
            escalated_from: None,
            evidence: Default::default(),
            batch: inc.batch.clone(),
        };
        self.released(&d, what);
    }

    fn push(&self, bytes: Vec<u8>) {
        let Err(why) = self.pipe.push(bytes) else {
            return;
        };
        self.metrics.stdout_dropped();
        let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
        drops.1 += 1;
        if drops
            .0
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        {
            return;
        }
        let n = std::mem::take(&mut drops.1);
        drops.0 = Some(Instant::now());
        drop(drops);
        let why = match why {
            Dropped::Full => "stdout is not being read",
            Dropped::Closed => "stdout is closed",
        };
        tracing::warn!(
            dropped = n,
            "{why}: decision lines dropped (the journal has every decision)"
        );
    }

    pub fn dropped(&self) -> u64 {
        self.pipe.dropped()
    }

    pub fn flush(&self, timeout: Duration) -> bool {
        self.pipe.flush(timeout)
    }

    pub fn close(&self, timeout: Duration) {
        self.pipe.close(timeout);
    }
}

/// Where ripcord's own lines (`ready: …`, `http: listening on …`) and its
/// log go once [`stderr`] started the pipe: stderr, never waited for.
static STDERR: OnceLock<Pipe> = OnceLock::new();

/// The stderr pipe (started on first use).
pub fn stderr() -> &'static Pipe {
    STDERR.get_or_init(|| Pipe::spawn("ripcord-stderr", Box::new(std::io::stderr())))
}

/// One line on stderr; never panics, never waits for a reader.
pub fn say(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = stderr().push(line.into_bytes());
}

/// The log's writer (`tracing_subscriber`'s `with_writer`): each event is
/// one write of a whole line, queued on the stderr pipe.
#[derive(Clone, Copy, Debug, Default)]
pub struct StderrLog;

impl Write for StderrLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = stderr().push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLog {
    type Writer = StderrLog;
    fn make_writer(&'a self) -> StderrLog {
        StderrLog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::IncidentId;
    use crate::time::Ts;

    fn decision() -> Decision {
        Decision {
            at: Ts::parse_rfc3339("2026-11-21T10:04:00Z").unwrap(),
            action: Action::PauseRollout,
            tier: Tier::High,
            severity: Severity::Functional,
            rule: "http-5xx.high".into(),
            incident: Some(IncidentId::from_string("inc-000000000001")),
            labels: vec![("instance".into(), "i-p1".into())].into(),
            value: Some(0.15),
            threshold: Some(0.05),
            baseline: None,
            message: "payments/i-p1: http_5xx_ratio avg over 1m is 0.15 (> 0.05) for 90s\nforged"
                .into(),
            key: "inc-000000000001/0/pause_rollout".into(),
            seq: 0,
            fingerprint: None,
            escalated_from: None,
            evidence: Default::default(),
            batch: None,
        }
    }

    #[test]
    fn pretty_is_one_line_with_time_tier_action_where_and_value_vs_threshold() {
        let l =
            String::from_utf8(line(&decision(), None, Format::Pretty { color: false })).unwrap();
        assert_eq!(l.matches('\n').count(), 1, "{l:?}");
        assert!(l.starts_with("2026-11-21 10:04:00"), "{l}");
        for want in [
            "HIGH",
            "functional",
            "pause_rollout",
            "payments/i-p1",
            "0.15 (> 0.05)",
            "[inc-000000000001]",
        ] {
            assert!(l.contains(want), "{want} in {l}");
        }
        let colored =
            String::from_utf8(line(&decision(), None, Format::Pretty { color: true })).unwrap();
        assert!(colored.contains("\x1b[1;31mHIGH"), "{colored:?}");
    }

    #[test]
    fn json_stays_the_decision_and_says_what_released_it() {
        let l = line(&decision(), Some("approved by alice"), Format::Json);
        let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
        assert_eq!(v["action"], "pause_rollout");
        assert_eq!(v["released"], "approved by alice");
        assert_eq!(Format::choose(None, false), Format::Json);
        assert!(matches!(Format::choose(None, true), Format::Pretty { .. }));
        assert_eq!(Format::choose(Some("json"), true), Format::Json);
    }

    /// A writer that blocks until told to go on.
    struct Stuck(Arc<(Mutex<bool>, Condvar)>);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.0;
            let mut go = m.lock().unwrap();
            while !*go {
                go = c.wait(go).unwrap();
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_never_reads_costs_dropped_lines_not_a_blocked_caller() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Output::spawn(
            Box::new(Stuck(gate.clone())),
            Format::Json,
            Arc::new(Metrics::new()),
        );
        let started = Instant::now();
        let d = decision();
        let per = line(&d, None, Format::Json).len();
        let n = 2 * MAX_BUFFERED_BYTES / per;
        for _ in 0..n {
            out.decision(&d);
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(out.dropped() as usize >= n / 3, "dropped {}", out.dropped());
        assert!(!out.flush(Duration::from_millis(50)));
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert!(out.flush(Duration::from_secs(10)));
    }

    #[test]
    fn a_closed_reader_is_no_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let out = Output::spawn(Box::new(Closed), Format::Json, Arc::new(Metrics::new()));
        for _ in 0..10 {
            out.decision(&decision());
        }
        assert!(out.flush(Duration::from_secs(5)));
        out.decision(&decision());
        assert!(out.dropped() >= 1);
    }
}
