#!/usr/bin/env bash
# Checks everything under deploy/ (see deploy/README.md):
#
#   bash scripts/check-deploy.sh
#
# Prints one line per check, `ok  <what>` or `FAIL <what>: <why>`, and
# exits non-zero if any failed. Idempotent. Tools it needs and does not
# find are installed from Debian packages (apt-get, as root): python3-yaml,
# prometheus-alertmanager (amtool), prometheus (promtool; no server is left
# running), systemd (systemd-analyze). A tool that cannot be installed
# fails the checks that need it, naming the package; nothing is skipped.
#
# The ripcord binary: $RIPCORD_BIN if set, else `cargo build` and
# target/debug/ripcord. There is no Docker engine or Kubernetes API here:
# the Dockerfile and the manifests are parsed and cross-checked (and the
# Dockerfile's build context compiled with `cargo check`), not built or
# applied.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")
SMOKE_PID=
POLICY_RC_CREATED=

cleanup() {
    if [[ -n $SMOKE_PID ]] && kill -0 "$SMOKE_PID" 2>/dev/null; then
        kill -KILL "$SMOKE_PID" 2>/dev/null
    fi
    if [[ -n $POLICY_RC_CREATED ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

PASSED=0
FAILED=0
ok() {
    printf 'ok  %s\n' "$1"
    PASSED=$((PASSED + 1))
}
fail() {
    printf 'FAIL %s: %s\n' "$1" "$2"
    FAILED=$((FAILED + 1))
}
# The last few non-empty lines of a command's output, on one line.
why() {
    local text
    text=$(grep -v '^[[:space:]]*$' "$1" | tail -n 3 | tr -s ' \t\n' ' ' | cut -c1-500)
    printf '%s' "${text:-exit status $2, no output}"
}
# run WHAT CMD...: ok when CMD exits 0.
run() {
    local what=$1 rc=0
    shift
    "$@" >"$TMP/out" 2>&1 || rc=$?
    if ((rc == 0)); then ok "$what"; else fail "$what" "$(why "$TMP/out" "$rc")"; fi
}
# run_quiet WHAT CMD...: ok when CMD exits 0 and prints nothing.
run_quiet() {
    local what=$1 rc=0
    shift
    "$@" >"$TMP/out" 2>&1 || rc=$?
    if ((rc == 0)) && [[ ! -s $TMP/out ]]; then
        ok "$what"
    else
        fail "$what" "$(why "$TMP/out" "$rc")"
    fi
}
# py WHAT < script: a Python check (PyYAML available); it prints why it
# failed and exits non-zero, or prints an optional detail line.
py() {
    local what=$1 rc=0
    shift
    if [[ -n ${MISSING[python]:-} ]]; then
        fail "$what" "${MISSING[python]}"
        cat >/dev/null
        return
    fi
    "$PY" - "$@" >"$TMP/out" 2>&1 || rc=$?
    if ((rc == 0)); then
        local detail
        detail=$(tail -n 1 "$TMP/out")
        ok "$what${detail:+ ($detail)}"
    elif grep -q '^Traceback' "$TMP/out"; then
        # An assertion or exception: its last line says what is wrong.
        fail "$what" "$(grep -v '^[[:space:]]*$' "$TMP/out" | tail -n 1 | sed 's/^AssertionError: //' | cut -c1-500)"
    else
        fail "$what" "$(why "$TMP/out" "$rc")"
    fi
}

# --- tools -----------------------------------------------------------------

declare -A MISSING=()
APT_UPDATED=

apt_install() {
    if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
        return 1
    fi
    for _ in 1 2; do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
            >>"$TMP/apt.log" 2>&1; then
            return 0
        fi
        # Package lists may be missing or stale: update once, then retry.
        [[ -n $APT_UPDATED ]] && return 1
        APT_UPDATED=1
        apt-get update >>"$TMP/apt.log" 2>&1 || return 1
    done
    return 1
}

# need TOOL PACKAGE: make TOOL available or record why it is not.
need() {
    local tool=$1 pkg=$2
    command -v "$tool" >/dev/null && return 0
    if apt_install "$pkg" && command -v "$tool" >/dev/null; then
        ok "installed $pkg ($tool)"
        return 0
    fi
    MISSING[$tool]="$tool is missing: install the Debian package $pkg (apt-get install $pkg, as root)"
    fail "tool $tool" "${MISSING[$tool]}"
}

# needs WHAT TOOL...: FAIL WHAT if a tool it needs is missing.
needs() {
    local what=$1 t
    shift
    for t in "$@"; do
        if [[ -n ${MISSING[$t]:-} ]]; then
            fail "$what" "${MISSING[$t]}"
            return 1
        fi
    done
}

# Python with PyYAML.
PY=
for c in python3 /usr/bin/python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import yaml' 2>/dev/null; then
        PY=$c
        break
    fi
done
if [[ -z $PY ]]; then
    if apt_install python3-yaml && /usr/bin/python3 -c 'import yaml' 2>/dev/null; then
        PY=/usr/bin/python3
        ok "installed python3-yaml"
    else
        MISSING[python]="python3 with PyYAML is missing: install the Debian package python3-yaml"
        fail "tool python3 (PyYAML)" "${MISSING[python]}"
    fi
fi

need amtool prometheus-alertmanager
need systemd-analyze systemd
need shellcheck shellcheck

# promtool comes with the Prometheus server package, whose install may try
# to start the server: policy-rc.d forbids that (a temporary one if the
# machine has none), and anything it started anyway is stopped again.
if ! command -v promtool >/dev/null; then
    if ((EUID == 0)) && [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# check-deploy.sh: no service starts during its installs\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    before=$(pgrep -x prometheus | sort)
    need promtool prometheus
    if [[ -n $POLICY_RC_CREATED ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=
    fi
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null &&
        systemctl is-enabled --quiet prometheus.service 2>/dev/null; then
        systemctl disable --now prometheus.service >/dev/null 2>&1
    fi
    for pid in $(comm -13 <(printf '%s\n' "$before") <(pgrep -x prometheus | sort)); do
        kill "$pid" 2>/dev/null
    done
    if [[ -n $(comm -13 <(printf '%s\n' "$before") <(pgrep -x prometheus | sort)) ]]; then
        fail "prometheus install" "a Prometheus server started by the install is still running"
    fi
fi

# The ripcord binary.
if [[ -n ${RIPCORD_BIN:-} ]]; then
    # Absolute: it stands in for /usr/local/bin/ripcord in the systemd unit.
    BIN=$(realpath -m -- "$RIPCORD_BIN")
    if [[ ! -x $BIN ]]; then
        MISSING[ripcord]="RIPCORD_BIN=$BIN is not an executable"
        fail "ripcord binary" "${MISSING[ripcord]}"
    fi
else
    BIN=$ROOT/target/debug/ripcord
    if cargo build --quiet --bin ripcord >"$TMP/out" 2>&1; then
        ok "cargo build (target/debug/ripcord)"
    else
        MISSING[ripcord]="cargo build failed: $(why "$TMP/out" 1)"
        fail "cargo build" "$(why "$TMP/out" 1)"
    fi
fi
export BIN ROOT TMP

# --- ripcord.yaml ----------------------------------------------------------

# stage SRC DIR: DIR/ripcord.yaml = SRC with every secret file under
# /run/secrets/ripcord/ moved to DIR/secrets/ (secrets are read at check
# time) and the executors' scripts, installed at /usr/local/lib/ripcord/,
# taken from deploy/ (`check` verifies they exist and are executable),
# DIR/rules = rules/*.yaml. The stand-in secrets: the token
# `check-deploy-token`, chat webhooks on 127.0.0.1:9 (nothing listens: a
# send fails at once), a placeholder for the rest.
stage() {
    "$PY" - "$1" "$2" <<'PY'
import os, re, shutil, sys
src, d = sys.argv[1], sys.argv[2]
text = open(src).read()
prefix = "/run/secrets/ripcord/"
names = sorted(set(re.findall(r"\{file: " + re.escape(prefix) + r"([a-z0-9-]+)\}", text)))
if "token" not in names:
    sys.exit("%s: http.token is not {file: %stoken}" % (src, prefix))
os.makedirs(os.path.join(d, "secrets"), exist_ok=True)
for name in names:
    if name == "token":
        value = "check-deploy-token"
    elif name.endswith("-url"):
        # Parsed (a PostgreSQL URL) but never connected to by `check`.
        value = "postgres://ripcord@127.0.0.1:9/ripcord"
    elif name.endswith("-webhook"):
        value = "http://127.0.0.1:9/%s?access_token=check-deploy&key=check-deploy" % name
    else:
        value = "check-deploy-" + name
    with open(os.path.join(d, "secrets", name), "w") as f:
        f.write(value + "\n")
    text = text.replace("{file: %s%s}" % (prefix, name), "{file: %s}" % os.path.join(d, "secrets", name))
if re.search(r"file:\s*" + re.escape(prefix), text):
    sys.exit("%s: a secret under %s is not written as {file: %sNAME}" % (src, prefix, prefix))
scripts = "/usr/local/lib/ripcord/"
if scripts not in text:
    sys.exit("%s: no executor runs a script from %s" % (src, scripts))
text = text.replace(scripts, os.path.join(os.environ["ROOT"], "deploy") + "/")
with open(os.path.join(d, "ripcord.yaml"), "w") as f:
    f.write(text)
shutil.rmtree(os.path.join(d, "rules"), ignore_errors=True)
shutil.copytree(os.path.join(os.environ["ROOT"], "rules"), os.path.join(d, "rules"))
PY
}

CFG=$TMP/etc/ripcord
if [[ -z ${MISSING[python]:-} ]] && stage deploy/ripcord.yaml "$CFG" >"$TMP/out" 2>&1; then
    STAGED=1
else
    STAGED=
    fail "stage deploy/ripcord.yaml" "$(why "$TMP/out" 1)"
fi

if needs "deploy/ripcord.yaml passes ripcord check" ripcord && [[ -n $STAGED ]]; then
    # No --rules: the config's own `rules: rules` must find the rules.
    run "deploy/ripcord.yaml passes ripcord check (token from a temp file, rules via its rules: key)" \
        "$BIN" check --config "$CFG/ripcord.yaml"
fi

py "deploy/ripcord.yaml is the documented production example" <<'PY'
import yaml
c = yaml.safe_load(open("deploy/ripcord.yaml"))
want = ["engine", "tiers", "policy", "rules", "kafka", "http", "journal", "log", "shutdown",
        "channels", "routing", "escalation", "approvals", "status", "executors"]
missing = [s for s in want if s not in c]
assert not missing, "missing sections: %s" % missing
k, h = c["kafka"], c["http"]
assert k.get("brokers"), "kafka.brokers: external brokers expected"
assert k.get("dead_letter_topic"), "kafka.dead_letter_topic not set"
assert k.get("properties"), "kafka.properties not set"
assert h["listen"] == "0.0.0.0:9464", "http.listen is %s" % h["listen"]
assert h["token"] == {"file": "/run/secrets/ripcord/token"}, "http.token is %s" % h["token"]
assert c["journal"]["path"] == "/var/lib/ripcord/ripcord-state.db", c["journal"]
assert c["log"]["format"] == "json", c["log"]
s = c["tiers"]["services"]
for svc, tier in {"payment": "high", "account-db": "high", "signalling": "high",
                  "log-agent": "medium", "monitoring-agent": "medium", "web-ui": "low"}.items():
    assert s.get(svc) == tier, "tiers.services.%s is %s, expected %s" % (svc, s.get(svc), tier)
p = c["policy"]
plan = {"low": ["rollback", "notify"], "medium": ["request_approval", "notify"],
        "high": ["pause_rollout", "page", "request_approval"], "minor": ["notify"]}
assert p == plan, "policy %s differs from the plan's defaults %s" % (p, plan)
types = sorted({ch["type"] for ch in c["channels"].values()})
for t in ["dingtalk", "wecom", "email", "sms", "voice"]:
    assert t in types, "no %s channel in channels (types: %s)" % (t, types)
for ch in c["channels"].values():
    for k in ["webhook", "secret", "password", "access_key_secret", "auth_token"]:
        v = ch.get(k)
        assert v is None or (isinstance(v, dict) and "file" in v), "a literal secret in channels: %s" % k
steps = c["escalation"]["high"]
assert [s["after"] for s in steps] == ["0s", "5m", "10m"], "escalation.high is %s" % steps
assert c["approvals"]["expire_after"] == "30m", c["approvals"]
assert c["status"]["every"] == "15m", c["status"]
e = c["executors"]
assert e["rollback"]["budget"] == {"per_service": 5, "overall": 20, "window": "10m"}, e["rollback"]["budget"]
for key, script in [("rollback", "rollback.sh"), ("pause_rollout", "pause-rollout.sh"), ("resume_rollout", "pause-rollout.sh"),
                    ("switch_traffic", "switch-traffic.sh"), ("restore_traffic", "switch-traffic.sh")]:
    argv = e[key]["command"]["argv"]
    assert argv[0].endswith("/" + script), "executors.%s runs %s, expected deploy/%s" % (key, argv[0], script)
print("all %d sections, tiers, policy, escalation and budget as planned" % len(want))
PY

if needs "rule tests pass with deploy/ripcord.yaml" ripcord && [[ -n $STAGED ]]; then
    run "rule tests pass with deploy/ripcord.yaml's tiers and policy (ripcord test)" \
        "$BIN" test --config "$CFG/ripcord.yaml"
fi

# Smoke run: the real binary on this config (embedded broker instead of
# the example brokers, a free loopback port, a temp journal).
smoke() {
    "$PY" - <<'PY' || return 1
import os, socket, yaml
d = os.environ["TMP"] + "/etc/ripcord"
c = yaml.safe_load(open(d + "/ripcord.yaml"))
del c["kafka"]["brokers"]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
c["http"]["listen"] = "127.0.0.1:%d" % port
c["journal"]["path"] = os.environ["TMP"] + "/smoke-state.db"
yaml.safe_dump(c, open(d + "/smoke.yaml", "w"), sort_keys=False)
open(os.environ["TMP"] + "/smoke.port", "w").write(str(port))
PY
    "$BIN" run --config "$CFG/smoke.yaml" >"$TMP/smoke.out" 2>"$TMP/smoke.err" &
    SMOKE_PID=$!
    SMOKE_PID=$SMOKE_PID "$PY" - <<'PY'
import datetime, json, os, signal, time, urllib.request, urllib.error
port = open(os.environ["TMP"] + "/smoke.port").read()
base = "http://127.0.0.1:%s" % port
pid = int(os.environ["SMOKE_PID"])

def get(path, body=None, token=None):
    req = urllib.request.Request(base + path, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def alive():
    # ripcord is the shell's child: once it exits it stays a zombie until
    # the shell waits for it, so look at its state, not just its pid.
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

def stderr_tail():
    return open(os.environ["TMP"] + "/smoke.err").read().strip()[-300:]

deadline = time.time() + 30
while True:
    try:
        if get("/readyz")[0] == 200:
            break
    except OSError:
        pass
    if not alive():
        raise SystemExit("ripcord exited before it was ready: " + stderr_tail())
    if time.time() > deadline:
        raise SystemExit("not ready within 30 s: " + stderr_tail())
    time.sleep(0.2)
assert get("/healthz") == (200, "ok\n"), get("/healthz")
st, body = get("/metrics")
assert st == 200 and "# EOF" in body, (st, body[:200])
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
alert = json.dumps({"version": "4", "status": "firing", "receiver": "ripcord", "alerts": [{
    "status": "firing", "startsAt": now, "fingerprint": "check-deploy",
    "labels": {"alertname": "InstanceDown", "service": "web-ui", "instance": "i-smoke", "severity": "critical"}}]}).encode()
st, body = get("/api/v1/alerts", alert)
assert st == 401, "no token: expected 401, got %s %s" % (st, body)
st, body = get("/api/v1/alerts", alert, token="wrong")
assert st == 401, "wrong token: expected 401, got %s %s" % (st, body)
st, body = get("/api/v1/alerts", alert, token="check-deploy-token")
assert st == 200, "with the token: expected 200, got %s %s" % (st, body)
t0 = time.time()
os.kill(pid, signal.SIGTERM)
grace = 10
while time.time() - t0 < grace + 5:
    if not alive():
        break
    time.sleep(0.1)
else:
    raise SystemExit("still running %d s after SIGTERM" % (grace + 5))
print("%.1f" % (time.time() - t0))
PY
}

if needs "ripcord run with deploy/ripcord.yaml" ripcord python && [[ -n $STAGED ]]; then
    rc=0
    smoke >"$TMP/smoke.check" 2>&1 || rc=$?
    if ((rc == 0)); then
        wait "$SMOKE_PID"
        exit_code=$?
        SMOKE_PID=
        secs=$(tail -n 1 "$TMP/smoke.check")
        if ((exit_code != 0)); then
            fail "ripcord run with deploy/ripcord.yaml" "exit status $exit_code after SIGTERM: $(why "$TMP/smoke.err" "$exit_code")"
        elif ! grep -q '"rule":"alertmanager-forwarded"' "$TMP/smoke.out"; then
            fail "ripcord run with deploy/ripcord.yaml" "the accepted alert printed no decision"
        else
            ok "ripcord run with deploy/ripcord.yaml (embedded broker): /healthz, /readyz, /metrics; alerts need the token; SIGTERM exit 0 after ${secs}s"
        fi
    else
        fail "ripcord run with deploy/ripcord.yaml" "$(why "$TMP/smoke.check" "$rc")"
    fi
    if [[ -n $SMOKE_PID ]]; then
        kill -KILL "$SMOKE_PID" 2>/dev/null
        wait "$SMOKE_PID" 2>/dev/null
        SMOKE_PID=
    fi
fi

# --- scripts ---------------------------------------------------------------

# The executors' scripts and this project's own shell scripts: shellcheck
# (all default checks plus unassigned upper-case variables).
# (tests/deploy_scripts.rs runs the deploy scripts against fake cloud CLIs.)
SCRIPTS=(deploy/rollback.sh deploy/pause-rollout.sh deploy/switch-traffic.sh deploy/kubernetes/gen-configmap.sh
    scripts/check-deploy.sh scripts/setup scripts/test scripts/fuzz.sh scripts/run .ci/run)
if needs "shellcheck deploy/ and scripts/" shellcheck; then
    run_quiet "shellcheck: ${#SCRIPTS[@]} scripts, no findings" \
        shellcheck -x -o check-unassigned-uppercase "${SCRIPTS[@]}"
fi

# --- systemd ---------------------------------------------------------------

UNIT=deploy/systemd/ripcord.service
# `systemd-analyze verify` requires every Exec binary to exist: verify a
# copy whose /usr/local/bin/ripcord is the binary checked here. (--root=
# would need the whole unit tree, sysinit.target and all, under the root.)
mkdir -p "$TMP/systemd"
sed "s#/usr/local/bin/ripcord#$BIN#g" "$UNIT" >"$TMP/systemd/ripcord.service"
if needs "systemd unit passes systemd-analyze verify" systemd-analyze ripcord; then
    # verify exits 0 on unknown keys and bad values: any output is a failure.
    run_quiet "systemd unit passes systemd-analyze verify (no warnings)" \
        systemd-analyze verify "$TMP/systemd/ripcord.service"
fi
if needs "systemd unit exposure" systemd-analyze ripcord; then
    # --threshold counts in tenths: 25 = exposure 2.5 ("OK" is below 4.0).
    run "systemd unit's exposure (systemd-analyze security --offline) at most 2.5: $(
        systemd-analyze security --offline=true --no-pager "$TMP/systemd/ripcord.service" 2>/dev/null |
            sed -n 's/.*Overall exposure level for [^:]*: *\([0-9.]*\).*/\1/p')" \
        systemd-analyze security --offline=true --threshold=25 --no-pager "$TMP/systemd/ripcord.service"
fi

py "systemd unit settings agree with ripcord.yaml" <<'PY'
import re, yaml
unit = open("deploy/systemd/ripcord.service").read()
kv = {}
for line in unit.splitlines():
    m = re.match(r"^([A-Za-z]+)=(.*)$", line)
    if m:
        kv.setdefault(m.group(1), []).append(m.group(2))
one = lambda k: kv.get(k, [None])[-1]
cfg = yaml.safe_load(open("deploy/ripcord.yaml"))
assert one("DynamicUser") == "yes" or one("User"), "no DynamicUser= or User="
assert one("StateDirectory") == "ripcord", "StateDirectory=%s" % one("StateDirectory")
assert cfg["journal"]["path"].startswith("/var/lib/ripcord/"), "journal outside StateDirectory"
for k, v in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "Restart": "on-failure"}.items():
    assert one(k) == v, "%s=%s, expected %s" % (k, one(k), v)
creds = {c.split(":", 1)[0] for c in kv.get("LoadCredential", [])}
# Secrets the config reads (not the ones in comments, such as the
# cluster's journal-url on a KUBERNETES line).
live = "\n".join(l for l in open("deploy/ripcord.yaml").read().splitlines() if not l.lstrip().startswith("#"))
named = set(re.findall(r"\{file: /run/secrets/ripcord/([a-z0-9-]+)\}", live))
assert "token" in named, "ripcord.yaml's token is not under /run/secrets/ripcord/"
assert named <= creds, "secrets with no LoadCredential=: %s" % sorted(named - creds)
# The token's path on systemd hosts, as ripcord.yaml's SYSTEMD comment says.
want = "{file: /run/credentials/ripcord.service/token}"
assert want in open("deploy/ripcord.yaml").read(), "ripcord.yaml does not name %s" % want
def secs(s):
    # ripcord (10s, 1m30s) and systemd (30s, 1min 30s) durations.
    s = str(s).replace(" ", "")
    if s.isdigit():
        return int(s)
    unit = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|sec|min|s|m|h)", s)
    assert "".join(n + u for n, u in parts) == s, "cannot read duration %r" % s
    return sum(int(n) * unit[u] for n, u in parts)
grace = secs(cfg["shutdown"]["grace"])
stop = secs(one("TimeoutStopSec"))
assert stop > grace, "TimeoutStopSec=%s is not longer than shutdown.grace=%ss" % (stop, grace)
start = one("ExecStart").split()
pre = one("ExecStartPre").split()
assert start[1] == "run" and pre[1] == "check", (start, pre)
conf = lambda argv: argv[argv.index("--config") + 1]
assert conf(start) == conf(pre), "ExecStartPre checks %s, ExecStart runs %s" % (conf(pre), conf(start))
print("TimeoutStopSec=%ss > grace %ss; ExecStartPre checks %s" % (stop, grace, conf(pre)))
PY

# --- Kubernetes ------------------------------------------------------------

py "kubernetes: every document parses, has apiVersion/kind/metadata.name, no namespace" <<'PY'
import glob, yaml
n = 0
for f in sorted(glob.glob("deploy/kubernetes/*.yaml") + ["deploy/kubernetes/secret.yaml.template"]):
    for i, d in enumerate(yaml.safe_load_all(open(f))):
        if d is None:
            continue
        n += 1
        where = "%s document %d" % (f, i + 1)
        for k in ("apiVersion", "kind"):
            assert isinstance(d.get(k), str) and d[k], "%s: no %s" % (where, k)
        md = d.get("metadata") or {}
        assert md.get("name"), "%s: no metadata.name" % where
        assert "namespace" not in md, "%s: sets metadata.namespace" % where
print("%d documents" % n)
PY

run "kubernetes: configmap.yaml is up to date (deploy/kubernetes/gen-configmap.sh --stdout | diff)" \
    bash -c 'diff <(bash deploy/kubernetes/gen-configmap.sh --stdout) deploy/kubernetes/configmap.yaml'

py "kubernetes: ConfigMap rules are byte-identical to rules/*.yaml, its ripcord.yaml is deploy/ripcord.yaml with the KUBERNETES lines in place" <<'PY'
import glob, os, re, yaml
docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml"))}
rules = docs["ripcord-rules"]["data"]
files = {os.path.basename(f): f for f in glob.glob("rules/*.yaml")}
assert set(rules) == set(files), "ConfigMap has %s, rules/ has %s" % (sorted(rules), sorted(files))
for k, f in files.items():
    assert rules[k] == open(f).read(), "%s differs from rules/%s" % (k, k)
# `  # KUBERNETES: key: value` replaces the line above it; nothing else changes.
out, marked = [], 0
for line in open("deploy/ripcord.yaml").read().splitlines(keepends=True):
    m = re.match(r"^( *)# KUBERNETES: (.*\n)$", line)
    if m:
        assert out, "a KUBERNETES line with no line above it"
        out[-1] = m.group(1) + m.group(2)
        marked += 1
    else:
        out.append(line)
assert marked, "deploy/ripcord.yaml has no KUBERNETES lines (the cluster's journal)"
assert docs["ripcord-config"]["data"]["ripcord.yaml"] == "".join(out), \
    "ripcord.yaml differs from deploy/ripcord.yaml with its KUBERNETES lines in place"
print("%d rule files, %d KUBERNETES lines" % (len(files), marked))
PY

# Extract the ConfigMaps the way the Deployment mounts them.
K8S=$TMP/k8s
py "kubernetes: extract the ConfigMaps" <<'PY'
import os, yaml
d = os.environ["TMP"] + "/k8s/src"
os.makedirs(d + "/rules", exist_ok=True)
for doc in yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")):
    sub = d if doc["metadata"]["name"] == "ripcord-config" else d + "/rules"
    for k, v in doc["data"].items():
        open(os.path.join(sub, k), "w").write(v)
PY
if needs "kubernetes: the ConfigMaps' ripcord.yaml and rules pass ripcord check" ripcord python; then
    # Same staging as above, but the rules come from the ConfigMap.
    if stage "$K8S/src/ripcord.yaml" "$K8S/etc" >"$TMP/out" 2>&1; then
        rm -rf "$K8S/etc/rules" && cp -r "$K8S/src/rules" "$K8S/etc/rules"
        run "kubernetes: the ConfigMaps' ripcord.yaml and rules pass ripcord check" \
            "$BIN" check --config "$K8S/etc/ripcord.yaml"
    else
        fail "kubernetes: the ConfigMaps' ripcord.yaml and rules pass ripcord check" "$(why "$TMP/out" 1)"
    fi
fi

py "kubernetes: Deployment probes, ports, mounts and grace match ripcord and the Dockerfile" <<'PY'
import glob, json, os, re, yaml
docs = []
for f in glob.glob("deploy/kubernetes/*.yaml") + ["deploy/kubernetes/secret.yaml.template"]:
    docs += [d for d in yaml.safe_load_all(open(f)) if d]
by = lambda kind: [d for d in docs if d["kind"] == kind]
(dep,) = by("Deployment")
cfg = yaml.safe_load(open("deploy/ripcord.yaml"))
docs_cm = {d["metadata"]["name"]: d for d in by("ConfigMap")}
port = int(cfg["http"]["listen"].rsplit(":", 1)[1])
spec = dep["spec"]
pod = spec["template"]["spec"]
(c,) = pod["containers"]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
assert list(ports.values()) == [port], "container ports %s, ripcord listens on %d" % (ports, port)
# The paths ripcord serves (src/router.rs) and the probes.
served = set(re.findall(r'\.route\("([^"]+)"', open("src/router.rs").read()))
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", None)):
    g = c[probe]["httpGet"]
    assert g["port"] in (port,) or ports.get(g["port"]) == port, "%s port %s" % (probe, g["port"])
    assert g["path"] in served, "%s path %s is not served by ripcord (%s)" % (probe, g["path"], sorted(served))
    if path:
        assert g["path"] == path, "%s path %s, expected %s" % (probe, g["path"], path)
# A cluster: replicas share the ConfigMap's PostgreSQL journal; a rollout
# of ripcord itself never leaves fewer replicas ready than asked for.
kcfg = yaml.safe_load(docs_cm["ripcord-config"]["data"]["ripcord.yaml"])
assert spec["replicas"] >= 3, "replicas %s: run three (a cluster survives one loss)" % spec["replicas"]
assert spec["strategy"]["type"] == "RollingUpdate" and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, \
    "strategy %s" % spec["strategy"]
assert set(kcfg["journal"]) == {"url"} and kcfg["journal"]["url"] == {"file": "/run/secrets/ripcord/journal-url"}, \
    "the ConfigMap's journal is %s, expected url: {file: /run/secrets/ripcord/journal-url}" % kcfg["journal"]
# The memory limit holds the byte budgets (limits:, src/limits.rs defaults
# for what is left out) plus 128 MiB for the rest of the process.
def size(v):
    m = re.fullmatch(r"(\d+)\s*([KMGT]i?B?)?", str(v))
    n, unit = int(m.group(1)), (m.group(2) or "")[:1]
    return n * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
budgets = {"groups_bytes": 256 << 20, "alerts_bytes": 64 << 20, "silences_bytes": 8 << 20}
budgets.update({k: size(v) for k, v in (kcfg.get("limits") or {}).items()})
limit = size(c["resources"]["limits"]["memory"])
assert sum(budgets.values()) + (128 << 20) <= limit, \
    "limits: %s MiB + 128 MiB does not fit the Deployment's memory limit (%s MiB)" % (
        sum(budgets.values()) >> 20, limit >> 20)
sto = int(kcfg["kafka"]["properties"]["session.timeout.ms"])
assert sto <= 15000, "session.timeout.ms %d: a dead replica's partitions wait that long" % sto
assert not by("PersistentVolumeClaim"), "a PersistentVolumeClaim: the cluster keeps nothing on a pod"
# Grace: preStop sleep + ripcord's shutdown grace < terminationGracePeriodSeconds.
g = str(cfg["shutdown"]["grace"])
unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
grace = sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", g))
assert grace > 0, "cannot read shutdown.grace %r" % g
pre = c["lifecycle"]["preStop"]["exec"]["command"]
sleep = int(pre[-1]) if pre[0] == "sleep" else 0
tgps = pod["terminationGracePeriodSeconds"]
assert tgps > sleep + grace, "terminationGracePeriodSeconds %s <= preStop %s + grace %s" % (tgps, sleep, grace)
# Security.
psc, sc = pod["securityContext"], c["securityContext"]
assert psc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (psc, sc)
assert c["resources"]["requests"] and c["resources"]["limits"], "resources"
# Mounts against what ripcord.yaml and the Dockerfile expect.
df = open("deploy/Dockerfile").read()
entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", df, re.M).group(1))
conf = entry[entry.index("--config") + 1]
user = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", df, re.M)[-1]
assert str(psc["runAsUser"]) == user[0] and (not user[1] or str(psc["runAsGroup"]) == user[1]), \
    "runAsUser/Group %s/%s, Dockerfile USER %s" % (psc["runAsUser"], psc.get("runAsGroup"), user)
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
def vol_at(path):
    assert path in mounts, "nothing mounted at %s (mounts: %s)" % (path, sorted(mounts))
    return vols[mounts[path]["name"]], mounts[path]
v, m = vol_at(conf)
assert v["configMap"]["name"] == "ripcord-config" and m.get("subPath") == "ripcord.yaml", (v, m)
rules_dir = os.path.normpath(os.path.join(os.path.dirname(conf), cfg["rules"]))
v, m = vol_at(rules_dir)
assert v["configMap"]["name"] == "ripcord-rules", v
v, m = vol_at(os.path.dirname(cfg["http"]["token"]["file"]))
(secret,) = by("Secret")
assert v["secret"]["secretName"] == secret["metadata"]["name"], v
named = set(re.findall(r"\{file: /run/secrets/ripcord/([a-z0-9-]+)\}", docs_cm["ripcord-config"]["data"]["ripcord.yaml"]))
assert "journal-url" in named, "the ConfigMap's ripcord.yaml reads no journal-url secret"
assert named <= set(secret["stringData"]), "the Secret has no key for %s" % sorted(named - set(secret["stringData"]))
cms = {d["metadata"]["name"] for d in by("ConfigMap")}
assert {"ripcord-config", "ripcord-rules"} <= cms, cms
# Service and PodDisruptionBudget select the pod, and reach its port.
labels = spec["template"]["metadata"]["labels"]
assert spec["selector"]["matchLabels"].items() <= labels.items()
(svc,) = by("Service")
assert svc["spec"]["selector"].items() <= labels.items(), "Service selector"
sp = svc["spec"]["ports"][0]
assert sp["port"] == port and (sp["targetPort"] == port or ports.get(sp["targetPort"]) == port), sp
for pdb in by("PodDisruptionBudget"):
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PDB selector"
(sa,) = by("ServiceAccount")
assert pod["serviceAccountName"] == sa["metadata"]["name"]
print("%d replicas, PostgreSQL journal from the Secret, session %d ms, port %d, probes /healthz /readyz, grace %ds > %ds + %ds"
      % (spec["replicas"], sto, port, tgps, sleep, grace))
PY

# --- Dockerfile ------------------------------------------------------------

DOCKER_CHECK="Dockerfile: stages, COPY sources, non-root user, port, ENTRYPOINT flags (parsed; no Docker engine here)"
if [[ -z ${MISSING[ripcord]:-} ]]; then
    "$BIN" run --help >"$TMP/run-help.txt" 2>&1
fi
py "$DOCKER_CHECK" <<'PY'
import fnmatch, json, os, re, shlex, yaml
lines, cur = [], ""
for raw in open("deploy/Dockerfile"):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append((cur + s).strip())
    cur = ""
ins = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
froms = [a for i, a in ins if i == "FROM"]
assert froms[0].split()[0] == "rust:1-bookworm" and froms[0].split()[-1] == "build", froms
assert froms[-1].split()[0] == "debian:bookworm-slim", froms
# .dockerignore of this Dockerfile (BuildKit: deploy/Dockerfile.dockerignore).
pats = [p.strip() for p in open("deploy/Dockerfile.dockerignore") if p.strip() and not p.startswith("#")]
def ignored(path):
    parts = path.strip("/").split("/")
    res = False
    for p in pats:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:n]), pat) for n in range(1, len(parts) + 1)):
            res = not neg
    return res
stage, copies = None, []
for i, a in ins:
    if i == "FROM":
        stage = a
    if i == "COPY":
        args = shlex.split(a)
        if any(x.startswith("--from") for x in args):
            continue
        args = [x for x in args if not x.startswith("--")]
        for src in args[:-1]:
            assert os.path.exists(src), "COPY %s: no such file in the repository" % src
            assert not ignored(src), "COPY %s: excluded by deploy/Dockerfile.dockerignore" % src
            copies.append((stage, src))
build = [src for st, src in copies if st.endswith(" build")]
open(os.environ["TMP"] + "/build-context.txt", "w").write("\n".join(build) + "\n")
runtime_user = [a for i, a in ins if i == "USER"]
assert runtime_user and not runtime_user[-1].startswith(("0", "root")), "runs as root"
cfg = yaml.safe_load(open("deploy/ripcord.yaml"))
port = cfg["http"]["listen"].rsplit(":", 1)[1]
expose = [a.split("/")[0] for i, a in ins if i == "EXPOSE"]
assert expose == [port], "EXPOSE %s, ripcord.yaml listens on %s" % (expose, port)
assert any("ca-certificates" in a for i, a in ins if i == "RUN"), "no ca-certificates"
entry = json.loads([a for i, a in ins if i == "ENTRYPOINT"][-1])
assert entry[0].endswith("/ripcord") and entry[1] == "run", entry
assert os.path.exists(os.environ["TMP"] + "/run-help.txt"), \
    "no ripcord binary to check the ENTRYPOINT's flags against (see the build above)"
helptext = open(os.environ["TMP"] + "/run-help.txt").read()
accepted = set(re.findall(r"(--[a-z][a-z-]*)", helptext))
flags = [x for x in entry[2:] if x.startswith("--")]
bad = [f for f in flags if f not in accepted]
assert not bad, "ripcord run does not accept %s (accepts %s)" % (bad, sorted(accepted))
assert entry[entry.index("--config") + 1] == "/etc/ripcord/ripcord.yaml", entry
dest = [shlex.split(a)[-1] for i, a in ins if i == "COPY" and "--from=build" in a]
assert entry[0] in dest, "ENTRYPOINT %s is not what the build stage's binary is copied to (%s)" % (entry[0], dest)
print("COPY %s; EXPOSE %s; ENTRYPOINT flags %s" % (" ".join(s for _, s in copies), port, " ".join(flags)))
PY

# The build stage compiles from exactly what it COPYs (a missing COPY of,
# say, rules/ that include_str! needs shows up here). Fixed directory and
# preserved mtimes, so an unchanged tree is not recompiled.
CTX_CHECK="Dockerfile build context: cargo check --locked --offline on only the files the build stage COPYs"
if [[ ! -s $TMP/build-context.txt ]]; then
    fail "$CTX_CHECK" "the build stage's COPY sources could not be read from deploy/Dockerfile (see above)"
elif ! command -v cargo >/dev/null; then
    fail "$CTX_CHECK" "cargo is missing (https://rustup.rs)"
else
    CTX=$ROOT/target/check-deploy-context
    rm -rf "$CTX" && mkdir -p "$CTX"
    while read -r src || [[ -n $src ]]; do cp -a "$src" "$CTX/"; done <"$TMP/build-context.txt"
    run "$CTX_CHECK" \
        env CARGO_TARGET_DIR="$ROOT/target" cargo check --quiet --locked --offline \
        --manifest-path "$CTX/Cargo.toml" --bin ripcord
fi

# --- Alertmanager ----------------------------------------------------------

AM=deploy/alertmanager/alertmanager.yml
if needs "alertmanager.yml passes amtool check-config" amtool; then
    run "alertmanager.yml passes amtool check-config" amtool check-config "$AM"
    am_routes() {
        local sev r
        for sev in critical warning info; do
            r=$(amtool config routes test --config.file="$AM" \
                alertname=HostHighCpu severity=$sev service=payment instance=i-1 tier=high 2>/dev/null)
            [[ $r == ripcord ]] || {
                echo "severity=$sev routes to '$r'"
                return 1
            }
        done
    }
    run "alertmanager.yml routes critical, warning and info alerts to ripcord (amtool config routes test)" am_routes
fi

py "alertmanager.yml's webhook is ripcord's /api/v1/alerts with send_resolved and a bearer token file" <<'PY'
import urllib.parse, yaml
am = yaml.safe_load(open("deploy/alertmanager/alertmanager.yml"))
cfg = yaml.safe_load(open("deploy/ripcord.yaml"))
svc = yaml.safe_load(open("deploy/kubernetes/service.yaml"))
(r,) = [r for r in am["receivers"] if r["name"] == am["route"]["receiver"]]
(w,) = r["webhook_configs"]
u = urllib.parse.urlsplit(w["url"])
assert u.path == "/api/v1/alerts", u.path
assert u.port == int(cfg["http"]["listen"].rsplit(":", 1)[1]), "port %s" % u.port
assert u.hostname == svc["metadata"]["name"], "host %s, Service %s" % (u.hostname, svc["metadata"]["name"])
assert w["send_resolved"] is True, "send_resolved"
a = w["http_config"]["authorization"]
assert a.get("type", "Bearer") == "Bearer" and a["credentials_file"], a
assert {"alertname", "service", "instance"} <= set(am["route"]["group_by"]), am["route"]["group_by"]
for k in ("group_wait", "repeat_interval"):
    assert am["route"].get(k), "route.%s not set" % k
assert "deduplicate" in open("deploy/alertmanager/alertmanager.yml").read(), "no comment on ripcord's deduplication"
print(w["url"])
PY

# --- Prometheus ------------------------------------------------------------

if needs "prometheus rules pass promtool check rules" promtool; then
    run "deploy/prometheus rules pass promtool check rules" \
        promtool check rules deploy/prometheus/recording-rules.yml deploy/prometheus/alerting-rules.yml
    # On failure, name the failing test case, alert and time.
    promtool_test() {
        promtool test rules "$1" >"$TMP/promtool.out" 2>&1 && return 0
        grep -A 2 'FAILED:' "$TMP/promtool.out" | grep -v 'FAILED:' | head -n 2
        grep -q 'FAILED:' "$TMP/promtool.out" || cat "$TMP/promtool.out"
        return 1
    }
    run "deploy/prometheus rules pass promtool test rules (CPU at 90% fires after 10 min, not before; memory, 5xx, disk, down, info)" \
        promtool_test deploy/prometheus/alerting-rules.test.yml
fi

# --- ripcord watched: its own alerts and dashboard ---------------------------

if needs "ripcord-alerts.yaml passes promtool check rules and test rules" promtool; then
    run "deploy/prometheus/ripcord-alerts.yaml passes promtool check rules" \
        promtool check rules deploy/prometheus/ripcord-alerts.yaml
    run "deploy/prometheus/ripcord-alerts.yaml passes promtool test rules (down, not ready, lag growing, journal failing/slow/stalled, actions and messages failing, approval past budget, partition without owner)" \
        promtool_test deploy/prometheus/ripcord-alerts.test.yaml
fi

py "the dashboard and ripcord's alerts query only metrics ripcord exports (README's table), and the dashboard shows what an operator needs" <<'PY'
import json, re, yaml
readme = open("README.md").read()
table = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
exported = set(re.findall(r"`((?:ripcord|process)_[a-z0-9_]+)`", table))
def names(expr):
    found = set(re.findall(r"\b((?:ripcord|process)_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in exported else n for n in found}
d = json.load(open("deploy/grafana/ripcord.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
rules = [r for g in yaml.safe_load(open("deploy/prometheus/ripcord-alerts.yaml"))["groups"] for r in g["rules"]]
for e in exprs + [r["expr"] for r in rules]:
    unknown = names(e) - exported
    assert not unknown, "%s queries %s, which ripcord does not export" % (e, sorted(unknown))
used = set().union(*(names(e) for e in exprs))
for need in ["ripcord_events_total", "ripcord_decisions_total", "ripcord_action_seconds", "ripcord_consumer_lag",
             "ripcord_action_queue", "ripcord_journal_commit_seconds", "ripcord_open_incidents",
             "ripcord_pending_approvals", "ripcord_partition_owned"]:
    assert need in used, "the dashboard does not show %s" % need
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "panel ids repeat"
ds = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
assert ds and all(p.get("datasource", {}).get("uid") == "${datasource}" for p in d["panels"] if p["type"] != "row"), \
    "every panel reads the dashboard's Prometheus data source variable"
print("%d panels, %d alert rules" % (len(ids), len(rules)))
PY

# Grafana's dashboard schema, as the TypeScript types Grafana generates from
# it (npm @grafana/schema), checked by tsc: unknown keys, missing required
# ones and wrong types fail. Installed once under target/ (npm, idempotent).
need npm npm
if needs "deploy/grafana/ripcord.json passes Grafana's dashboard schema" npm; then
    grafana_schema() {
        local dir=$ROOT/target/grafana-schema
        mkdir -p "$dir" || return 1
        if [[ ! -x $dir/node_modules/.bin/tsc || ! -d $dir/node_modules/@grafana/schema ]]; then
            (cd "$dir" && npm install --no-audit --no-fund --silent --no-save \
                typescript@5.9 @grafana/schema@13.2.3) || return 1
        fi
        {
            printf "import type { Dashboard } from '@grafana/schema';\nexport const dashboard = "
            # On one line with the JSON's end: a line break before
            # `satisfies` would end the statement.
            printf '%s satisfies Dashboard;\n' "$(cat deploy/grafana/ripcord.json)"
        } >"$dir/check.ts"
        (cd "$dir" && node_modules/.bin/tsc --noEmit --strict --target es2022 --module esnext \
            --moduleResolution bundler --skipLibCheck check.ts)
    }
    run "deploy/grafana/ripcord.json passes Grafana's dashboard schema (@grafana/schema 13.2.3 types, tsc)" grafana_schema
fi

py "every alert has a severity ripcord maps (rules/common.yaml) and keeps service and tier" <<'PY'
import re, yaml
common = yaml.safe_load(open("rules/common.yaml"))
(fwd,) = [r for r in common["rules"] if r["name"] == "alertmanager-forwarded"]
smap = fwd["severity_map"]
rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerting-rules.yml"))["groups"] for r in g["rules"]]
used = set()
for r in rules:
    sev = r["labels"]["severity"]
    assert sev in ("critical", "warning", "info") and sev in smap, "%s: severity %s" % (r["alert"], sev)
    used.add(sev)
    assert not re.search(r"\bby\s*\(", r["expr"]), "%s aggregates `by`, dropping service/tier" % r["alert"]
assert used == {"critical", "warning", "info"}, "severities used: %s" % used
# Recording rules keep the target labels too.
for g in yaml.safe_load(open("deploy/prometheus/recording-rules.yml"))["groups"]:
    for r in g["rules"]:
        assert not re.search(r"\bby\s*\(", r["expr"]), "%s aggregates `by`" % r["record"]
print("%d alerts: %s" % (len(rules), ", ".join("%s->%s" % (s, smap[s]) for s in sorted(used))))
PY

# Each alert, as Alertmanager would deliver it, through ripcord.
if needs "alerts replayed through ripcord" ripcord python && [[ -n $STAGED ]]; then
    "$PY" - >"$TMP/alerts.jsonl" <<'PY'
import json, yaml
rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerting-rules.yml"))["groups"] for r in g["rules"]]
for i, r in enumerate(rules):
    labels = dict(r["labels"], alertname=r["alert"], service="web-ui", instance="web-1.internal:9100")
    print(json.dumps({"version": "4", "status": "firing", "receiver": "ripcord", "groupLabels": {},
        "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                    "startsAt": "2026-11-21T10:%02d:00Z" % i, "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": "fp-%d" % i}]}))
PY
    "$BIN" replay --events "$TMP/alerts.jsonl" --config "$CFG/ripcord.yaml" >"$TMP/decisions.jsonl" 2>"$TMP/replay.err"
    py "each alert, delivered as Alertmanager's webhook, opens a ripcord incident with the mapped severity and web-ui's tier" <<'PY'
import json, os, yaml
t = os.environ["TMP"]
common = yaml.safe_load(open("rules/common.yaml"))
smap = [r for r in common["rules"] if r["name"] == "alertmanager-forwarded"][0]["severity_map"]
tier = yaml.safe_load(open("deploy/ripcord.yaml"))["tiers"]["services"]["web-ui"]
err = open(t + "/replay.err").read()
assert " 0 malformed" in err, "ripcord replay: %s" % (err.strip().splitlines() or ["no output"])[0]
rules = [r for g in yaml.safe_load(open("deploy/prometheus/alerting-rules.yml"))["groups"] for r in g["rules"]]
dec = [json.loads(l) for l in open(t + "/decisions.jsonl") if l.strip()]
for r in rules:
    mine = [d for d in dec if d["labels"].get("alertname") == r["alert"]]
    assert mine, "%s: no decision" % r["alert"]
    want = smap[r["labels"]["severity"]]
    assert all(d["severity"] == want and d["tier"] == tier and d["rule"] == "alertmanager-forwarded" for d in mine), \
        "%s: %s" % (r["alert"], mine[0])
print("%d alerts, %d decisions" % (len(rules), len(dec)))
PY
fi

# --- prometheus-kafka-adapter ----------------------------------------------

PKA=deploy/prometheus-kafka-adapter
# Checked in the layout docker-compose.yml mounts: prometheus.yml next to
# rules/ = deploy/prometheus/, so the rule files are checked with it.
mkdir -p "$TMP/prometheus/rules"
cp "$PKA/prometheus.yml" "$TMP/prometheus/" && cp deploy/prometheus/*.yml "$TMP/prometheus/rules/"
if needs "prometheus.yml passes promtool check config" promtool; then
    run "prometheus-kafka-adapter/prometheus.yml passes promtool check config (with its rule files)" \
        promtool check config "$TMP/prometheus/prometheus.yml"
fi

py "prometheus.yml remote_writes to the adapter every metric rules/*.yaml watches" <<'PY'
import glob, re, yaml
p = yaml.safe_load(open("deploy/prometheus-kafka-adapter/prometheus.yml"))
compose = yaml.safe_load(open("deploy/prometheus-kafka-adapter/docker-compose.yml"))
(rw,) = p["remote_write"]
env = compose["services"]["prometheus-kafka-adapter"]["environment"]
assert rw["url"] == "http://prometheus-kafka-adapter:%s/receive" % env.get("PORT", "8080"), rw["url"]
(keep,) = [c for c in rw["write_relabel_configs"] if c["action"] == "keep"]
assert keep["source_labels"] == ["__name__"], keep
metrics = set()
for f in glob.glob("rules/*.yaml"):
    for r in yaml.safe_load(open(f)).get("rules", []):
        m = r.get("match", {}).get("metric")
        if m:
            metrics.add(m)
lost = sorted(m for m in metrics if not re.fullmatch(keep["regex"], m))
assert not lost, "not shipped to ripcord: %s" % lost
print("%d metrics" % len(metrics))
PY

py "docker-compose.yml: the adapter writes JSON to the topic ripcord reads, on ripcord's brokers" <<'PY'
import os, re, yaml
compose = yaml.safe_load(open("deploy/prometheus-kafka-adapter/docker-compose.yml"))
cfg = yaml.safe_load(open("deploy/ripcord.yaml"))
svc = compose["services"]["prometheus-kafka-adapter"]
assert svc["image"].startswith("telefonica/prometheus-kafka-adapter:"), "image %s" % svc["image"]
env = svc["environment"]
assert env["SERIALIZATION_FORMAT"] == "json", "SERIALIZATION_FORMAT is %s; ripcord reads the adapter's json" % env["SERIALIZATION_FORMAT"]
default = re.search(r'topics: vec!\["([^"]+)"', open("src/source/kafka_config.rs").read()).group(1)
assert env["KAFKA_TOPIC"] == default, "KAFKA_TOPIC %s, ripcord's default topic %s" % (env["KAFKA_TOPIC"], default)
assert env["KAFKA_TOPIC"] in cfg["kafka"]["topics"], "ripcord.yaml does not read %s" % env["KAFKA_TOPIC"]
assert env["KAFKA_BROKER_LIST"].split(",") == cfg["kafka"]["brokers"], \
    "KAFKA_BROKER_LIST %s, ripcord.yaml brokers %s" % (env["KAFKA_BROKER_LIST"], cfg["kafka"]["brokers"])
topics = " ".join(compose["services"]["create-topics"]["command"])
for t in [env["KAFKA_TOPIC"], cfg["kafka"]["dead_letter_topic"]]:
    assert t in topics, "create-topics does not create %s" % t
assert "--partitions 1" in topics, "the adapter's topic needs one partition (unkeyed messages)"
for name, s in compose["services"].items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            assert os.path.exists(os.path.join("deploy/prometheus-kafka-adapter", src)), "%s: %s missing" % (name, src)
print("topic %s, SERIALIZATION_FORMAT=json" % env["KAFKA_TOPIC"])
PY

py "sample-output.jsonl: 3 samples in the adapter's exact JSON form (Go json.Marshal of its map)" <<'PY'
import json
lines = open("deploy/prometheus-kafka-adapter/sample-output.jsonl").read().splitlines()
assert len(lines) == 3, "%d lines, expected 3" % len(lines)
for i, l in enumerate(lines, 1):
    o = json.loads(l)
    assert set(o) == {"timestamp", "value", "name", "labels"}, "line %d: keys %s" % (i, sorted(o))
    assert isinstance(o["value"], str) and o["labels"]["__name__"] == o["name"], "line %d" % i
    # Go sorts map keys and writes no spaces; timestamps are RFC 3339 seconds, UTC.
    assert json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False) == l, "line %d is not in Go's form" % i
    assert o["timestamp"].endswith("Z") and len(o["timestamp"]) == 20, "line %d: timestamp %s" % (i, o["timestamp"])
PY
if needs "sample-output.jsonl replays through ripcord" ripcord && [[ -n $STAGED ]]; then
    replay_sample() {
        local rc=0
        "$BIN" replay --events "$PKA/sample-output.jsonl" --config "$CFG/ripcord.yaml" >/dev/null 2>"$TMP/sample.err" ||
            rc=$?
        cat "$TMP/sample.err"
        ((rc == 0)) && grep -q 'replay: 3 lines, 3 events, 0 malformed' "$TMP/sample.err"
    }
    run "sample-output.jsonl replays through ripcord replay --events: 3 lines, 3 events, 0 malformed" replay_sample
fi

# --- README ----------------------------------------------------------------

py "deploy/README.md describes every file under deploy/" <<'PY'
import os
readme = open("deploy/README.md").read()
files = sorted(os.path.relpath(os.path.join(d, f), "deploy")
               for d, _, fs in os.walk("deploy") for f in fs)
missing = [f for f in files if f != "README.md" and f not in readme]
assert not missing, "not in deploy/README.md: %s" % missing
print("%d files" % (len(files) - 1))
PY

echo
if ((FAILED > 0)); then
    echo "check-deploy: $FAILED failed, $PASSED ok"
    exit 1
fi
echo "check-deploy: all $PASSED ok"
