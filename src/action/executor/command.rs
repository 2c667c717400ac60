//! The command executor: runs a program with an argv built from templates.
//!
//! ```yaml
//! command:
//!   argv: [deploy/rollback.sh, "{instance}"]
//!   env: [PATH, CLOUD_PROFILE]   # passed through; everything else is cleared
//!   dir: /opt/ripcord            # working directory (relative to the config file)
//!   timeout: 5m                  # then the whole process group is killed
//!   max_output: 65536            # bytes of stdout and of stderr kept
//! ```
//!
//! No shell: the program is executed directly and each template value is
//! one argv element, checked against its label pattern first. The program
//! runs in its own process group so a timeout kills everything it started.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{ExecOutcome, Execute, Patterns, Registration, Running, Template, Vars};
use crate::action::message::truncate_utf8;
use crate::config::Errors;
use crate::config::yaml::MapReader;
use crate::time::Dur;

#[derive(Debug)]
pub struct CommandExecutor {
    program: String,
    args: Vec<Template>,
    env: Vec<String>,
    dir: Option<PathBuf>,
    timeout: Duration,
    max_output: usize,
}

impl CommandExecutor {
    pub fn from_config(mut m: MapReader<'_>, errs: &mut Errors) -> Option<CommandExecutor> {
        let argv = m.str_list("argv", errs);
        if argv.is_none() && !m.has("argv") {
            m.err(
                errs,
                m.node(),
                "argv",
                "is required, e.g. [deploy/rollback.sh, \"{instance}\"]",
            );
        }
        let env = m
            .str_list("env", errs)
            .map(|l| l.into_iter().map(|(s, _)| s.to_owned()).collect())
            .unwrap_or_else(|| vec!["PATH".to_owned()]);
        let dir = m
            .str("dir", errs)
            .map(|d| crate::config::relative_to(m.file(), d));
        let timeout = m
            .dur("timeout", Dur::from_secs(1)..=Dur::from_mins(60), errs)
            .unwrap_or(Dur::from_mins(5));
        let max_output = m
            .int("max_output", 0..=16 * 1024 * 1024, errs)
            .unwrap_or(64 * 1024) as usize;
        let mut program = None;
        let mut args = Vec::new();
        if let Some(list) = argv {
            for (i, (s, n)) in list.into_iter().enumerate() {
                if i == 0 {
                    if s.contains('{') {
                        m.err(
                            errs,
                            n,
                            "argv",
                            "the program (first element) must be a fixed path, not a template",
                        );
                    }
                    if let Err(why) = runnable(s, dir.as_deref()) {
                        m.err(errs, n, "argv", why);
                    }
                    program = Some(s.to_owned());
                    continue;
                }
                match Template::parse(s) {
                    Ok(t) => args.push(t.at(&m, n, "argv")),
                    Err(e) => m.err(errs, n, "argv", e),
                }
            }
            if program.is_none() {
                m.err(errs, m.node(), "argv", "must name a program");
            }
        }
        m.finish(errs);
        Some(CommandExecutor {
            program: program?,
            args,
            env,
            dir,
            timeout: timeout.to_std(),
            max_output,
        })
    }

    /// The argv the program would get, values checked.
    pub fn argv(&self, vars: &Vars, patterns: &Patterns) -> Result<Vec<String>, String> {
        let mut out = vec![self.program.clone()];
        for t in &self.args {
            out.push(t.render(vars, patterns, super::verbatim)?);
        }
        Ok(out)
    }

    async fn run_now(&self, vars: &Vars, patterns: &Patterns) -> ExecOutcome {
        let argv = match self.argv(vars, patterns) {
            Ok(a) => a,
            Err(e) => return ExecOutcome::Refused(e),
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for name in &self.env {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return ExecOutcome::Refused(format!("cannot start {}: {e}", argv[0])),
        };
        let pid = child.id();
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let max = self.max_output;
        let reading = async move { tokio::join!(capture(out, max), capture(err, max)) };
        let finished = tokio::time::timeout(self.timeout, async {
            let (stdout, stderr) = reading.await;
            (child.wait().await, stdout, stderr)
        })
        .await;
        let took = started.elapsed();
        match finished {
            Ok((Ok(status), stdout, stderr)) => {
                let code = status
                    .code()
                    .map_or_else(|| format!("killed by {status}"), |c| format!("exit {c}"));
                let detail = format!(
                    "{code} after {:.1}s{}",
                    took.as_secs_f64(),
                    outputs(&stdout, &stderr)
                );
                if status.success() {
                    ExecOutcome::Ok(detail)
                } else {
                    ExecOutcome::Failed(detail)
                }
            }
            Ok((Err(e), _, _)) => ExecOutcome::Failed(format!("waiting for {}: {e}", argv[0])),
            Err(_) => {
                if let Some(pid) = pid {
                    kill_group(pid);
                }
                ExecOutcome::Failed(format!(
                    "timed out after {:?}; its process group was killed",
                    self.timeout
                ))
            }
        }
    }
}

/// Checks at config time that `program` can be started, so a missing or
/// non-executable rollback script is a config error reported before start,
/// not a failed rollback during an incident. A path with a `/` is taken
/// as is, or relative to ripcord's working directory or `dir`; a bare
/// name is looked up on PATH.
fn runnable(program: &str, dir: Option<&std::path::Path>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::path::Path::new(program);
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let mut c = vec![path.to_path_buf()];
        if let (false, Some(d)) = (path.is_absolute(), dir) {
            c.push(d.join(path));
        }
        c
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(path)).collect())
            .unwrap_or_default()
    };
    let Some(found) = candidates.iter().find(|c| c.exists()) else {
        return Err(if program.contains('/') {
            format!("the program `{program}` does not exist")
        } else {
            format!("the program `{program}` is not on PATH")
        });
    };
    match std::fs::metadata(found) {
        Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!(
            "the program `{}` is not an executable file",
            found.display()
        )),
        Err(e) => Err(format!("the program `{}`: {e}", found.display())),
    }
}

/// Kills the process group the child leads (it was started with
/// `process_group(0)`, so its group id is its pid).
fn kill_group(pid: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Ok(p) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
    }
}

/// Reads a pipe to its end, keeping the first `max` bytes.
async fn capture<R: AsyncRead + Unpin>(r: Option<R>, max: usize) -> (Vec<u8>, usize) {
    let Some(mut r) = r else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, total),
            Ok(n) => {
                total += n;
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn outputs(stdout: &(Vec<u8>, usize), stderr: &(Vec<u8>, usize)) -> String {
    let mut s = String::new();
    for (name, (kept, total)) in [("stdout", stdout), ("stderr", stderr)] {
        if *total == 0 {
            continue;
        }
        let text = String::from_utf8_lossy(kept);
        let text = truncate_utf8(text.trim(), 2000);
        let more = if total > &kept.len() {
            format!(" (first {} of {total} bytes)", kept.len())
        } else {
            String::new()
        };
        s.push_str(&format!("; {name}{more}: {text}"));
    }
    s
}

pub const EXECUTOR: Registration = Registration {
    key: "command",
    example: "`command: {argv: [...]}`",
    read: |m, errs| Some(Box::new(CommandExecutor::from_config(m, errs)?)),
};

impl Execute for CommandExecutor {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn describe(&self, vars: &Vars, patterns: &Patterns) -> Result<String, String> {
        Ok(self.argv(vars, patterns)?.join(" "))
    }

    fn templates(&self) -> Vec<&Template> {
        self.args.iter().collect()
    }

    fn run<'a>(&'a self, vars: &'a Vars, patterns: &'a Patterns) -> Running<'a> {
        Box::pin(self.run_now(vars, patterns))
    }
}
