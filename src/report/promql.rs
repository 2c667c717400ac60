//! What an alert incident's chart draws, from the alert's `generatorURL`
//! (pure; the fetch is in [`super::prometheus`]).
//!
//! Prometheus links each alert to its expression:
//! `…/graph?g0.expr=<expr>&g0.tab=1`. An alerting expression is usually a
//! comparison (`rate(errors[5m]) / rate(requests[5m]) > 0.05`), whose range
//! query only has points while it holds, all of them the left side's
//! value. So the chart asks for the side that is not a number and draws the
//! number as the threshold, as a metric incident's chart does. Anything
//! this does not see plainly (set operators, a `bool` comparison, several
//! comparisons) is asked as written, with no threshold. This is no PromQL
//! parser: it only finds a comparison outside brackets, strings and
//! comments, and Prometheus checks what it is asked.

/// The expression Prometheus linked the alert to (`g0.expr`).
pub fn expression_of(generator_url: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(generator_url)
        .map_err(|e| format!("the alert's generatorURL is not a URL ({e})"))?;
    url.query_pairs()
        .find(|(k, _)| k == "g0.expr")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            "the alert's generatorURL names no expression (no g0.expr: not a Prometheus alert?)"
                .to_owned()
        })
}

/// What to ask Prometheus for, and the threshold to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub query: String,
    pub threshold: Option<f64>,
}

/// Splits `expr` at its one top-level comparison: the side that is not a
/// number is queried, the number is the threshold.
pub fn plot_of(expr: &str) -> Plot {
    let whole = Plot {
        query: expr.trim().to_owned(),
        threshold: None,
    };
    let Some((at, len)) = top_level_comparison(expr) else {
        return whole;
    };
    let (left, right) = (expr[..at].trim(), expr[at + len..].trim());
    // `a > bool b` yields 0 or 1: a value of its own, drawn as written.
    if right.starts_with("bool") && right[4..].starts_with(|c: char| !is_word(c)) {
        return whole;
    }
    if left.is_empty() || right.is_empty() {
        return whole;
    }
    match (number(left), number(right)) {
        (None, Some(t)) => Plot {
            query: left.to_owned(),
            threshold: Some(t),
        },
        (Some(t), None) => Plot {
            query: right.to_owned(),
            threshold: Some(t),
        },
        // Two series compared: the left one is the alert's value.
        (None, None) => Plot {
            query: left.to_owned(),
            threshold: None,
        },
        (Some(_), Some(_)) => whole,
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A PromQL number literal (`0.05`, `1e3`, `-2`), not `Inf`/`NaN`.
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(s);
    inner.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The byte offset and length of the only comparison operator outside
/// brackets, strings and comments; `None` if there is none, more than one,
/// or a set operator (`and`, `or`, `unless`) binds looser than it.
fn top_level_comparison(expr: &str) -> Option<(usize, usize)> {
    let b = expr.as_bytes();
    let mut depth = 0usize;
    let mut found: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // A string: to its closing quote (backslash escapes, except
                // in raw backtick strings).
                i += 1;
                while i < b.len() && b[i] != c {
                    if c != b'`' && b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
            _ if depth > 0 => {}
            b'=' | b'!' | b'>' | b'<' => {
                let next = b.get(i + 1).copied();
                let len = match (c, next) {
                    (b'=', Some(b'=')) | (b'!', Some(b'=')) => 2,
                    (b'>' | b'<', Some(b'=')) => 2,
                    (b'>' | b'<', _) => 1,
                    // `=~`, `!~` and a lone `=` belong inside braces.
                    _ => return None,
                };
                if found.is_some() {
                    return None;
                }
                found = Some((i, len));
                i += len;
                continue;
            }
            _ if c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && is_word(b[i] as char) {
                    i += 1;
                }
                if matches!(&expr[start..i], "and" | "or" | "unless") {
                    return None;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return None;
    }
    found
}

/// One series of a range query: its labels and (time, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub points: Vec<(crate::time::Ts, f64)>,
}

/// The series that is the alert's: every label it carries (but the
/// metric's name) is the alert's too; of several, the one carrying most.
/// A query with one series answers with it.
pub fn pick<'s>(series: &'s [Series], alert: &[(&str, &str)]) -> Result<&'s Series, String> {
    let carried = |s: &Series| {
        s.labels
            .iter()
            .filter(|(k, _)| k != "__name__")
            .all(|(k, v)| alert.iter().any(|(ak, av)| ak == k && av == v))
    };
    match series {
        [] => Err("Prometheus has no data for the expression over the incident".into()),
        [one] => Ok(one),
        many => many
            .iter()
            .filter(|s| carried(s))
            .max_by_key(|s| s.labels.len())
            .ok_or_else(|| {
                format!(
                    "the expression has {} series and none carries the alert's labels",
                    many.len()
                )
            }),
    }
}

/// At most `max` points, evenly thinned, the last one kept.
pub fn thin<T: Clone>(points: &[T], max: usize) -> Vec<T> {
    if points.len() <= max {
        return points.to_vec();
    }
    match max {
        0 => Vec::new(),
        1 => points[points.len() - 1..].to_vec(),
        _ => {
            let last = points.len() - 1;
            (0..max)
                .map(|k| points[k * last / (max - 1)].clone())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plot(e: &str) -> (String, Option<f64>) {
        let p = plot_of(e);
        (p.query, p.threshold)
    }

    #[test]
    fn the_expression_comes_from_prometheus_link() {
        let url =
            "http://prom:9090/graph?g0.expr=rate%28http_errors_total%5B5m%5D%29+%3E+0.05&g0.tab=1";
        assert_eq!(
            expression_of(url).unwrap(),
            "rate(http_errors_total[5m]) > 0.05"
        );
        assert!(expression_of("http://prom:9090/graph?g0.tab=1").is_err());
        assert!(expression_of("not a url").is_err());
    }

    #[test]
    fn a_comparison_draws_its_value_against_its_threshold() {
        assert_eq!(plot("up == 0"), ("up".into(), Some(0.0)));
        assert_eq!(
            plot("rate(errors[5m]) / rate(requests[5m]) > 0.05"),
            ("rate(errors[5m]) / rate(requests[5m])".into(), Some(0.05))
        );
        assert_eq!(
            plot("0.8 < cpu_usage_ratio"),
            ("cpu_usage_ratio".into(), Some(0.8))
        );
        assert_eq!(
            plot(r#"sum by (job) (rate(x{code=~"5..", path!="/a>b"}[1m])) >= 1e3"#),
            (
                r#"sum by (job) (rate(x{code=~"5..", path!="/a>b"}[1m]))"#.into(),
                Some(1000.0)
            )
        );
        assert_eq!(
            plot("latency > on(instance) group_left baseline * 2"),
            ("latency".into(), None)
        );
    }

    #[test]
    fn what_is_not_plain_is_asked_as_written() {
        for e in [
            "up",
            "(up == 0)",
            "up == bool 0",
            "a > 1 and b > 2",
            "a > 1 unless on(x) b",
            "a > b > c",
            "a >",
            "1 > 2",
            "x{a=~\"b\"}",
            "up # == 0",
            "(",
        ] {
            assert_eq!(plot(e), (e.trim().into(), None), "{e}");
        }
    }

    #[test]
    fn the_alerts_series_is_the_one_carrying_its_labels() {
        let s = |l: &[(&str, &str)]| Series {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: Vec::new(),
        };
        let series = [
            s(&[("instance", "i-1"), ("job", "web")]),
            s(&[("instance", "i-2"), ("job", "web")]),
            s(&[("job", "web")]),
        ];
        let alert = [("alertname", "Down"), ("instance", "i-2"), ("job", "web")];
        assert_eq!(pick(&series, &alert).unwrap(), &series[1]);
        assert!(pick(&series, &[("instance", "i-9")]).is_err());
        assert!(pick(&[], &alert).is_err());
        let one = [s(&[("x", "y")])];
        assert_eq!(pick(&one, &alert).unwrap(), &one[0]);
    }

    #[test]
    fn thinning_keeps_the_ends_and_the_bound() {
        let pts: Vec<u32> = (0..1000).collect();
        let t = thin(&pts, 240);
        assert_eq!(t.len(), 240);
        assert_eq!((t[0], t[239]), (0, 999));
        assert_eq!(thin(&pts[..5], 240), pts[..5]);
    }
}
