//! `ripcord silence`: create, list, show and expire silences.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::{JournalArgs, open_journal, who};
use ripcord::journal::Reads;
use ripcord::rule::load::{self as rules};
use ripcord::settings::Config;

#[derive(Subcommand)]
pub enum SilenceCmd {
    /// Mute what matches for a while: `ripcord silence add service=web
    /// --for 2h --comment "kernel patch"`.
    Add {
        /// Label matchers in Alertmanager's syntax: `service=web`,
        /// `instance=~"i-web-.*"`, `env!=dev`. Also matched: `rule`,
        /// `alertname`, `tier`, `severity`.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long, from now (e.g. 2h).
        #[arg(long = "for", conflicts_with_all = ["until", "until_batch"])]
        duration: Option<String>,
        /// When it ends (RFC 3339).
        #[arg(long, conflicts_with = "until_batch")]
        until: Option<String>,
        /// Until batch BATCH of SERVICE completes: `SERVICE:BATCH`.
        #[arg(long, value_name = "SERVICE:BATCH")]
        until_batch: Option<String>,
        /// When it starts (RFC 3339; default now).
        #[arg(long)]
        start: Option<String>,
        /// notify: mute messages only (actions still run); all: actions too.
        #[arg(long, default_value = "notify", value_parser = ["notify", "all"])]
        scope: String,
        /// Who silences (default: $USER, else the login name).
        #[arg(long)]
        by: Option<String>,
        #[arg(long)]
        comment: String,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// List silences (active and pending; `--all` adds expired ones).
    Ls {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        at: JournalArgs,
    },
    /// End a silence now.
    Expire {
        id: String,
        /// Who expires it (default: $USER, else the login name).
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        at: JournalArgs,
    },
}

pub fn silence(cmd: SilenceCmd) -> Result<ExitCode> {
    use ripcord::silence::{self as sil, MatcherSpec, PostableSilence, Scope, UntilBatch};
    use ripcord::time::{Dur, Ts};
    let now = Ts(jiff::Timestamp::now().as_millisecond());
    match cmd {
        SilenceCmd::Add {
            matchers,
            duration,
            until,
            until_batch,
            start,
            scope,
            by,
            comment,
            at,
        } => {
            let matchers = matchers
                .iter()
                .map(|m| MatcherSpec::parse(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("matcher {e}"))?;
            let starts = match &start {
                Some(s) => Ts::parse_rfc3339_general(s)?,
                None => now,
            };
            let until_batch = until_batch
                .map(|sb| UntilBatch::parse(&sb))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--until-batch {e}"))?;
            let ends_at = match (duration, until, &until_batch) {
                (Some(d), _, _) => Some(starts.saturating_add(d.parse::<Dur>()?).to_string()),
                (None, Some(u), _) => Some(u),
                (None, None, Some(_)) => None,
                (None, None, None) => {
                    anyhow::bail!(
                        "say how long: --for DURATION, --until TIME or --until-batch SERVICE:BATCH"
                    )
                }
            };
            let (cfg, mut j) = open_journal(&at)?;
            let seen = seen_label_names(&cfg, &*j)?;
            for w in sil::unseen_label_warnings(&matchers, seen.iter().map(String::as_str)) {
                eprintln!("warning: {w}");
            }
            let post = PostableSilence {
                id: None,
                matchers,
                starts_at: starts.to_string(),
                ends_at,
                until: until_batch,
                created_by: who(by)?,
                comment,
                scope: Scope::parse(&scope).unwrap_or_default(),
            };
            // The silences in force, to count the new one's bytes against
            // limits.silences_bytes as a running responder would.
            let guard = sil::Guard::new(
                cfg.silences.windows.clone(),
                cfg.silences.limits,
                cfg.engine.budgets.silences.clone(),
            );
            guard.set(j.silences(now, false)?);
            let s = sil::create(&mut *j, post, &guard, now)?;
            println!("{}", s.id);
            eprintln!("silence {}", s.describe());
        }
        SilenceCmd::Ls { all, json, at } => {
            let (_, j) = open_journal(&at)?;
            let rows = j.silences(now, all)?;
            if json {
                let v: Vec<_> = rows.iter().map(|s| sil::http::gettable(s, now)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if rows.is_empty() {
                eprintln!("no silences");
            } else {
                for s in &rows {
                    println!(
                        "{:<8} {}",
                        s.state(now).as_str(),
                        ripcord::text::one_line(&s.describe())
                    );
                }
            }
        }
        SilenceCmd::Expire { id, by, at } => {
            let by = who(by)?;
            let (_, mut j) = open_journal(&at)?;
            let s = sil::expire(&mut *j, &id, &by, now)?;
            eprintln!("silence {} expired by {by}", s.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every label name the rules and the journal's incidents use: what a
/// silence's matcher can sensibly name.
pub fn seen_label_names(cfg: &Config, j: &dyn Reads) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    // The rules as `run` would load them; broken rules only lose the hint.
    if let Ok(files) = rules::load(cfg.rules_dir.as_deref()) {
        for r in files.iter().flat_map(|f| &f.rules) {
            names.extend(r.group_by.iter().map(|l| l.to_string()));
            names.extend(r.matchers.iter().map(|m| m.name.clone()));
        }
    }
    if let Some(g) = &cfg.engine.grouping {
        names.extend([g.service_label.to_string(), g.batch_label.to_string()]);
    }
    for i in j.incidents(None)? {
        if let Some(o) = i.labels.as_object() {
            names.extend(o.keys().cloned());
        }
    }
    Ok(names)
}
