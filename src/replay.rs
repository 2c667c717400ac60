//! `ripcord replay`: a recorded stream of events through the engine, in
//! event time, printing every decision and executing none.

use std::io::{self, BufRead, Write};

use crate::decision::Decision;
use crate::engine::Engine;
use crate::output::Format;

/// What a replay read and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    pub malformed: u64,
    pub decisions: u64,
}

/// Lines longer than this are rejected (and skipped) without being parsed.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Reads JSON lines from `input`, writes one JSON decision per line to
/// `out`, and one warning per malformed line (naming its line number) to
/// `warn`. Blank lines are skipped. Stops early only if `out` fails.
pub fn run<R: BufRead, W: Write, E: Write>(
    engine: &mut Engine,
    mut input: R,
    mut out: W,
    mut warn: E,
    format: Format,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(4096);
    let mut decisions: Vec<Decision> = Vec::new();
    loop {
        line.clear();
        let n = read_line(&mut input, &mut line)?;
        if n == 0 {
            break;
        }
        summary.lines += 1;
        let text = trim(&line);
        if text.is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            summary.malformed += 1;
            writeln!(
                warn,
                "line {}: skipped: longer than {MAX_LINE_BYTES} bytes",
                summary.lines
            )?;
            continue;
        }
        let mut events = 0;
        let res = crate::decode::decode_each(text, |e| {
            events += 1;
            engine.process(&e, &mut decisions);
        });
        summary.events += events;
        if let Err(e) = res {
            summary.malformed += 1;
            writeln!(warn, "line {}: skipped: {e}", summary.lines)?;
        }
        write_all(&mut out, &mut decisions, &mut summary, format)?;
    }
    engine.flush(&mut decisions);
    write_all(&mut out, &mut decisions, &mut summary, format)?;
    out.flush()?;
    Ok(summary)
}

/// Like `BufRead::read_until`, but stops buffering past `MAX_LINE_BYTES + 1`
/// so one enormous line cannot exhaust memory; the rest of it is consumed.
fn read_line<R: BufRead>(input: &mut R, line: &mut Vec<u8>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let len = chunk.len();
        if line.len() <= MAX_LINE_BYTES {
            line.extend_from_slice(
                &chunk[..len.min(MAX_LINE_BYTES + 1 - line.len().min(MAX_LINE_BYTES + 1))],
            );
        }
        input.consume(len);
        total += len;
        if done {
            return Ok(total);
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn write_all<W: Write>(
    out: &mut W,
    decisions: &mut Vec<Decision>,
    summary: &mut Summary,
    format: Format,
) -> io::Result<()> {
    for d in decisions.drain(..) {
        match format {
            Format::Json => {
                serde_json::to_writer(&mut *out, &d)?;
                out.write_all(b"\n")?;
            }
            f => out.write_all(&crate::output::line(&d, None, f))?,
        }
        summary.decisions += 1;
    }
    Ok(())
}
