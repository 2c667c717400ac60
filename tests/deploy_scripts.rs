//! The executors' example scripts, deploy/rollback.sh,
//! deploy/pause-rollout.sh and deploy/switch-traffic.sh, run with the real
//! bash against fake `aws`, `aliyun`, `kubectl` and `nginx` CLIs.
//!
//! Each test gets a sandbox: a temporary directory whose `bin/` is the
//! scripts' whole PATH. It holds the fakes, a fake `id` (a canary for an
//! argument that gets executed) and symlinks to the few real tools the
//! scripts run (bash, date, sleep, jq, mv), so the machine's real cloud CLIs
//! can never be reached. Every fake appends its argv to `calls.log` and
//! answers from files the test wrote under `responses/`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;

const ROLLBACK: &str = "deploy/rollback.sh";
const PAUSE: &str = "deploy/pause-rollout.sh";
const TRAFFIC: &str = "deploy/switch-traffic.sh";

/// The real programs the scripts (and the fakes) run; everything else they
/// use (`printf`, `command -v`, `read`, ...) is a bash builtin.
const REAL_TOOLS: &[&str] = &["bash", "date", "sleep", "jq", "mv"];

/// The fake programs: the cloud CLIs, and `id`, which nothing may run.
const FAKES: &[&str] = &["aws", "aliyun", "kubectl", "nginx", "id"];

// --- the sandbox ---------------------------------------------------------

/// The fake CLI. It finds its sandbox from its own path (`SANDBOX/bin/NAME`,
/// a symlink), so it needs no environment variable of its own: the scripts
/// run with a cleared environment, as ripcord runs them.
///
/// Log format: each argument (the program name first) followed by US
/// (0x1f), each call ended by RS (0x1e) and a newline, so arguments holding
/// spaces or newlines are seen exactly.
///
/// Answers: a call's key is `PROG.ARG1.ARG2` (`kubectl.VERB` for kubectl,
/// after its `--context` / `--namespace` options). The Nth call with a key
/// answers from `responses/KEY.N.{out,err,rc}` if any of them exists, else
/// from `responses/KEY.{out,err,rc}`; a missing file means no output and
/// exit status 0.
const FAKE_CLI: &str = r#"
prog=${0##*/}
sandbox=${0%/*}
sandbox=${sandbox%/*}
{
    printf '%s\x1f' "$prog" "$@"
    printf '\x1e\n'
} >>"$sandbox/calls.log"
if [[ $prog == kubectl ]]; then
    args=("$@")
    while ((${#args[@]} >= 2)) && [[ ${args[0]} == --context || ${args[0]} == --namespace ]]; do
        args=("${args[@]:2}")
    done
    key="kubectl.${args[0]-}"
else
    key="$prog.${1-}.${2-}"
fi
n=0
if [[ -e $sandbox/counts/$key ]]; then
    n=$(<"$sandbox/counts/$key")
fi
n=$((n + 1))
printf '%s' "$n" >"$sandbox/counts/$key"
base=$sandbox/responses/$key.$n
if ! [[ -e $base.out || -e $base.err || -e $base.rc ]]; then
    base=$sandbox/responses/$key
fi
if [[ -e $base.out ]]; then
    while IFS= read -r line || [[ -n $line ]]; do printf '%s\n' "$line"; done <"$base.out"
fi
if [[ -e $base.err ]]; then
    while IFS= read -r line || [[ -n $line ]]; do printf '%s\n' "$line" >&2; done <"$base.err"
fi
rc=0
if [[ -e $base.rc ]]; then
    rc=$(<"$base.rc")
fi
exit "$rc"
"#;

/// Held for writing while a test writes an executable (the fakes), and for
/// reading while one spawns a process: a child forked while another thread
/// still has the fake open for writing would make running it fail with
/// ETXTBSY ("Text file busy"). `spawn` returns once the child has exec'd,
/// which closes its copies of our (close-on-exec) descriptors.
static EXEC_FILES: RwLock<()> = RwLock::new(());

/// Where `tool` is on the test's own PATH (what `which` says).
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(tool))
        .find(|f| {
            f.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The real tool, or a failure naming its Debian package: never a skip
/// (jq in particular parses the Aliyun answers, and must be the real one).
fn real_tool(tool: &str) -> PathBuf {
    let package = match tool {
        "date" | "sleep" | "mv" => "coreutils",
        other => other,
    };
    which(tool).unwrap_or_else(|| {
        panic!("`{tool}` is not on PATH: install {tool} (Debian package {package})")
    })
}

/// An answer of a fake CLI.
struct Answer {
    out: String,
    err: String,
    rc: i32,
}

/// Exit 0, printing `out`.
fn ok(out: &str) -> Answer {
    Answer {
        out: out.to_owned(),
        err: String::new(),
        rc: 0,
    }
}

/// Exit `rc`, printing `err` on stderr.
fn fail(rc: i32, err: &str) -> Answer {
    Answer {
        out: String::new(),
        err: err.to_owned(),
        rc,
    }
}

/// One finished run of a script.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The last line on stderr: where the scripts name the failed step.
    fn last_err_line(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }
}

struct Sandbox {
    dir: tempfile::TempDir,
    bash: PathBuf,
}

impl Sandbox {
    /// All the fakes and all the real tools.
    fn new() -> Self {
        Self::with(FAKES, REAL_TOOLS)
    }

    fn with(fakes: &[&str], tools: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["bin", "responses", "counts"] {
            fs::create_dir(dir.path().join(sub)).expect("sandbox dir");
        }
        fs::write(dir.path().join("calls.log"), "").expect("calls.log");
        let bin = dir.path().join("bin");
        for tool in tools {
            symlink(real_tool(tool), bin.join(tool)).expect("symlink a real tool");
        }
        let bash = real_tool("bash");
        let fake = dir.path().join("fake-cli");
        {
            let _writing = EXEC_FILES.write().unwrap_or_else(|e| e.into_inner());
            fs::write(&fake, format!("#!{}\n{FAKE_CLI}", bash.display())).expect("fake CLI");
            fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        for name in fakes {
            symlink(&fake, bin.join(name)).expect("symlink a fake");
        }
        Sandbox { dir, bash }
    }

    /// Scripts the answer of the calls with `key` (`aws.ec2.describe-tags`),
    /// or of only the Nth one (`aws.ec2.describe-tags.2`).
    fn respond(&self, key: &str, answer: Answer) {
        let base = self.dir.path().join("responses").join(key);
        let file = |ext: &str| PathBuf::from(format!("{}.{ext}", base.display()));
        fs::write(file("out"), answer.out).expect("response");
        fs::write(file("err"), answer.err).expect("response");
        fs::write(file("rc"), answer.rc.to_string()).expect("response");
    }

    /// Every call of a fake so far, in order: argv with the program first.
    fn calls(&self) -> Vec<Vec<String>> {
        let log = fs::read_to_string(self.dir.path().join("calls.log")).expect("calls.log");
        log.split_terminator('\x1e')
            .map(|call| call.strip_prefix('\n').unwrap_or(call))
            .filter(|call| !call.is_empty())
            .map(|call| call.split_terminator('\x1f').map(str::to_owned).collect())
            .collect()
    }

    /// The calls whose argv starts with `prefix`.
    fn calls_to(&self, prefix: &[&str]) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.len() >= prefix.len() && c.iter().zip(prefix).all(|(a, b)| a == b))
            .collect()
    }

    /// Runs `bash SCRIPT ARGS...` with only PATH (the sandbox's bin),
    /// fast polls, a short wait limit and `env`.
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(&self.bash);
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(script))
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .env("RIPCORD_POLL_SECONDS", "0")
            .env("RIPCORD_DRAIN_SECONDS", "0")
            .env("RIPCORD_WAIT_SECONDS", "30")
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = {
            let _spawning = EXEC_FILES.read().unwrap_or_else(|e| e.into_inner());
            cmd.spawn().expect("spawn bash")
        };
        let out = child.wait_with_output().expect("wait for bash");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Asserts the exit status, showing the run's output if it is wrong.
#[track_caller]
fn assert_exit(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code,
        Some(code),
        "{what}: exit status\n--- stdout\n{}--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// Asserts the exact calls, one per line in the message when they differ.
#[track_caller]
fn assert_calls(sandbox: &Sandbox, want: &[Vec<String>], run: &Run) {
    let got = sandbox.calls();
    assert!(
        got == want,
        "calls differ\n--- got\n{}\n--- want\n{}\n--- stderr\n{}",
        show(&got),
        show(want),
        run.stderr
    );
}

fn show(calls: &[Vec<String>]) -> String {
    calls
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// --- the scripts as files -------------------------------------------------

/// The first `scripts/run` (no release binary yet) says that the build
/// takes minutes; a later one does not. `scripts/run` runs as shipped, in a
/// copy of the tree whose `scripts/setup` and `cargo` are fakes (the fake
/// cargo "builds" a ripcord that says how it was run).
#[test]
fn the_first_scripts_run_says_the_build_takes_minutes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for sub in ["scripts", "bin"] {
        fs::create_dir(root.join(sub)).expect("dir");
    }
    let bash = real_tool("bash");
    let exec = |path: PathBuf, text: String| {
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    {
        let _writing = EXEC_FILES.write().unwrap_or_else(|e| e.into_inner());
        let run = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/run"))
            .expect("scripts/run");
        exec(root.join("scripts/run"), run);
        exec(root.join("scripts/setup"), "#!/bin/sh\nexit 0\n".into());
        let b = bash.display();
        exec(
            root.join("bin/cargo"),
            format!(
                "#!{b}\nmkdir -p target/release\nprintf '#!{b}\\necho \"ran $*\"\\n' > target/release/ripcord\nchmod +x target/release/ripcord\n"
            ),
        );
    }
    let path = format!("{}:/usr/bin:/bin", root.join("bin").display());
    let run = || {
        let out = {
            let _spawning = EXEC_FILES.read().unwrap_or_else(|e| e.into_inner());
            Command::new(&bash)
                .arg(root.join("scripts/run"))
                .arg("--dry-run")
                .env("PATH", &path)
                .current_dir(root)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run scripts/run")
        };
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{stdout}{stderr}");
        assert_eq!(stdout, "ran run --dry-run\n", "{stderr}");
        stderr
    };
    let first = run();
    assert!(
        first.contains("building ripcord for the first time; this takes several minutes"),
        "{first}"
    );
    let later = run();
    assert!(!later.contains("first time"), "{later}");
}

/// ripcord runs the executors without a shell: the scripts must be
/// executable and name their interpreter.
#[test]
fn scripts_are_executable_bash_scripts() {
    for script in [ROLLBACK, PAUSE, TRAFFIC] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(
            meta.permissions().mode() & 0o111 == 0o111,
            "{script} is not executable (chmod +x)"
        );
        let text = fs::read_to_string(&path).expect("read script");
        assert!(
            text.starts_with("#!/usr/bin/env bash\n"),
            "{script}: shebang"
        );
        assert!(text.contains("set -Eeuo pipefail"), "{script}: strict mode");
    }
}

// --- 1. hostile arguments ---------------------------------------------------

/// Arguments no script may act on. Each is refused before any command runs.
fn hostile_common() -> Vec<Vec<String>> {
    let mut all: Vec<Vec<String>> = [
        &["$(id)"][..],
        &[";id"],
        &["`id`"],
        &["--help"],
        &["-h"],
        &["../x"],
        &[""],
        &[],
        &[" "],
        &["*"],
    ]
    .iter()
    .map(|a| argv(a))
    .collect();
    // The longest single argument Linux passes (MAX_ARG_STRLEN, 128 KiB
    // with its NUL), and 1 MiB spread over eight of them.
    let long = format!("i-{}", "a".repeat(128 * 1024 - 3));
    all.push(vec![long.clone()]);
    all.push(vec![long; 8]);
    all
}

/// rollback.sh: anything but one well-formed instance id exits 2, says
/// "refused", and runs nothing (the fakes' log, `id` included, stays empty).
#[test]
fn rollback_refuses_hostile_instance_ids() {
    let sandbox = Sandbox::new();
    let mut cases = hostile_common();
    for bad in [
        "i-0123456789abcdef0;id",
        "i-0123456789abcdef0 $(id)",
        "i-1 i-2",
        "i-0123456789abcdef0\n",
        "i-0123456789abcdef0\nid",
        "\ni-0123456789abcdef0",
        "I-0123456789ABCDEF0",
        "i-0123456789abcdef0/../x",
        "i-",
        "i-0123456",
        "x-0123456789abcdef0",
        "i-0123456789abcdef0123456789abcdef",
    ] {
        cases.push(argv(&[bad]));
    }
    cases.push(argv(&["i-0123456789abcdef0", "i-0123456789abcdef1"]));
    cases.push(argv(&["--", "i-0123456789abcdef0"]));
    for cloud in ["aws", "aliyun"] {
        for args in &cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = sandbox.run(
                ROLLBACK,
                &args,
                &[
                    ("RIPCORD_CLOUD", cloud),
                    ("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou"),
                ],
            );
            let shown = format!("{cloud} {:.80?}", args);
            assert_exit(&run, 2, &shown);
            assert!(
                run.stderr.contains("refused"),
                "{shown}: stderr: {}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{shown}: stdout: {}", run.stdout);
            assert_calls(&sandbox, &[], &run);
        }
    }
}

/// Ids of the right shape for one cloud but not the other's format pass
/// the first gate and are refused by the cloud's own check: exit 2, and
/// still nothing runs.
#[test]
fn rollback_refuses_ids_in_the_wrong_clouds_format() {
    let sandbox = Sandbox::new();
    for (cloud, id, message) in [
        // EC2: 8 or 17 hex digits.
        ("aws", "i-0123456789abcdefg", "not an EC2 instance id"),
        ("aws", "i-0123456789abc", "not an EC2 instance id"),
        ("aws", "i-bp1a2b3c4d5e6f7g8h9i", "not an EC2 instance id"),
        // ECS: 10 to 30 lower-case letters and digits.
        ("aliyun", "i-01234567", "not an ECS instance id"),
    ] {
        let run = sandbox.run(
            ROLLBACK,
            &[id],
            &[
                ("RIPCORD_CLOUD", cloud),
                ("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou"),
            ],
        );
        assert_exit(&run, 2, id);
        assert!(
            run.last_err_line().contains(message),
            "{id}: {}",
            run.stderr
        );
        assert_calls(&sandbox, &[], &run);
    }
}

/// pause-rollout.sh: anything but `[--resume] SERVICE` with a DNS-label
/// service exits 2, says "refused", and runs nothing.
#[test]
fn pause_rollout_refuses_hostile_service_names() {
    let sandbox = Sandbox::new();
    let mut cases = hostile_common();
    for bad in [
        "web;id",
        "web $(id)",
        "web ui",
        "web\n",
        "web\nid",
        "Web",
        "-web",
        "web-",
        "web_ui",
        "web.ui",
        "web/../x",
        "--resume",
        "--resume=web",
        &"a".repeat(64),
    ] {
        cases.push(argv(&[bad]));
    }
    for bad in [
        &["web", "api"][..],
        &["web", "--resume"],
        &["--resume", "--resume", "web"],
        &["--resume", "web", "api"],
        &["--pause", "web"],
        &["--", "web"],
        &["--resume", "$(id)"],
    ] {
        cases.push(argv(bad));
    }
    for rollout in ["argo", "aws-asg"] {
        for args in &cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = sandbox.run(PAUSE, &args, &[("RIPCORD_ROLLOUT", rollout)]);
            let shown = format!("{rollout} {:.80?}", args);
            assert_exit(&run, 2, &shown);
            assert!(
                run.stderr.contains("refused"),
                "{shown}: stderr: {}",
                run.stderr
            );
            assert_calls(&sandbox, &[], &run);
        }
    }
    // The longest valid name passes the gate (and reaches kubectl).
    sandbox.respond("kubectl.get", ok("true"));
    let longest = "a".repeat(63);
    let run = sandbox.run(PAUSE, &[&longest], &[("RIPCORD_ROLLOUT", "argo")]);
    assert_exit(&run, 0, "63-character service");
}

// --- 2-4. rollback.sh on AWS -------------------------------------------------

const EC2_ID: &str = "i-0123456789abcdef0";
const AMI: &str = "ami-0fedcba9876543210";
const TASK: &str = "replacevol-0123456789abcdef0";
const ARN_A: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-a/0123456789abcdef";
const ARN_B: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-b/fedcba9876543210";

fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![("RIPCORD_CLOUD", "aws"), ("AWS_REGION", "eu-west-1")]
}

/// The instance's two ripcord tags, as `describe-tags --output text` prints.
fn aws_tagged(sandbox: &Sandbox) {
    sandbox.respond(
        "aws.ec2.describe-tags",
        ok(&format!(
            "ripcord:lb\tweb-a web-b\nripcord:pre-upgrade-image\t{AMI}\n"
        )),
    );
    sandbox.respond(
        "aws.elbv2.describe-target-groups",
        ok(&format!("{ARN_A}\t{ARN_B}\n")),
    );
    sandbox.respond(
        "aws.ec2.create-replace-root-volume-task",
        ok(&format!("{TASK}\n")),
    );
}

fn aws_tags_call() -> Vec<String> {
    argv(&[
        "aws",
        "ec2",
        "describe-tags",
        "--filters",
        &format!("Name=resource-id,Values={EC2_ID}"),
        "Name=key,Values=ripcord:pre-upgrade-image,ripcord:lb",
        "--query",
        "Tags[].[Key,Value]",
        "--output",
        "text",
    ])
}

fn aws_elb(verb: &[&str], arn: &str) -> Vec<String> {
    let mut call = argv(&["aws", "elbv2"]);
    call.extend(argv(verb));
    call.extend(argv(&[
        "--target-group-arn",
        arn,
        "--targets",
        &format!("Id={EC2_ID}"),
    ]));
    call
}

fn aws_task_poll() -> Vec<String> {
    argv(&[
        "aws",
        "ec2",
        "describe-replace-root-volume-tasks",
        "--replace-root-volume-task-ids",
        TASK,
        "--query",
        "ReplaceRootVolumeTasks[0].TaskState",
        "--output",
        "text",
    ])
}

/// The calls up to and including the start of the root volume replacement.
fn aws_calls_until_replace() -> Vec<Vec<String>> {
    vec![
        aws_tags_call(),
        argv(&[
            "aws",
            "elbv2",
            "describe-target-groups",
            "--names",
            "web-a",
            "web-b",
            "--query",
            "TargetGroups[].TargetGroupArn",
            "--output",
            "text",
        ]),
        aws_elb(&["deregister-targets"], ARN_A),
        aws_elb(&["wait", "target-deregistered"], ARN_A),
        aws_elb(&["deregister-targets"], ARN_B),
        aws_elb(&["wait", "target-deregistered"], ARN_B),
        argv(&[
            "aws",
            "ec2",
            "create-replace-root-volume-task",
            "--instance-id",
            EC2_ID,
            "--image-id",
            AMI,
            "--delete-replaced-root-volume",
            "--query",
            "ReplaceRootVolumeTask.ReplaceRootVolumeTaskId",
            "--output",
            "text",
        ]),
    ]
}

/// The whole AWS rollback: out of both target groups (each drained), the
/// root volume replaced from the tagged AMI and polled until `succeeded`,
/// back into both and waited for in service; one summary line on stdout.
#[test]
fn rollback_aws_happy_path() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks.1",
        ok("pending"),
    );
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks.2",
        ok("in-progress"),
    );
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks",
        ok("succeeded"),
    );

    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 0, "aws rollback");

    let mut want = aws_calls_until_replace();
    want.extend([aws_task_poll(), aws_task_poll(), aws_task_poll()]);
    want.extend([
        aws_elb(&["register-targets"], ARN_A),
        aws_elb(&["wait", "target-in-service"], ARN_A),
        aws_elb(&["register-targets"], ARN_B),
        aws_elb(&["wait", "target-in-service"], ARN_B),
    ]);
    assert_calls(&sandbox, &want, &run);
    assert_eq!(
        run.stdout,
        format!("rolled back {EC2_ID} to {AMI} (task {TASK}); in service in: web-a web-b\n")
    );
    // Every stderr line is timestamped and names the script and instance.
    for line in run.stderr.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or(("", line));
        assert!(
            stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "not a UTC timestamp: {line}"
        );
        assert!(
            rest.starts_with(&format!("rollback.sh {EC2_ID}: ")),
            "{line}"
        );
    }
}

/// RIPCORD_IMAGE_ID and RIPCORD_LB (a manual run) win over the tags, which
/// are then not even read; `none` means no load balancer calls at all.
#[test]
fn rollback_aws_manual_image_and_no_load_balancer() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks",
        ok("succeeded"),
    );
    let mut env = aws_env();
    env.extend([("RIPCORD_IMAGE_ID", AMI), ("RIPCORD_LB", "none")]);
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &env);
    assert_exit(&run, 0, "aws rollback, no load balancer");
    let mut want = vec![aws_calls_until_replace().pop().unwrap()];
    want.push(aws_task_poll());
    assert_calls(&sandbox, &want, &run);
    assert!(run.stdout.ends_with("in service in: no load balancer\n"));
}

/// A replacement task that fails leaves the instance out of its target
/// groups on purpose: exit 6, no register-targets, and the last stderr
/// line names the step.
#[test]
fn rollback_aws_failed_replace_task_exits_6_out_of_service() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks.1",
        ok("pending"),
    );
    sandbox.respond("aws.ec2.describe-replace-root-volume-tasks", ok("failed"));
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 6, "failed task");
    let mut want = aws_calls_until_replace();
    want.extend([aws_task_poll(), aws_task_poll()]);
    assert_calls(&sandbox, &want, &run);
    assert!(
        sandbox
            .calls_to(&["aws", "elbv2", "register-targets"])
            .is_empty()
    );
    let last = run.last_err_line();
    assert!(
        last.contains(&format!(
            "FAILED at step 'wait for root volume replacement {TASK}'"
        )) && last.contains("'failed'"),
        "last stderr line: {last}"
    );
    assert!(run.stdout.is_empty());
}

/// The CLI itself failing to start the task: the ERR trap names the step
/// and exits 6.
#[test]
fn rollback_aws_failed_replace_call_exits_6() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.ec2.create-replace-root-volume-task",
        fail(
            254,
            "An error occurred (IncorrectState) when calling the CreateReplaceRootVolumeTask operation",
        ),
    );
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 6, "failed create call");
    assert_calls(&sandbox, &aws_calls_until_replace(), &run);
    let last = run.last_err_line();
    assert!(
        last.contains(&format!(
            "FAILED at step 'start replacing the root volume from {AMI}'"
        )),
        "last stderr line: {last}"
    );
}

/// A replacement that never finishes is given up after
/// RIPCORD_WAIT_SECONDS: exit 6, still out of service.
#[test]
fn rollback_aws_replace_timeout_exits_6() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.ec2.describe-replace-root-volume-tasks",
        ok("in-progress"),
    );
    let mut env = aws_env();
    env.push(("RIPCORD_WAIT_SECONDS", "0"));
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &env);
    assert_exit(&run, 6, "timeout");
    assert!(run.last_err_line().contains("still 'in-progress' after 0s"));
    assert!(
        sandbox
            .calls_to(&["aws", "elbv2", "register-targets"])
            .is_empty()
    );
}

/// A failed deregistration (exit 5) never reaches the rebuild.
#[test]
fn rollback_aws_failed_deregister_exits_5() {
    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond(
        "aws.elbv2.deregister-targets",
        fail(254, "An error occurred (AccessDenied)"),
    );
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 5, "failed deregister");
    assert!(
        run.last_err_line()
            .contains(&format!("FAILED at step 'deregister from {ARN_A}'")),
        "{}",
        run.stderr
    );
    assert!(
        sandbox
            .calls_to(&["aws", "ec2", "create-replace-root-volume-task"])
            .is_empty()
    );
}

/// No pre-upgrade-image tag: exit 4 after reading the tags, nothing
/// deregistered or rebuilt.
#[test]
fn rollback_aws_missing_image_tag_exits_4() {
    let sandbox = Sandbox::new();
    sandbox.respond("aws.ec2.describe-tags", ok("ripcord:lb\tweb-a\n"));
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 4, "missing tag");
    assert_calls(&sandbox, &[aws_tags_call()], &run);
    assert!(
        run.last_err_line()
            .contains("set the tag ripcord:pre-upgrade-image"),
        "{}",
        run.stderr
    );
}

/// A tagged image that is not an AMI id, or target groups that don't all
/// resolve, are exit 4 too, before anything changes.
#[test]
fn rollback_aws_bad_image_or_missing_target_group_exits_4() {
    let sandbox = Sandbox::new();
    sandbox.respond(
        "aws.ec2.describe-tags",
        ok("ripcord:lb\tweb-a\nripcord:pre-upgrade-image\tami-$(id)\n"),
    );
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 4, "bad image");
    assert_calls(&sandbox, &[aws_tags_call()], &run);

    let sandbox = Sandbox::new();
    aws_tagged(&sandbox);
    sandbox.respond("aws.elbv2.describe-target-groups", ok(ARN_A));
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 4, "one target group of two");
    assert!(run.last_err_line().contains("found 1 of 2 target groups"));
    assert!(
        sandbox
            .calls_to(&["aws", "elbv2", "deregister-targets"])
            .is_empty()
    );
}

/// No `aws` on PATH: exit 3, saying how to install it, nothing run.
#[test]
fn rollback_without_aws_cli_exits_3() {
    let sandbox = Sandbox::with(&["aliyun", "kubectl", "id"], REAL_TOOLS);
    let run = sandbox.run(ROLLBACK, &[EC2_ID], &aws_env());
    assert_exit(&run, 3, "no aws");
    assert!(
        run.last_err_line().contains("'aws' is not on PATH")
            && run.last_err_line().contains("install the AWS CLI v2"),
        "{}",
        run.stderr
    );
    assert_calls(&sandbox, &[], &run);
}

// --- 5. rollback.sh on Aliyun ------------------------------------------------

const ECS_ID: &str = "i-bp1a2b3c4d5e6f7g8h9i";
const IMAGE: &str = "m-bp1abcdefghij0123456";
const REGION: &str = "cn-hangzhou";
const SLB: &str = "lb-bp1qjwo61pqz3ahltv0mw";
const SGP: &str = "sgp-l0abcdef12345678";

fn aliyun_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RIPCORD_CLOUD", "aliyun"),
        ("ALIBABA_CLOUD_REGION_ID", REGION),
    ]
}

/// DescribeInstances' answer for the instance.
fn instance(status: &str, locks: &str) -> Answer {
    ok(&format!(
        r#"{{"Instances":{{"Instance":[{{"InstanceId":"{ECS_ID}","Status":"{status}","OperationLocks":{{"LockReason":[{locks}]}}}}]}},"TotalCount":1}}"#
    ))
}

/// A classic and an ALB backend in the tags; the instance going through
/// Stopping, Stopped, a locked (replacing) Stopped, Starting and Running;
/// its health abnormal at first (still booting), then normal.
fn aliyun_scripted(sandbox: &Sandbox) {
    sandbox.respond(
        "aliyun.ecs.ListTagResources",
        ok(&format!(
            r#"{{"RequestId":"x","TagResources":{{"TagResource":[
                {{"ResourceId":"{ECS_ID}","TagKey":"ripcord:pre-upgrade-image","TagValue":"{IMAGE}"}},
                {{"ResourceId":"{ECS_ID}","TagKey":"ripcord:lb","TagValue":"slb:{SLB} alb:{SGP}:8080"}}]}}}}"#
        )),
    );
    let lock = r#"{"LockReason":"replacing","LockMsg":"system disk"}"#;
    for (n, answer) in [
        instance("Stopping", ""),
        instance("Stopped", ""),
        instance("Stopped", lock),
        instance("Stopped", ""),
        instance("Starting", ""),
        instance("Running", ""),
    ]
    .into_iter()
    .enumerate()
    {
        sandbox.respond(&format!("aliyun.ecs.DescribeInstances.{}", n + 1), answer);
    }
    let health = |state: &str| {
        ok(&format!(
            r#"{{"BackendServers":{{"BackendServer":[
                {{"ServerId":"i-bp1other0000000000","ServerHealthStatus":"normal"}},
                {{"ServerId":"{ECS_ID}","ServerHealthStatus":"{state}","Port":80}}]}}}}"#
        ))
    };
    sandbox.respond("aliyun.slb.DescribeHealthStatus.1", health("abnormal"));
    sandbox.respond("aliyun.slb.DescribeHealthStatus", health("normal"));
}

fn describe_instance() -> Vec<String> {
    argv(&[
        "aliyun",
        "ecs",
        "DescribeInstances",
        "--RegionId",
        REGION,
        "--InstanceIds",
        &format!("[\"{ECS_ID}\"]"),
    ])
}

fn alb_call(api: &str, extra: &[&str]) -> Vec<String> {
    let mut call = argv(&[
        "aliyun",
        "alb",
        api,
        "--ServerGroupId",
        SGP,
        "--Servers.1.ServerId",
        ECS_ID,
        "--Servers.1.ServerType",
        "Ecs",
        "--Servers.1.Port",
        "8080",
    ]);
    call.extend(argv(extra));
    call
}

/// The calls up to and including ReplaceSystemDisk.
fn aliyun_calls_until_replace() -> Vec<Vec<String>> {
    vec![
        argv(&[
            "aliyun",
            "ecs",
            "ListTagResources",
            "--RegionId",
            REGION,
            "--ResourceType",
            "instance",
            "--ResourceId.1",
            ECS_ID,
            "--Tag.1.Key",
            "ripcord:pre-upgrade-image",
            "--Tag.2.Key",
            "ripcord:lb",
        ]),
        argv(&[
            "aliyun",
            "slb",
            "RemoveBackendServers",
            "--RegionId",
            REGION,
            "--LoadBalancerId",
            SLB,
            "--BackendServers",
            &format!(r#"[{{"ServerId":"{ECS_ID}","Type":"ecs"}}]"#),
        ]),
        alb_call("RemoveServersFromServerGroup", &[]),
        argv(&[
            "aliyun",
            "ecs",
            "StopInstance",
            "--InstanceId",
            ECS_ID,
            "--StoppedMode",
            "KeepCharging",
        ]),
        describe_instance(),
        describe_instance(),
        argv(&[
            "aliyun",
            "ecs",
            "ReplaceSystemDisk",
            "--InstanceId",
            ECS_ID,
            "--ImageId",
            IMAGE,
        ]),
    ]
}

/// The whole Aliyun rollback, its JSON answers parsed by the real jq: out
/// of the CLB and the ALB server group, stopped, system disk replaced
/// (waiting for its operation lock to clear), started, back in both, the
/// CLB health waited for through `abnormal` to `normal`.
#[test]
fn rollback_aliyun_happy_path() {
    let sandbox = Sandbox::new();
    aliyun_scripted(&sandbox);
    let run = sandbox.run(ROLLBACK, &[ECS_ID], &aliyun_env());
    assert_exit(&run, 0, "aliyun rollback");

    let mut want = aliyun_calls_until_replace();
    let add_json = format!(r#"[{{"ServerId":"{ECS_ID}","Type":"ecs","Weight":"100"}}]"#);
    let health = argv(&[
        "aliyun",
        "slb",
        "DescribeHealthStatus",
        "--RegionId",
        REGION,
        "--LoadBalancerId",
        SLB,
    ]);
    want.extend([
        describe_instance(),
        describe_instance(),
        argv(&["aliyun", "ecs", "StartInstance", "--InstanceId", ECS_ID]),
        describe_instance(),
        describe_instance(),
        argv(&[
            "aliyun",
            "slb",
            "AddBackendServers",
            "--RegionId",
            REGION,
            "--LoadBalancerId",
            SLB,
            "--BackendServers",
            &add_json,
        ]),
        health.clone(),
        health,
        alb_call("AddServersToServerGroup", &["--Servers.1.Weight", "100"]),
    ]);
    assert_calls(&sandbox, &want, &run);

    // The BackendServers arguments are JSON the API accepts.
    for call in sandbox.calls_to(&["aliyun", "slb"]) {
        if let Some(i) = call.iter().position(|a| a == "--BackendServers") {
            let v: serde_json::Value =
                serde_json::from_str(&call[i + 1]).expect("BackendServers is JSON");
            assert_eq!(v[0]["ServerId"], ECS_ID);
        }
    }
    assert_eq!(
        run.stdout,
        format!("rolled back {ECS_ID} to {IMAGE}; in service in: slb:{SLB} alb:{SGP}:8080\n")
    );
}

/// ReplaceSystemDisk failing: exit 6, the instance left stopped and out of
/// its load balancers (no StartInstance, no Add*), the step named last.
#[test]
fn rollback_aliyun_failed_replace_exits_6() {
    let sandbox = Sandbox::new();
    aliyun_scripted(&sandbox);
    sandbox.respond(
        "aliyun.ecs.ReplaceSystemDisk",
        fail(
            1,
            "ERROR: SDK.ServerError\nErrorCode: IncorrectInstanceStatus\nMessage: The current status of the resource does not support this operation.",
        ),
    );
    let run = sandbox.run(ROLLBACK, &[ECS_ID], &aliyun_env());
    assert_exit(&run, 6, "failed ReplaceSystemDisk");
    assert_calls(&sandbox, &aliyun_calls_until_replace(), &run);
    assert!(
        run.last_err_line().contains(&format!(
            "FAILED at step 'replace the system disk from {IMAGE}'"
        )),
        "{}",
        run.stderr
    );
}

/// Health that stays `abnormal` past RIPCORD_WAIT_SECONDS: exit 7 (rebuilt,
/// back in the load balancer, unhealthy), naming the wait.
#[test]
fn rollback_aliyun_unhealthy_after_rebuild_exits_7() {
    let sandbox = Sandbox::new();
    aliyun_scripted(&sandbox);
    sandbox.respond(
        "aliyun.slb.DescribeHealthStatus",
        ok(&format!(
            r#"{{"BackendServers":{{"BackendServer":[{{"ServerId":"{ECS_ID}","ServerHealthStatus":"abnormal"}}]}}}}"#
        )),
    );
    // The three instance waits (stopped, disk replaced, running) succeed
    // at their first poll; the health wait gives up at once.
    for n in 1..=6 {
        let status = if n <= 2 { "Stopped" } else { "Running" };
        sandbox.respond(
            &format!("aliyun.ecs.DescribeInstances.{n}"),
            instance(status, ""),
        );
    }
    let mut env = aliyun_env();
    env.push(("RIPCORD_WAIT_SECONDS", "0"));
    let run = sandbox.run(ROLLBACK, &[ECS_ID], &env);
    assert_exit(&run, 7, "unhealthy");
    assert!(
        run.last_err_line()
            .contains(&format!("FAILED at step 'wait until healthy in slb:{SLB}'")),
        "{}",
        run.stderr
    );
}

/// No jq (Aliyun answers are JSON): exit 3 naming the Debian package.
#[test]
fn rollback_aliyun_without_jq_exits_3() {
    let sandbox = Sandbox::with(FAKES, &["bash", "date", "sleep"]);
    let run = sandbox.run(ROLLBACK, &[ECS_ID], &aliyun_env());
    assert_exit(&run, 3, "no jq");
    assert!(
        run.last_err_line()
            .contains("install jq (Debian package jq)"),
        "{}",
        run.stderr
    );
    assert_calls(&sandbox, &[], &run);
}

// --- 6. pause-rollout.sh -----------------------------------------------------

fn argo_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RIPCORD_ROLLOUT", "argo"),
        ("RIPCORD_K8S_NAMESPACE", "shop"),
        ("RIPCORD_K8S_CONTEXT", "prod-eu"),
    ]
}

fn kubectl(args: &[&str]) -> Vec<String> {
    let mut call = argv(&["kubectl", "--context", "prod-eu", "--namespace", "shop"]);
    call.extend(argv(args));
    call
}

fn argo_patch(paused: bool) -> Vec<String> {
    kubectl(&[
        "patch",
        "rollout",
        "payment",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"paused":{paused}}}}}"#),
    ])
}

fn argo_readback() -> Vec<String> {
    kubectl(&["get", "rollout", "payment", "-o", "jsonpath={.spec.paused}"])
}

/// Pause: one merge patch setting spec.paused=true in the right context
/// and namespace, then the field read back.
#[test]
fn pause_argo_patches_and_reads_back() {
    let sandbox = Sandbox::new();
    sandbox.respond("kubectl.patch", ok("rollout.argoproj.io/payment patched"));
    sandbox.respond("kubectl.get", ok("true"));
    let run = sandbox.run(PAUSE, &["payment"], &argo_env());
    assert_exit(&run, 0, "argo pause");
    assert_calls(&sandbox, &[argo_patch(true), argo_readback()], &run);
    assert_eq!(
        run.stdout,
        "paused rollout payment (argo, namespace shop)\n"
    );
}

/// Resume: the same with false; no namespace or context means none passed.
#[test]
fn resume_argo_patches_false() {
    let sandbox = Sandbox::new();
    sandbox.respond("kubectl.get", ok("false"));
    let run = sandbox.run(PAUSE, &["--resume", "payment"], &argo_env());
    assert_exit(&run, 0, "argo resume");
    assert_calls(&sandbox, &[argo_patch(false), argo_readback()], &run);

    let sandbox = Sandbox::new();
    sandbox.respond("kubectl.get", ok("true"));
    let run = sandbox.run(PAUSE, &["web-ui"], &[("RIPCORD_ROLLOUT", "argo")]);
    assert_exit(&run, 0, "argo pause, default namespace");
    assert_calls(
        &sandbox,
        &[
            argv(&[
                "kubectl",
                "patch",
                "rollout",
                "web-ui",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"paused":true}}"#,
            ]),
            argv(&[
                "kubectl",
                "get",
                "rollout",
                "web-ui",
                "-o",
                "jsonpath={.spec.paused}",
            ]),
        ],
        &run,
    );
}

/// A patch that did not take (the read-back says otherwise): exit 5.
#[test]
fn pause_argo_readback_mismatch_exits_5() {
    for (args, readback) in [
        (&["payment"][..], "false"),
        (&["payment"], ""),
        (&["--resume", "payment"], "true"),
    ] {
        let sandbox = Sandbox::new();
        sandbox.respond("kubectl.get", ok(readback));
        let run = sandbox.run(PAUSE, args, &argo_env());
        assert_exit(&run, 5, &format!("{args:?} reading back {readback:?}"));
        assert!(
            run.last_err_line()
                .contains("FAILED at step 'read spec.paused of rollout payment back'"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
}

/// No such Rollout: exit 4, nothing read back. Any other kubectl failure
/// of the patch: exit 5.
#[test]
fn pause_argo_not_found_exits_4_other_failures_5() {
    let sandbox = Sandbox::new();
    sandbox.respond(
        "kubectl.patch",
        fail(
            1,
            r#"Error from server (NotFound): rollouts.argoproj.io "payment" not found"#,
        ),
    );
    let run = sandbox.run(PAUSE, &["payment"], &argo_env());
    assert_exit(&run, 4, "no rollout");
    assert!(
        run.last_err_line()
            .contains("no rollout payment in namespace shop")
    );
    assert_calls(&sandbox, &[argo_patch(true)], &run);

    let sandbox = Sandbox::new();
    sandbox.respond(
        "kubectl.patch",
        fail(
            1,
            r#"error: the server doesn't have a resource type "rollout""#,
        ),
    );
    let run = sandbox.run(PAUSE, &["payment"], &argo_env());
    assert_exit(&run, 4, "no Rollout CRD");

    let sandbox = Sandbox::new();
    sandbox.respond(
        "kubectl.patch",
        fail(
            1,
            r#"Error from server (Forbidden): rollouts.argoproj.io "payment" is forbidden"#,
        ),
    );
    let run = sandbox.run(PAUSE, &["payment"], &argo_env());
    assert_exit(&run, 5, "forbidden");
    assert!(run.last_err_line().contains("kubectl patch failed"));
    assert_calls(&sandbox, &[argo_patch(true)], &run);
}

fn asg_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RIPCORD_ROLLOUT", "aws-asg"),
        ("RIPCORD_ASG_PREFIX", "prod-"),
    ]
}

fn asg_lookup() -> Vec<String> {
    argv(&[
        "aws",
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        "prod-payment",
        "--query",
        "length(AutoScalingGroups)",
        "--output",
        "text",
    ])
}

fn asg_cancel() -> Vec<String> {
    argv(&[
        "aws",
        "autoscaling",
        "cancel-instance-refresh",
        "--auto-scaling-group-name",
        "prod-payment",
    ])
}

fn asg_poll() -> Vec<String> {
    argv(&[
        "aws",
        "autoscaling",
        "describe-instance-refreshes",
        "--auto-scaling-group-name",
        "prod-payment",
        "--max-records",
        "1",
        "--query",
        "InstanceRefreshes[0].Status",
        "--output",
        "text",
    ])
}

/// An instance refresh in progress: cancelled, then polled through
/// Cancelling until Cancelled.
#[test]
fn pause_asg_cancels_the_refresh_and_waits() {
    let sandbox = Sandbox::new();
    sandbox.respond("aws.autoscaling.describe-auto-scaling-groups", ok("1"));
    sandbox.respond(
        "aws.autoscaling.cancel-instance-refresh",
        ok(r#"{"InstanceRefreshId": "08b91cf7-8fa6-48af-b6a6-d227f40f1b9b"}"#),
    );
    sandbox.respond(
        "aws.autoscaling.describe-instance-refreshes.1",
        ok("Cancelling"),
    );
    sandbox.respond(
        "aws.autoscaling.describe-instance-refreshes",
        ok("Cancelled"),
    );
    let run = sandbox.run(PAUSE, &["payment"], &asg_env());
    assert_exit(&run, 0, "asg pause");
    assert_calls(
        &sandbox,
        &[asg_lookup(), asg_cancel(), asg_poll(), asg_poll()],
        &run,
    );
    assert!(
        run.stdout
            .starts_with("cancelled the instance refresh of prod-payment"),
        "{}",
        run.stdout
    );
}

/// No refresh in progress (the CLI's ActiveInstanceRefreshNotFound error):
/// nothing to pause, exit 0, no polling.
#[test]
fn pause_asg_without_refresh_is_nothing_to_pause() {
    let sandbox = Sandbox::new();
    sandbox.respond("aws.autoscaling.describe-auto-scaling-groups", ok("1"));
    sandbox.respond(
        "aws.autoscaling.cancel-instance-refresh",
        fail(
            254,
            "\nAn error occurred (ActiveInstanceRefreshNotFound) when calling the CancelInstanceRefresh operation: No in progress or pending Instance Refresh found for Auto Scaling group prod-payment",
        ),
    );
    let run = sandbox.run(PAUSE, &["payment"], &asg_env());
    assert_exit(&run, 0, "nothing to pause");
    assert_calls(&sandbox, &[asg_lookup(), asg_cancel()], &run);
    assert!(run.stdout.contains("nothing to pause"), "{}", run.stdout);
}

/// Any other cancel error, a refresh that finishes some other way, or one
/// still Cancelling past RIPCORD_WAIT_SECONDS: exit 5. No group: exit 4.
#[test]
fn pause_asg_failures() {
    let sandbox = Sandbox::new();
    sandbox.respond("aws.autoscaling.describe-auto-scaling-groups", ok("1"));
    sandbox.respond(
        "aws.autoscaling.cancel-instance-refresh",
        fail(
            254,
            "An error occurred (AccessDenied) when calling the CancelInstanceRefresh operation: ActiveInstanceRefreshNotFound is not what this is",
        ),
    );
    let run = sandbox.run(PAUSE, &["payment"], &asg_env());
    assert_exit(&run, 5, "cancel denied");
    assert_calls(&sandbox, &[asg_lookup(), asg_cancel()], &run);

    for (state, wait, why) in [
        ("Successful", "30", "ended 'Successful', not Cancelled"),
        ("Cancelling", "0", "still 'Cancelling' after 0s"),
    ] {
        let sandbox = Sandbox::new();
        sandbox.respond("aws.autoscaling.describe-auto-scaling-groups", ok("1"));
        sandbox.respond("aws.autoscaling.describe-instance-refreshes", ok(state));
        let mut env = asg_env();
        env.push(("RIPCORD_WAIT_SECONDS", wait));
        let run = sandbox.run(PAUSE, &["payment"], &env);
        assert_exit(&run, 5, state);
        assert!(run.last_err_line().contains(why), "{}", run.stderr);
    }

    let sandbox = Sandbox::new();
    sandbox.respond("aws.autoscaling.describe-auto-scaling-groups", ok("0"));
    let run = sandbox.run(PAUSE, &["payment"], &asg_env());
    assert_exit(&run, 4, "no group");
    assert!(
        run.last_err_line()
            .contains("no Auto Scaling group prod-payment")
    );
    assert_calls(&sandbox, &[asg_lookup()], &run);
}

/// Resume on aws-asg is refused (a new refresh would re-upgrade the
/// rolled-back hosts): exit 2 before any call.
#[test]
fn resume_asg_is_refused() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(PAUSE, &["--resume", "payment"], &asg_env());
    assert_exit(&run, 2, "asg resume");
    assert!(
        run.last_err_line().contains("refused") && run.last_err_line().contains("human"),
        "{}",
        run.stderr
    );
    assert_calls(&sandbox, &[], &run);
}

/// No kubectl / aws on PATH: exit 3 naming where to get it.
#[test]
fn pause_without_tool_exits_3() {
    let sandbox = Sandbox::with(&["id"], REAL_TOOLS);
    let run = sandbox.run(PAUSE, &["payment"], &argo_env());
    assert_exit(&run, 3, "no kubectl");
    assert!(
        run.last_err_line().contains("install kubectl"),
        "{}",
        run.stderr
    );
    let run = sandbox.run(PAUSE, &["payment"], &asg_env());
    assert_exit(&run, 3, "no aws");
    assert!(
        run.last_err_line().contains("install the AWS CLI"),
        "{}",
        run.stderr
    );
}

// --- 7. configuration ------------------------------------------------------

/// An unset, empty or unknown backend, a bad region, namespace, context,
/// prefix or number: exit 2, and nothing runs.
#[test]
fn bad_configuration_exits_2_and_runs_nothing() {
    let sandbox = Sandbox::new();
    let rollback_cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "RIPCORD_CLOUD must be aws or aliyun (got '')"),
        (&[("RIPCORD_CLOUD", "")], "RIPCORD_CLOUD must be"),
        (&[("RIPCORD_CLOUD", "gcp")], "(got 'gcp')"),
        (&[("RIPCORD_CLOUD", "AWS")], "(got 'AWS')"),
        (&[("RIPCORD_CLOUD", "aws ")], "(got 'aws ')"),
        (&[("RIPCORD_CLOUD", "$(id)")], "RIPCORD_CLOUD must be"),
        (
            &[("RIPCORD_CLOUD", "aws"), ("RIPCORD_POLL_SECONDS", "abc")],
            "RIPCORD_POLL_SECONDS must be a whole number of seconds (got 'abc')",
        ),
        (
            &[("RIPCORD_CLOUD", "aws"), ("RIPCORD_WAIT_SECONDS", "-1")],
            "RIPCORD_WAIT_SECONDS must be a whole number",
        ),
        (
            &[
                ("RIPCORD_CLOUD", "aliyun"),
                ("RIPCORD_DRAIN_SECONDS", "1e3"),
            ],
            "RIPCORD_DRAIN_SECONDS must be a whole number",
        ),
        (
            &[("RIPCORD_CLOUD", "aliyun")],
            "ALIBABA_CLOUD_REGION_ID must name the region",
        ),
        (
            &[
                ("RIPCORD_CLOUD", "aliyun"),
                ("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou;id"),
            ],
            "ALIBABA_CLOUD_REGION_ID must name the region",
        ),
    ];
    for (env, message) in rollback_cases {
        let id = if env.iter().any(|(_, v)| *v == "aliyun") {
            ECS_ID
        } else {
            EC2_ID
        };
        let run = sandbox.run(ROLLBACK, &[id], env);
        assert_exit(&run, 2, &format!("rollback.sh with {env:?}"));
        assert!(
            run.last_err_line().contains(message),
            "{env:?}: last stderr line: {}",
            run.last_err_line()
        );
        assert_calls(&sandbox, &[], &run);
    }

    let pause_cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "RIPCORD_ROLLOUT must be argo or aws-asg (got '')"),
        (
            &[("RIPCORD_ROLLOUT", "argo-rollouts")],
            "(got 'argo-rollouts')",
        ),
        (&[("RIPCORD_ROLLOUT", "ASG")], "(got 'ASG')"),
        (
            &[
                ("RIPCORD_ROLLOUT", "argo"),
                ("RIPCORD_K8S_NAMESPACE", "$(id)"),
            ],
            "RIPCORD_K8S_NAMESPACE is not a namespace name",
        ),
        (
            &[
                ("RIPCORD_ROLLOUT", "argo"),
                ("RIPCORD_K8S_NAMESPACE", "Shop"),
            ],
            "RIPCORD_K8S_NAMESPACE is not a namespace name",
        ),
        (
            &[
                ("RIPCORD_ROLLOUT", "argo"),
                ("RIPCORD_K8S_CONTEXT", "--kubeconfig=/x"),
            ],
            "RIPCORD_K8S_CONTEXT is not a kubeconfig context name",
        ),
        (
            &[("RIPCORD_ROLLOUT", "argo"), ("RIPCORD_K8S_CONTEXT", "a b")],
            "RIPCORD_K8S_CONTEXT is not a kubeconfig context name",
        ),
        (
            &[
                ("RIPCORD_ROLLOUT", "aws-asg"),
                ("RIPCORD_ASG_PREFIX", "x;id"),
            ],
            "RIPCORD_ASG_PREFIX must match",
        ),
        (
            &[("RIPCORD_ROLLOUT", "aws-asg"), ("RIPCORD_POLL_SECONDS", "")],
            "RIPCORD_POLL_SECONDS must be a whole number",
        ),
    ];
    for (env, message) in pause_cases {
        let run = sandbox.run(PAUSE, &["payment"], env);
        assert_exit(&run, 2, &format!("pause-rollout.sh with {env:?}"));
        assert!(
            run.last_err_line().contains(message),
            "{env:?}: last stderr line: {}",
            run.last_err_line()
        );
        assert_calls(&sandbox, &[], &run);
    }
}

// --- 8. switch-traffic.sh ---------------------------------------------------

const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/pay/50dc6c495c0c9188/f2f7dc8efc522ab2";
const RULE: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/pay/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee";
const TG_BLUE: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pay-blue/73e2d6bc24d8a067";
const TG_GREEN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pay-green/1234567890abcdef";
const SLB_ID: &str = "lb-bp1qjwo61pqz3ahltv0mw";

impl Sandbox {
    /// Writes the pools file (`traffic.conf`) and returns the environment
    /// that points the script at it.
    fn pools(&self, text: &str) -> Vec<(&'static str, String)> {
        let conf = self.dir.path().join("traffic.conf");
        fs::write(&conf, text).expect("pools file");
        vec![
            ("RIPCORD_TRAFFIC_CONF", conf.display().to_string()),
            ("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou".to_owned()),
        ]
    }

    fn run_traffic(&self, args: &[&str], env: &[(&'static str, String)]) -> Run {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.run(TRAFFIC, args, &env)
    }
}

fn alb_pools(sandbox: &Sandbox, target: &str) -> Vec<(&'static str, String)> {
    sandbox.pools(&format!(
        "# service kind settings\n\
         web      alb  listener={LISTENER} primary={TG_GREEN} standby={TG_BLUE}\n\
         payment  alb  {target} primary={TG_BLUE} standby={TG_GREEN}   # the pay pools\n\
         payment  slb  lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc\n"
    ))
}

fn forward(blue: u32, green: u32) -> String {
    format!(
        r#"[{{"Type":"forward","ForwardConfig":{{"TargetGroups":[{{"TargetGroupArn":"{TG_BLUE}","Weight":{blue}}},{{"TargetGroupArn":"{TG_GREEN}","Weight":{green}}}]}}}}]"#
    )
}

fn modify_listener(blue: u32, green: u32) -> Vec<String> {
    argv(&[
        "aws",
        "elbv2",
        "modify-listener",
        "--listener-arn",
        LISTENER,
        "--default-actions",
        &forward(blue, green),
        "--query",
        "Listeners[0].DefaultActions[0].ForwardConfig.TargetGroups[].[TargetGroupArn,Weight]",
        "--output",
        "text",
    ])
}

fn weights(blue: u32, green: u32) -> Answer {
    ok(&format!("{TG_BLUE}\t{blue}\n{TG_GREEN}\t{green}\n"))
}

/// Anything but `--lb alb|slb|nginx switch|restore SERVICE` exits 2, says
/// "refused", and runs nothing.
#[test]
fn switch_traffic_refuses_hostile_arguments() {
    let sandbox = Sandbox::new();
    let env = alb_pools(&sandbox, &format!("listener={LISTENER}"));
    let mut cases: Vec<Vec<String>> = hostile_common()
        .into_iter()
        .map(|service| {
            let mut a = argv(&["--lb", "alb", "switch"]);
            a.extend(service);
            a
        })
        .collect();
    for bad in [
        &["--lb", "alb", "switch", "payment;id"][..],
        &["--lb", "alb", "switch", "payment $(id)"],
        &["--lb", "alb", "switch", "Payment"],
        &["--lb", "alb", "switch", "payment", "web"],
        &["--lb", "elb", "switch", "payment"],
        &["--lb", "alb;id", "switch", "payment"],
        &["--lb", "alb", "swap", "payment"],
        &["--lb", "alb", "$(id)", "payment"],
        &["--lb=alb", "switch", "payment"],
        &["-x", "alb", "switch", "payment"],
        &["alb", "switch", "payment"],
        &["switch", "payment"],
    ] {
        cases.push(argv(bad));
    }
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = sandbox.run_traffic(&args, &env);
        let shown = format!("{:.80?}", args);
        assert_exit(&run, 2, &shown);
        assert!(
            run.stderr.contains("refused"),
            "{shown}: stderr: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{shown}: stdout: {}", run.stdout);
        assert_calls(&sandbox, &[], &run);
    }
}

/// ALB, listener: switch forwards everything to the standby group (weight
/// 100, the primary 0) in one modify-listener call, whose answer is read
/// back; restore the other way round.
#[test]
fn switch_traffic_alb_listener_switches_and_restores() {
    let sandbox = Sandbox::new();
    let env = alb_pools(&sandbox, &format!("listener={LISTENER}"));
    sandbox.respond("aws.elbv2.modify-listener.1", weights(0, 100));
    sandbox.respond("aws.elbv2.modify-listener.2", weights(100, 0));
    let run = sandbox.run_traffic(&["--lb", "alb", "switch", "payment"], &env);
    assert_exit(&run, 0, "alb switch");
    assert_calls(&sandbox, &[modify_listener(0, 100)], &run);
    assert_eq!(
        run.stdout,
        format!(
            "switch: traffic of payment on the standby pool (alb {LISTENER}: {TG_BLUE} weight 0, {TG_GREEN} weight 100)\n"
        )
    );
    let run = sandbox.run_traffic(&["--lb", "alb", "restore", "payment"], &env);
    assert_exit(&run, 0, "alb restore");
    assert_calls(
        &sandbox,
        &[modify_listener(0, 100), modify_listener(100, 0)],
        &run,
    );
    assert!(
        run.stdout
            .starts_with("restore: traffic of payment on the primary pool")
    );
}

/// ALB, listener rule: the same through modify-rule.
#[test]
fn switch_traffic_alb_rule() {
    let sandbox = Sandbox::new();
    let env = alb_pools(&sandbox, &format!("rule={RULE}"));
    sandbox.respond("aws.elbv2.modify-rule", weights(0, 100));
    let run = sandbox.run_traffic(&["--lb", "alb", "switch", "payment"], &env);
    assert_exit(&run, 0, "alb rule switch");
    assert_calls(
        &sandbox,
        &[argv(&[
            "aws",
            "elbv2",
            "modify-rule",
            "--rule-arn",
            RULE,
            "--actions",
            &forward(0, 100),
            "--query",
            "Rules[0].Actions[0].ForwardConfig.TargetGroups[].[TargetGroupArn,Weight]",
            "--output",
            "text",
        ])],
        &run,
    );
}

/// ALB: a failed call, or an answer with other weights than asked, exits 5
/// naming the step.
#[test]
fn switch_traffic_alb_failures_exit_5() {
    let sandbox = Sandbox::new();
    let env = alb_pools(&sandbox, &format!("listener={LISTENER}"));
    sandbox.respond(
        "aws.elbv2.modify-listener.1",
        fail(
            254,
            "An error occurred (ListenerNotFound) when calling the ModifyListener operation",
        ),
    );
    sandbox.respond("aws.elbv2.modify-listener.2", weights(100, 0));
    sandbox.respond(
        "aws.elbv2.modify-listener.3",
        ok(&format!("{TG_BLUE}\t0\n")),
    );
    for (n, want) in [
        (1, "forward listener"),
        (2, "has weight '100', not 0"),
        (3, "answered with 1 target group(s), not 2"),
    ] {
        let run = sandbox.run_traffic(&["--lb", "alb", "switch", "payment"], &env);
        assert_exit(&run, 5, &format!("call {n}"));
        assert!(
            run.last_err_line().contains(want),
            "call {n}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    assert_eq!(sandbox.calls().len(), 3);
}

fn set_backend_servers(servers: &str) -> Vec<String> {
    argv(&[
        "aliyun",
        "slb",
        "SetBackendServers",
        "--RegionId",
        "cn-hangzhou",
        "--LoadBalancerId",
        SLB_ID,
        "--BackendServers",
        servers,
    ])
}

fn slb_answer(pairs: &[(&str, &str)]) -> Answer {
    let servers: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(id, w)| serde_json::json!({"ServerId": id, "Weight": w, "Type": "ecs"}))
        .collect();
    ok(&serde_json::json!({
        "RequestId": "365F4154-92F6-4AE4-92F8-7FF34B540710",
        "LoadBalancerId": SLB_ID,
        "BackendServers": {"BackendServer": servers},
    })
    .to_string())
}

/// SLB: one SetBackendServers call puts the pool to serve at its weight and
/// the other at 0; the backend list it answers with is checked.
#[test]
fn switch_traffic_slb_switches_and_restores() {
    let sandbox = Sandbox::new();
    let env = sandbox.pools(&format!(
        "payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa,i-bp1bbbbbbbbb standby=i-bp1ccccccccc weight=80\n"
    ));
    sandbox.respond(
        "aliyun.slb.SetBackendServers.1",
        slb_answer(&[
            ("i-bp1aaaaaaaaa", "0"),
            ("i-bp1bbbbbbbbb", "0"),
            ("i-bp1ccccccccc", "80"),
        ]),
    );
    sandbox.respond(
        "aliyun.slb.SetBackendServers.2",
        slb_answer(&[
            ("i-bp1aaaaaaaaa", "80"),
            ("i-bp1bbbbbbbbb", "80"),
            ("i-bp1ccccccccc", "0"),
        ]),
    );
    let run = sandbox.run_traffic(&["--lb", "slb", "switch", "payment"], &env);
    assert_exit(&run, 0, "slb switch");
    let switch = set_backend_servers(
        r#"[{"ServerId":"i-bp1ccccccccc","Weight":"80","Type":"ecs"},{"ServerId":"i-bp1aaaaaaaaa","Weight":"0","Type":"ecs"},{"ServerId":"i-bp1bbbbbbbbb","Weight":"0","Type":"ecs"}]"#,
    );
    assert_calls(&sandbox, std::slice::from_ref(&switch), &run);
    assert_eq!(
        run.stdout,
        format!(
            "switch: traffic of payment on the standby pool (slb {SLB_ID}: i-bp1ccccccccc at weight 80, i-bp1aaaaaaaaa i-bp1bbbbbbbbb at 0)\n"
        )
    );
    let run = sandbox.run_traffic(&["--lb", "slb", "restore", "payment"], &env);
    assert_exit(&run, 0, "slb restore");
    let restore = set_backend_servers(
        r#"[{"ServerId":"i-bp1aaaaaaaaa","Weight":"80","Type":"ecs"},{"ServerId":"i-bp1bbbbbbbbb","Weight":"80","Type":"ecs"},{"ServerId":"i-bp1ccccccccc","Weight":"0","Type":"ecs"}]"#,
    );
    assert_calls(&sandbox, &[switch, restore], &run);
}

/// SLB: an answer that does not show the weights asked for exits 5.
#[test]
fn switch_traffic_slb_wrong_answer_exits_5() {
    let sandbox = Sandbox::new();
    let env = sandbox.pools(&format!(
        "payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc\n"
    ));
    sandbox.respond(
        "aliyun.slb.SetBackendServers.1",
        slb_answer(&[("i-bp1aaaaaaaaa", "100"), ("i-bp1ccccccccc", "100")]),
    );
    sandbox.respond(
        "aliyun.slb.SetBackendServers.2",
        slb_answer(&[("i-bp1ccccccccc", "100")]),
    );
    for want in [
        "i-bp1aaaaaaaaa has weight '100', not 0",
        "i-bp1aaaaaaaaa has weight 'absent', not 0",
    ] {
        let run = sandbox.run_traffic(&["--lb", "slb", "switch", "payment"], &env);
        assert_exit(&run, 5, want);
        assert!(run.last_err_line().contains(want), "{}", run.stderr);
    }
}

/// nginx: the include file is replaced (same directory, renamed over) by
/// the pool to serve, then `nginx -t`, then `nginx -s reload`; restore
/// writes the primary pool back.
#[test]
fn switch_traffic_nginx_rewrites_the_upstream_and_reloads() {
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path().join("upstreams");
    fs::create_dir(&dir).unwrap();
    let file = dir.join("payment.conf");
    fs::write(&file, "server 10.0.1.11:8080;\nserver 10.0.1.12:8080;\n").unwrap();
    let env = sandbox.pools(&format!(
        "payment nginx file={} primary=10.0.1.11:8080,10.0.1.12:8080 standby=10.0.2.11:8080,standby-1.pay.internal:8443\n",
        file.display()
    ));
    let run = sandbox.run_traffic(&["--lb", "nginx", "switch", "payment"], &env);
    assert_exit(&run, 0, "nginx switch");
    let test = argv(&["nginx", "-t"]);
    let reload = argv(&["nginx", "-s", "reload"]);
    assert_calls(&sandbox, &[test.clone(), reload.clone()], &run);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "# written by switch-traffic.sh: the standby pool of payment (switch)\n\
         server 10.0.2.11:8080;\nserver standby-1.pay.internal:8443;\n"
    );
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "a temporary file was left behind"
    );
    assert_eq!(
        run.stdout,
        format!(
            "switch: traffic of payment on the standby pool (nginx {}: 10.0.2.11:8080 standby-1.pay.internal:8443)\n",
            file.display()
        )
    );
    let run = sandbox.run_traffic(&["--lb", "nginx", "restore", "payment"], &env);
    assert_exit(&run, 0, "nginx restore");
    assert_calls(
        &sandbox,
        &[test.clone(), reload.clone(), test, reload],
        &run,
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "# written by switch-traffic.sh: the primary pool of payment (restore)\n\
         server 10.0.1.11:8080;\nserver 10.0.1.12:8080;\n"
    );
}

/// nginx: a configuration `nginx -t` refuses, or a failed reload, puts the
/// previous file back (exit 4); nothing is reloaded after a failed test.
#[test]
fn switch_traffic_nginx_refused_config_puts_the_old_file_back() {
    let sandbox = Sandbox::new();
    let file = sandbox.dir.path().join("payment.conf");
    let before = "server 10.0.1.11:8080; # primary\n";
    fs::write(&file, before).unwrap();
    let env = sandbox.pools(&format!(
        "payment nginx file={} primary=10.0.1.11:8080 standby=10.0.2.11:8080\n",
        file.display()
    ));
    // The fake's key is `PROG.ARG1.ARG2`: `nginx.-t.` for `nginx -t`.
    sandbox.respond(
        "nginx.-t..1",
        fail(
            1,
            "nginx: [emerg] host not found in upstream \"10.0.2.11:8080\"",
        ),
    );
    sandbox.respond(
        "nginx.-s.reload.1",
        fail(1, "nginx: [error] invalid PID number"),
    );
    let run = sandbox.run_traffic(&["--lb", "nginx", "switch", "payment"], &env);
    assert_exit(&run, 4, "nginx -t fails");
    assert!(
        run.last_err_line().contains("nginx -t refused"),
        "{}",
        run.stderr
    );
    assert_calls(&sandbox, &[argv(&["nginx", "-t"])], &run);
    assert_eq!(fs::read_to_string(&file).unwrap(), before);

    let run = sandbox.run_traffic(&["--lb", "nginx", "switch", "payment"], &env);
    assert_exit(&run, 4, "reload fails");
    assert!(
        run.last_err_line().contains("nginx -s reload failed"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    assert_eq!(sandbox.calls().len(), 3);
}

/// The pools file is checked like the arguments: a missing or doubled
/// line, an unknown key, a value of the wrong shape (hostile or not), a
/// missing region or tool: exit 2 (3 for the tool), nothing runs.
#[test]
fn switch_traffic_bad_pools_exit_2_and_run_nothing() {
    let sandbox = Sandbox::new();
    let good = format!("listener={LISTENER} primary={TG_BLUE} standby={TG_GREEN}");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            String::new(),
            "alb",
            "expected one line 'payment alb ...', found 0",
        ),
        (
            format!("payment alb {good}\npayment alb {good}\n"),
            "alb",
            "found 2",
        ),
        (
            format!("payment alb {good} colour=blue\n"),
            "alb",
            "unknown key colour=",
        ),
        (
            format!("payment alb {good} primary={TG_GREEN}\n"),
            "alb",
            "primary given twice",
        ),
        (
            format!("payment alb primary={TG_BLUE} standby={TG_GREEN}\n"),
            "alb",
            "needs listener= or rule=",
        ),
        (
            format!(
                "payment alb listener={LISTENER} rule={RULE} primary={TG_BLUE} standby={TG_GREEN}\n"
            ),
            "alb",
            "needs listener= or rule=",
        ),
        (
            format!("payment alb listener={LISTENER};id primary={TG_BLUE} standby={TG_GREEN}\n"),
            "alb",
            "listener=",
        ),
        (
            format!("payment alb listener={LISTENER} primary=$(id) standby={TG_GREEN}\n"),
            "alb",
            "primary='$(id)'",
        ),
        (
            format!("payment alb listener={LISTENER} primary={TG_BLUE} standby={TG_BLUE}\n"),
            "alb",
            "the same target group",
        ),
        (
            format!("payment alb listener {LISTENER}\n"),
            "alb",
            "is not KEY=VALUE",
        ),
        (
            format!("payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1aaaaaaaaa\n"),
            "slb",
            "listed twice",
        ),
        (
            format!(
                "payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc weight=0\n"
            ),
            "slb",
            "weight='0'",
        ),
        (
            format!("payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa,`id` standby=i-bp1ccccccccc\n"),
            "slb",
            "primary=",
        ),
        (
            "payment slb lb=lb-x primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc\n".to_owned(),
            "slb",
            "lb='lb-x'",
        ),
        (
            "payment nginx file=/etc/nginx/../shadow.conf primary=a:1 standby=b:2\n".to_owned(),
            "nginx",
            "has . or .. in it",
        ),
        (
            "payment nginx file=relative.conf primary=a:1 standby=b:2\n".to_owned(),
            "nginx",
            "file='relative.conf'",
        ),
        (
            "payment nginx file=/nonexistent/payment.conf primary=a:1 standby=b:2\n".to_owned(),
            "nginx",
            "no file /nonexistent/payment.conf",
        ),
        (
            "payment nginx file=/x/p.conf primary=a:1;reboot standby=b:2\n".to_owned(),
            "nginx",
            "primary=",
        ),
        (
            "payment nginx file=/x/p.conf primary=a:1 standby=-b:2\n".to_owned(),
            "nginx",
            "standby=",
        ),
    ];
    for (text, lb, want) in &cases {
        let env = sandbox.pools(text);
        let run = sandbox.run_traffic(&["--lb", lb, "switch", "payment"], &env);
        assert_exit(&run, 2, text);
        assert!(
            run.last_err_line().contains(want),
            "{text}: last stderr line: {}",
            run.last_err_line()
        );
        assert_calls(&sandbox, &[], &run);
    }
    // No pools file; no region.
    let run = sandbox.run_traffic(
        &["--lb", "alb", "switch", "payment"],
        &[(
            "RIPCORD_TRAFFIC_CONF",
            "/nonexistent/traffic.conf".to_owned(),
        )],
    );
    assert_exit(&run, 2, "no pools file");
    assert!(
        run.last_err_line().contains("cannot read the pools file"),
        "{}",
        run.stderr
    );
    let mut env = sandbox.pools(&format!(
        "payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc\n"
    ));
    env.retain(|(k, _)| *k != "ALIBABA_CLOUD_REGION_ID");
    let run = sandbox.run_traffic(&["--lb", "slb", "switch", "payment"], &env);
    assert_exit(&run, 2, "no region");
    assert!(
        run.last_err_line().contains("ALIBABA_CLOUD_REGION_ID"),
        "{}",
        run.stderr
    );
    assert_calls(&sandbox, &[], &run);
}

/// A missing CLI exits 3 before anything runs.
#[test]
fn switch_traffic_without_tool_exits_3() {
    let sandbox = Sandbox::with(&["id"], REAL_TOOLS);
    let file = sandbox.dir.path().join("payment.conf");
    fs::write(&file, "server 10.0.1.11:8080;\n").unwrap();
    let env = sandbox.pools(&format!(
        "payment alb listener={LISTENER} primary={TG_BLUE} standby={TG_GREEN}\n\
         payment slb lb={SLB_ID} primary=i-bp1aaaaaaaaa standby=i-bp1ccccccccc\n\
         payment nginx file={} primary=10.0.1.11:8080 standby=10.0.2.11:8080\n",
        file.display()
    ));
    for (lb, want) in [
        ("alb", "install the AWS CLI"),
        ("slb", "install the Alibaba Cloud CLI"),
        ("nginx", "install nginx"),
    ] {
        let run = sandbox.run_traffic(&["--lb", lb, "switch", "payment"], &env);
        assert_exit(&run, 3, lb);
        assert!(run.last_err_line().contains(want), "{lb}: {}", run.stderr);
    }
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "server 10.0.1.11:8080;\n"
    );
}
