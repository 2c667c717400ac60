//! A dry run: says what an executor would do, does nothing. Stands in for
//! every executor under `ripcord run --dry-run` (and when a config has no
//! channels and no executors at all, as on a first run), so a new user
//! sees the effect of each decision without touching a host.

use super::{ExecOutcome, Execute, Executor, Patterns, Running, Template, Vars};

#[derive(Debug)]
pub struct DryRun {
    /// "roll back", "pause the rollout of", …
    pub doing: &'static str,
    /// The label naming what it acts on (`instance`, `service`).
    pub target: &'static str,
    /// The configured executor, if any: its command or request is shown
    /// (its values checked as for real), never run.
    pub real: Option<Box<Executor>>,
}

impl DryRun {
    pub fn new(doing: &'static str, target: &'static str, real: Option<Executor>) -> DryRun {
        DryRun {
            doing,
            target,
            real: real.map(Box::new),
        }
    }

    async fn run_now(&self, vars: &Vars, patterns: &Patterns) -> ExecOutcome {
        let target = vars
            .0
            .get(self.target)
            .map(|v| crate::text::one_line(v).into_owned())
            .unwrap_or_else(|| format!("(no `{}` label)", self.target));
        let how = match &self.real {
            Some(r) => match r.describe(vars, patterns) {
                Ok(d) => format!(": {d}"),
                Err(refusal) => return ExecOutcome::Refused(refusal),
            },
            None => " (no executor configured)".to_owned(),
        };
        let line = format!("dry run: would {} {target}{how}", self.doing);
        crate::output::say(&line);
        ExecOutcome::Ok(line)
    }
}

impl Execute for DryRun {
    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    fn describe(&self, vars: &Vars, patterns: &Patterns) -> Result<String, String> {
        match &self.real {
            Some(r) => r.describe(vars, patterns),
            None => Ok(format!("(dry run: {})", self.doing)),
        }
    }

    /// The refusal a real run would give, if any.
    fn check(&self, vars: &Vars, patterns: &Patterns) -> Result<(), String> {
        match &self.real {
            Some(r) => r.check(vars, patterns),
            None => Ok(()),
        }
    }

    fn templates(&self) -> Vec<&Template> {
        self.real.as_ref().map_or(Vec::new(), |r| r.templates())
    }

    fn run<'a>(&'a self, vars: &'a Vars, patterns: &'a Patterns) -> Running<'a> {
        Box::pin(self.run_now(vars, patterns))
    }

    fn is_dry_run(&self) -> bool {
        true
    }
}
