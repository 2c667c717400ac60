//! `ripcord test`: the rules' own test cases.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use super::{load_offline, plural, report};
use ripcord::cases;
use ripcord::rule::load::{self as rules};

pub fn test(config: Option<&Path>, rules_dir: Option<&Path>, strict: bool) -> Result<ExitCode> {
    let (cfg, files) = match load_offline(config, rules_dir, "test") {
        Err(errs) => return Ok(report(&errs)),
        Ok(x) => x,
    };
    let mut out = io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    let mut gaps = Vec::new();
    for file in &files {
        let results = cases::run_file(file, &cfg.engine);
        gaps.extend(cases::gaps(file, &results));
        for r in results {
            if r.passed() {
                passed += 1;
                writeln!(out, "ok    {}:{} {}", r.file, r.line, r.name)?;
            } else {
                failed += 1;
                writeln!(out, "FAIL  {}:{} {}", r.file, r.line, r.name)?;
                for f in &r.failures {
                    writeln!(out, "      {f}")?;
                }
            }
        }
    }
    for (rule, path) in rules::untested_rules(&files) {
        writeln!(
            out,
            "note  {}:{} rule `{}` has no test case expecting it",
            path.display(),
            rule.origin.line,
            rule.name
        )?;
    }
    let word = if strict { "FAIL " } else { "note " };
    for g in &gaps {
        writeln!(out, "{word} {g}")?;
    }
    let gaps_failed = if strict { gaps.len() } else { 0 };
    writeln!(
        out,
        "{passed} passed, {failed} failed{}",
        match (gaps.len(), strict) {
            (0, _) => String::new(),
            (n, true) => format!(", {n} tier {} untested", plural(n, "gap", "gaps")),
            (n, false) => format!(
                "; {n} tier {} untested (--strict fails on them)",
                plural(n, "gap", "gaps")
            ),
        }
    )?;
    Ok(if failed == 0 && gaps_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
