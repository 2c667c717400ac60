//! Conditions: `> 0.8`, `> 80%`, `>= 50ms`, `> 2x baseline`, `> 200% baseline`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }

    /// Whether the operator fires on high values (`>`, `>=`) or low ones.
    pub fn direction(self) -> Option<Direction> {
        match self {
            Op::Gt | Op::Ge => Some(Direction::Above),
            Op::Lt | Op::Le => Some(Direction::Below),
            Op::Eq | Op::Ne => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// A comparison of a window's aggregate with a constant or with a multiple
/// of the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Op,
    /// The constant, or the factor when `of_baseline`.
    pub threshold: f64,
    pub of_baseline: bool,
}

impl Condition {
    /// The value the aggregate is compared with; `None` when the condition
    /// needs a baseline that is not available yet.
    pub fn bound(&self, baseline: Option<f64>) -> Option<f64> {
        if self.of_baseline {
            baseline.map(|b| self.threshold * b)
        } else {
            Some(self.threshold)
        }
    }

    pub fn holds(&self, value: f64, baseline: Option<f64>) -> Option<bool> {
        self.bound(baseline).map(|b| self.op.apply(value, b))
    }

    /// The condition that is true exactly when this one is false.
    pub fn negated(&self) -> Condition {
        let op = match self.op {
            Op::Gt => Op::Le,
            Op::Ge => Op::Lt,
            Op::Lt => Op::Ge,
            Op::Le => Op::Gt,
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
        };
        Condition { op, ..self.clone() }
    }

    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        let (op, rest) = [">=", "<=", "==", "!=", ">", "<"]
            .into_iter()
            .find_map(|p| t.strip_prefix(p).map(|r| (p, r)))
            .ok_or_else(|| {
                format!("`{text}` must start with a comparison: >, >=, <, <=, == or !=")
            })?;
        let op = match op {
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            _ => Op::Lt,
        };
        let mut words = rest.split_whitespace();
        let amount = words
            .next()
            .ok_or_else(|| format!("`{text}` has no threshold after the comparison"))?;
        let tail: Vec<&str> = words.collect();
        let of_baseline = match tail.as_slice() {
            [] => false,
            ["baseline"] | ["of", "baseline"] => true,
            _ => {
                return Err(format!(
                    "`{text}`: unexpected `{}`; write e.g. `> 0.8`, `> 80%`, `> 50ms` or `> 2x baseline`",
                    tail.join(" ")
                ));
            }
        };
        let split = amount
            .find(|c: char| {
                !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
            })
            .unwrap_or(amount.len());
        let (num, unit) = amount.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{text}`: `{num}` is not a number"))?;
        if !n.is_finite() {
            return Err(format!("`{text}`: threshold must be finite"));
        }
        // Scaled in decimal (`99.9e-2`), so `99.9%` is the f64 nearest 0.999,
        // as a user reading the threshold back expects.
        let scaled = |exp: i32| -> f64 {
            format!("{num}e{exp}")
                .parse()
                .unwrap_or(n * 10f64.powi(exp))
        };
        let threshold = match (unit, of_baseline) {
            ("", _) => n,
            ("%", _) => scaled(-2),
            ("x", true) => n,
            ("x", false) => {
                return Err(format!(
                    "`{text}`: `x` multiplies a baseline; write `{amount} baseline`"
                ));
            }
            ("ms", false) => scaled(-3),
            ("s", false) => n,
            ("m", false) => n * 60.0,
            ("h", false) => n * 3600.0,
            (u, _) => {
                return Err(format!(
                    "`{text}`: unknown unit `{u}`; use %, ms, s, m, h, or x with a baseline"
                ));
            }
        };
        if !threshold.is_finite() {
            return Err(format!("`{text}`: threshold is out of range"));
        }
        if of_baseline && threshold <= 0.0 {
            return Err(format!("`{text}`: a baseline factor must be positive"));
        }
        Ok(Condition {
            op,
            threshold,
            of_baseline,
        })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.of_baseline {
            write!(f, "{} {}x baseline", self.op.as_str(), self.threshold)
        } else {
            write!(f, "{} {}", self.op.as_str(), self.threshold)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_baselines() {
        let c = |s: &str| Condition::parse(s).unwrap();
        assert_eq!(
            c("> 0.8"),
            Condition {
                op: Op::Gt,
                threshold: 0.8,
                of_baseline: false
            }
        );
        assert_eq!(c(">80%").threshold, 0.8);
        assert_eq!(c("> 50ms").threshold, 0.05);
        assert_eq!(c(">= 5s").threshold, 5.0);
        assert_eq!(c("< 99.9%").op, Op::Lt);
        assert_eq!(c("< 99.9%").threshold, 0.999);
        assert_eq!(c("> 50ms").threshold, 0.05);
        assert_eq!(
            c("> 2x baseline"),
            Condition {
                op: Op::Gt,
                threshold: 2.0,
                of_baseline: true
            }
        );
        assert_eq!(c("> 200% of baseline").threshold, 2.0);
        assert_eq!(c("== 0").op, Op::Eq);
        assert_eq!(c("> 1e3").threshold, 1000.0);
        for bad in [
            "0.8",
            "> fast",
            "> 2x",
            "> 5 parsecs",
            "> 3kg",
            "=> 1",
            "> -1x baseline",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_against_baseline() {
        let c = Condition::parse("> 3x baseline").unwrap();
        assert_eq!(c.holds(31.0, Some(10.0)), Some(true));
        assert_eq!(c.holds(29.0, Some(10.0)), Some(false));
        assert_eq!(c.holds(29.0, None), None);
        assert_eq!(c.negated().holds(29.0, Some(10.0)), Some(true));
    }
}
