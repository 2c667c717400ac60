//! Structure-aware inputs for the decoders: near-valid events built from
//! `arbitrary` data, written out as JSON text with the oddities producers
//! send (escapes, duplicates, wrong types, out-of-range times, unknown
//! fields, the array form of an object).
//!
//! Most generated documents are native samples (the fast path's form), so
//! the fuzzer spends its time where the fast and slow paths could differ;
//! the other wire forms come up through `extra` fields and `Key::Pick`.

use std::fmt::Write as _;

use arbitrary::Arbitrary;

/// Names that steer decoding (field names, dispatch keys, label names the
/// decoders look for) and names just past a limit.
const NAMES: &[&str] = &[
    "metric",
    "value",
    "ts",
    "labels",
    "kind",
    "name",
    "timestamp",
    "alerts",
    "version",
    "stage",
    "done",
    "total",
    "message",
    "status",
    "annotations",
    "startsAt",
    "endsAt",
    "fingerprint",
    "service",
    "instance",
    "alertname",
    "__name__",
    "up",
    "http_5xx_ratio",
    "a:b",
    ":x",
    "_",
    "9bad",
    "a-b",
    "",
    "é",
    "a b",
    "tier",
    "batch",
    "progress",
    "firing",
    "resolved",
    "4",
    "lables",
];

#[derive(Arbitrary, Debug, Clone)]
pub enum Key {
    Pick(u8),
    /// A valid-looking name of the given length (crosses the 128/256 limits).
    Long(u16),
    Raw(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Pick(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Key::Long(n) => {
                let n = (*n as usize) % 300;
                let mut s = String::with_capacity(n);
                for i in 0..n {
                    s.push(if i == 0 {
                        'a'
                    } else {
                        (b'a' + (i % 26) as u8) as char
                    });
                }
                s
            }
            Key::Raw(s) => s.clone(),
        }
    }
}

/// How a string is written in JSON.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Esc {
    /// Only what JSON requires (`"`, `\`, control characters).
    Plain,
    /// Every character as `\uXXXX` (surrogate pairs above the BMP).
    AllUnicode,
    /// The first character escaped, the rest plain.
    First,
    /// Short escapes where they exist (`\/` for `/`, `\t`, …).
    Short,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Str {
    pub key: Key,
    pub esc: Esc,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Num {
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Exponent notation, e.g. `1.5e3`, `-0e0`.
    Exp(i32, i16),
    /// `-0`, `0.0`, `-0.0`, `1e400`, …
    Special(u8),
    /// A digit string of the given length (big integers).
    Digits(u8, bool),
}

const SPECIAL_NUMS: &[&str] = &[
    "-0",
    "0.0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "253402300799999",
    "253402300800000",
    "1795255200000",
    "1795255200000.0",
    "1.7952552e12",
    "0",
    "1",
    "-1",
    "1E3",
    "01",
    "1.",
];

#[derive(Arbitrary, Debug, Clone)]
pub enum Val {
    Num(Num),
    Str(Str),
    Null,
    Bool(bool),
    Obj(Vec<(Str, Val)>),
    Arr(Vec<Val>),
    /// Raw bytes spliced in as-is (usually invalid JSON).
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum TsVal {
    Millis(i64),
    /// Around the valid range's edges.
    Edge(u8, i16),
    Rfc(Rfc),
    /// An RFC 3339 text escaped in the JSON (the fast path only borrows).
    RfcEscaped(Rfc, Esc),
    Other(Val),
}

/// An RFC 3339-ish timestamp built from parts, mostly valid.
#[derive(Arbitrary, Debug, Clone)]
pub struct Rfc {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub frac: Option<u32>,
    pub frac_digits: u8,
    pub sep: u8,
    pub offset: Offset,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Offset {
    Z,
    LowerZ,
    Plus(u8, u8),
    Minus(u8, u8),
    None,
    Raw(String),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum LabelVal {
    Str(Str),
    /// A string of `n` bytes, around the 1024-byte limit.
    Len(u16),
    Other(Val),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum LabelsVal {
    Map(Vec<(Str, LabelVal)>),
    /// `n` distinct valid labels (crosses the 64-label limit).
    Many(u8),
    Other(Val),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Field {
    Metric(Str),
    MetricOther(Val),
    Value(Num),
    ValueOther(Val),
    Ts(TsVal),
    Labels(LabelsVal),
    Extra(Str, Val),
}

/// A native-sample-shaped document.
#[derive(Arbitrary, Debug, Clone)]
pub struct Doc {
    pub metric: Option<Field>,
    pub value: Option<Field>,
    pub ts: Option<Field>,
    pub labels: Option<Field>,
    /// Further fields (duplicates, unknown keys, other forms' keys).
    pub extra: Vec<Field>,
    /// Rotates the field order.
    pub rotate: u8,
    /// 0: object; 1: the values alone as a JSON array; 2: wrapped in an
    /// array; otherwise an object with odd whitespace.
    pub shape: u8,
}

fn write_str(out: &mut String, s: &str, esc: Esc) {
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        let escape_all = matches!(esc, Esc::AllUnicode) || (matches!(esc, Esc::First) && i == 0);
        if escape_all {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{:04x}", u);
            }
            continue;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if matches!(esc, Esc::Short) => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_num(out: &mut String, n: &Num) {
    match n {
        Num::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Num::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Num::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Num::Float(_) => out.push_str("1.5"),
        Num::Exp(m, e) => {
            let _ = write!(out, "{m}e{e}");
        }
        Num::Special(i) => out.push_str(SPECIAL_NUMS[*i as usize % SPECIAL_NUMS.len()]),
        Num::Digits(n, neg) => {
            if *neg {
                out.push('-');
            }
            out.push('1');
            for _ in 0..(*n % 40) {
                out.push('0');
            }
        }
    }
}

fn write_val(out: &mut String, v: &Val, depth: u32) {
    match v {
        Val::Num(n) => write_num(out, n),
        Val::Str(s) => write_str(out, &s.key.text(), s.esc),
        Val::Null => out.push_str("null"),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Obj(entries) if depth < 8 => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, &k.key.text(), k.esc);
                out.push(':');
                write_val(out, v, depth + 1);
            }
            out.push('}');
        }
        Val::Arr(items) if depth < 8 => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_val(out, v, depth + 1);
            }
            out.push(']');
        }
        Val::Obj(_) => out.push_str("{}"),
        Val::Arr(_) => out.push_str("[]"),
        Val::Raw(s) => out.push_str(s),
    }
}

fn rfc_text(r: &Rfc) -> String {
    let year = match r.year % 16 {
        0 => 1969,
        1 => 1970,
        2 => 9999,
        3 => 10000,
        4 => 0,
        _ => 1970 + (r.year % 8100),
    };
    let sep = match r.sep % 8 {
        0 => ' ',
        1 => 't',
        _ => 'T',
    };
    let mut s = format!(
        "{year:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
        r.month % 14,
        r.day % 33,
        r.hour % 25,
        r.minute % 61,
        r.second % 62
    );
    if let Some(f) = r.frac {
        let digits = (r.frac_digits % 12) as usize;
        let f = format!("{f:010}");
        s.push('.');
        s.push_str(&f[..digits.min(f.len())]);
    }
    match &r.offset {
        Offset::Z => s.push('Z'),
        Offset::LowerZ => s.push('z'),
        Offset::Plus(h, m) => {
            let _ = write!(s, "+{:02}:{:02}", h % 26, m % 61);
        }
        Offset::Minus(h, m) => {
            let _ = write!(s, "-{:02}:{:02}", h % 26, m % 61);
        }
        Offset::None => {}
        Offset::Raw(r) => s.push_str(r),
    }
    s
}

const TS_EDGES: &[i64] = &[
    0,
    253_402_300_799_999,
    1_795_255_200_000,
    i64::MAX,
    i64::MIN,
];

fn write_ts(out: &mut String, t: &TsVal) {
    match t {
        TsVal::Millis(ms) => {
            let _ = write!(out, "{ms}");
        }
        TsVal::Edge(i, d) => {
            let base = TS_EDGES[*i as usize % TS_EDGES.len()];
            let _ = write!(out, "{}", base.saturating_add(i64::from(*d)));
        }
        TsVal::Rfc(r) => write_str(out, &rfc_text(r), Esc::Plain),
        TsVal::RfcEscaped(r, e) => write_str(out, &rfc_text(r), *e),
        TsVal::Other(v) => write_val(out, v, 0),
    }
}

fn write_labels(out: &mut String, l: &LabelsVal) {
    match l {
        LabelsVal::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, &k.key.text(), k.esc);
                out.push(':');
                match v {
                    LabelVal::Str(s) => write_str(out, &s.key.text(), s.esc),
                    LabelVal::Len(n) => {
                        let n = 1000 + (*n as usize % 60);
                        write_str(out, &"v".repeat(n), Esc::Plain)
                    }
                    LabelVal::Other(v) => write_val(out, v, 1),
                }
            }
            out.push('}');
        }
        LabelsVal::Many(n) => {
            out.push('{');
            for i in 0..(*n as usize % 70) {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"l{i}\":\"v{i}\"");
            }
            out.push('}');
        }
        LabelsVal::Other(v) => write_val(out, v, 0),
    }
}

/// Writes one field as `"key":value` (or just the value for the array form).
fn write_field(out: &mut String, f: &Field, with_key: bool) {
    let key = |out: &mut String, k: &str| {
        if with_key {
            write_str(out, k, Esc::Plain);
            out.push(':');
        }
    };
    match f {
        Field::Metric(s) => {
            key(out, "metric");
            write_str(out, &s.key.text(), s.esc);
        }
        Field::MetricOther(v) => {
            key(out, "metric");
            write_val(out, v, 0);
        }
        Field::Value(n) => {
            key(out, "value");
            write_num(out, n);
        }
        Field::ValueOther(v) => {
            key(out, "value");
            write_val(out, v, 0);
        }
        Field::Ts(t) => {
            key(out, "ts");
            write_ts(out, t);
        }
        Field::Labels(l) => {
            key(out, "labels");
            write_labels(out, l);
        }
        Field::Extra(k, v) => {
            if with_key {
                write_str(out, &k.key.text(), k.esc);
                out.push(':');
            }
            write_val(out, v, 0);
        }
    }
}

impl Doc {
    /// The document as JSON text.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<&Field> = [&self.metric, &self.value, &self.ts, &self.labels]
            .into_iter()
            .flatten()
            .chain(self.extra.iter())
            .collect();
        if !fields.is_empty() {
            let n = self.rotate as usize % fields.len();
            fields.rotate_left(n);
        }
        let mut out = String::new();
        let (open, close, with_key, ws) = match self.shape % 8 {
            1 => ('[', ']', false, ""),
            3 => ('{', '}', true, " \n\t"),
            _ => ('{', '}', true, ""),
        };
        if self.shape % 8 == 2 {
            out.push('[');
        }
        out.push_str(ws);
        out.push(open);
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
                out.push_str(ws);
            }
            write_field(&mut out, f, with_key);
        }
        out.push(close);
        out.push_str(ws);
        if self.shape % 8 == 2 {
            out.push(']');
        }
        out
    }
}
