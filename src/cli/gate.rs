//! `ripcord gate`: ask the rollout gate, or promote a batch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::report;
use ripcord::settings::Config;

#[derive(clap::Args)]
pub struct GateArgs {
    service: String,
    /// The batch just done (default: the last one reported).
    #[arg(long)]
    batch: Option<String>,
    /// The revision being rolled out: only promotions of it count.
    #[arg(long)]
    revision: Option<String>,
    /// Wait until the answer is go or nogo, asking every --interval.
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "15s")]
    interval: ripcord::time::Dur,
    /// Give up waiting after this long (exit 2, hold).
    #[arg(long)]
    timeout: Option<ripcord::time::Dur>,
    /// Where ripcord listens (default: http.public_url, else http.listen of --config).
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the whole answer as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn gate(args: &GateArgs) -> Result<ExitCode> {
    // Only asks a running ripcord: no channel secret is needed.
    let (loaded, _) =
        ripcord::config::secret::with_unresolved_allowed(|| Config::load(args.config.as_deref()));
    let cfg = match loaded {
        Ok(c) => c,
        Err(errs) => return Ok(report(&errs)),
    };
    let base = match &args.url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => match &cfg.http.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", cfg.http.listen),
        },
    };
    let mut url = reqwest::Url::parse(&base).with_context(|| format!("--url {base}"))?;
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--url {base} cannot take a path"))?
        .pop_if_empty()
        .extend(["api", "v1", "rollouts", args.service.as_str(), "gate"]);
    {
        let mut q = url.query_pairs_mut();
        if let Some(b) = &args.batch {
            q.append_pair("batch", b);
        }
        if let Some(r) = &args.revision {
            q.append_pair("revision", r);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let started = std::time::Instant::now();
    loop {
        let answer: serde_json::Value = match rt.block_on(async {
            let resp = client.get(url.clone()).send().await?.error_for_status()?;
            resp.json::<serde_json::Value>().await
        }) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("ripcord gate: cannot ask {}: {e}", url.as_str());
                return Ok(ExitCode::from(3));
            }
        };
        let decision = answer["decision"].as_str().unwrap_or("?").to_owned();
        let reasons: Vec<&str> = answer["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let waited_out = args
            .timeout
            .is_some_and(|t| started.elapsed() >= t.to_std());
        // A name ripcord has never seen (a typo in the pipeline) never
        // turns into go: say so and stop, even with --wait.
        let unknown = answer["known_service"] == serde_json::Value::Bool(false);
        if decision == "hold" && args.wait && !waited_out && !unknown {
            eprintln!(
                "ripcord gate: {}: hold ({}); asking again in {}",
                args.service,
                reasons.first().copied().unwrap_or("no reason given"),
                args.interval
            );
            std::thread::sleep(args.interval.to_std());
            continue;
        }
        if args.json {
            println!("{answer}");
        } else {
            println!("{}: {decision}", args.service);
            for r in &reasons {
                println!("  - {r}");
            }
        }
        return Ok(ExitCode::from(match decision.as_str() {
            _ if unknown => 3,
            "go" => 0,
            "nogo" => 1,
            "hold" => 2,
            _ => 3,
        }));
    }
}
