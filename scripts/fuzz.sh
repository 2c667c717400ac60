#!/usr/bin/env bash
# Coverage-guided fuzzing of ripcord's decoders and parsers (cargo-fuzz,
# libFuzzer). See fuzz/README.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS: fuzzing time per target (default 20). TARGET: a subset of the
# targets (default: all of them). For every target, first re-runs each
# input saved under fuzz/regressions/<target>/ (every crash ever found),
# then fuzzes from fuzz/corpus/<target>/ (git-ignored, grows between runs)
# plus the committed seeds in fuzz/seeds/<target>/.
#
# Exits non-zero if any target crashed (panic, broken invariant, timeout,
# out of memory), naming the target and the saved input. Only the stable
# toolchain is needed: libFuzzer's instrumentation flags are unlocked with
# RUSTC_BOOTSTRAP=1.
#
# Environment: FUZZ_TIMEOUT (seconds one input may take, default 10),
# FUZZ_RSS_MB (memory limit, default 2048), RIPCORD_FUZZ_TARGET_DIR
# (where targets are built, default ~/.cache/ripcord/fuzz-target).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALL_TARGETS=(
    decode
    decode_differential
    http_body
    decode_structured
    rule_file
    config
    condition_matcher
    series_values
    replay
    silence_post
    drill_scenario
    console_request
    approval_scope
    postable_alerts
    alert_chart
)

die() {
    echo "fuzz.sh: error: $*" >&2
    exit 2
}

SECS=${1:-20}
[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || die "SECONDS must be a positive whole number, got '$SECS'"
shift || true
if (($# > 0)); then
    TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
        [[ -f fuzz/fuzz_targets/$t.rs ]] || die "no fuzz target '$t' (have: ${ALL_TARGETS[*]})"
    done
else
    TARGETS=("${ALL_TARGETS[@]}")
fi
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_MB:-2048}

export RUSTC_BOOTSTRAP=1
# Built as `cargo fuzz run` builds by default, minus AddressSanitizer:
# ripcord forbids unsafe code, and without ASan each target runs about
# twice as many inputs in its time budget. Debug assertions (and so
# integer overflow checks) stay on. Build and run must use the same flags
# or each run rebuilds.
#
# The build goes to a cache outside the checkout (like scripts/setup's
# Kafka jars): a fresh machine builds every dependency once (about ten
# minutes here), every later run, from any clone, only what changed.
FUZZ_TARGET_DIR=${RIPCORD_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ripcord/fuzz-target}
mkdir -p "$FUZZ_TARGET_DIR"
BUILD_FLAGS=(--release --debug-assertions --sanitizer none --target-dir "$FUZZ_TARGET_DIR")

command -v cargo >/dev/null || die "cargo is not installed"
command -v c++ >/dev/null || die "a C++ compiler (c++) is needed to build libFuzzer; apt-get install g++"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz failed"
    cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz installed but 'cargo fuzz' does not run"
fi

LOGS=fuzz/artifacts/logs
mkdir -p "$LOGS"

start=$(date +%s)
echo "fuzz.sh: building fuzz targets ($(cargo fuzz --version))"
# `cargo fuzz build` builds one target or, given none, all of them.
build_one=()
((${#TARGETS[@]} == 1)) && build_one=("${TARGETS[0]}")
if ! cargo fuzz build "${BUILD_FLAGS[@]}" "${build_one[@]}" >"$LOGS/build.log" 2>&1; then
    tail -40 "$LOGS/build.log" >&2
    die "building the fuzz targets failed (full log: $LOGS/build.log)"
fi
echo "fuzz.sh: built in $(($(date +%s) - start))s"
failed=()

# The input libFuzzer saved, from its log.
artifact_of() {
    grep -oE '(Test unit written to|Failing input:) *[^ ]+' "$1" | tail -1 | awk '{print $NF}'
}

# What went wrong, from a libFuzzer log: the panic and its message, or
# libFuzzer's own verdict (timeout, out of memory, failed allocation).
why() {
    {
        grep -m1 -A1 "panicked at" "$1" || true
        grep -m1 -E "memory allocation of [0-9]+ bytes failed" "$1" || true
        grep -m2 -E "ERROR: libFuzzer|SUMMARY: libFuzzer" "$1" || true
    } | cut -c1-400 | sed 's/^/    /' >&2
}

report_crash() {
    local t=$1 what=$2 log=$3
    local art
    art=$(artifact_of "$log" || true)
    echo "fuzz.sh: CRASH in target '$t' ($what)" >&2
    why "$log"
    if [[ -n $art ]]; then
        echo "    input: $art" >&2
        echo "    reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} $t $art" >&2
        echo "    keep it:   mkdir -p fuzz/regressions/$t && cp $art fuzz/regressions/$t/" >&2
    fi
    echo "    full log: $log" >&2
    failed+=("$t")
}

for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    if compgen -G "fuzz/seeds/$t/*" >/dev/null; then
        cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
    fi

    # 1. Regressions: every input that ever crashed this target, one run
    #    each so every failing input is named.
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        n=0 bad=0
        for f in fuzz/regressions/"$t"/*; do
            [[ -f $f ]] || continue
            n=$((n + 1))
            log=$LOGS/$t.regression.$(basename "$f").log
            if cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$f" -- \
                -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" >"$log" 2>&1; then
                rm -f "$log"
            else
                bad=$((bad + 1))
                echo "fuzz.sh: REGRESSION in target '$t': $f fails again" >&2
                why "$log"
                echo "    full log: $log" >&2
            fi
        done
        if ((bad > 0)); then
            failed+=("$t")
            continue
        fi
        echo "fuzz.sh: $t: $n regression input(s) pass"
    fi

    # 2. Fuzz. New inputs go to the first directory (the git-ignored corpus).
    log=$LOGS/$t.log
    if cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
        -print_final_stats=1 >"$log" 2>&1; then
        stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+/runs: \1 /')
        echo "fuzz.sh: $t: ok (${SECS}s; ${stats:-no stats})"
    else
        report_crash "$t" "while fuzzing" "$log"
    fi
done

echo "fuzz.sh: done in $(($(date +%s) - start))s"
if ((${#failed[@]} > 0)); then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all ${#TARGETS[@]} targets passed"
