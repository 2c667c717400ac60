#!/usr/bin/env bash
# pause-rollout.sh [--resume] SERVICE: stop (or let go on) the staged
# rollout of one service, so no further batch of hosts is upgraded while
# a human looks at the alert.
#
# ripcord runs it as `executors.pause_rollout` (deploy/ripcord.yaml) with
# the service label as the only argument, and as `executors.resume_rollout`
# with `--resume SERVICE`; no shell, and a cleared environment apart from
# the allow-listed variables below. By hand:
#
#   RIPCORD_ROLLOUT=argo pause-rollout.sh payment
#   RIPCORD_ROLLOUT=argo pause-rollout.sh --resume payment
#
# Environment:
#   RIPCORD_ROLLOUT        what runs the staged rollout (required):
#     argo     an Argo Rollouts `Rollout` named SERVICE, through kubectl.
#              Pause sets spec.paused=true (what `kubectl argo rollouts
#              pause` does), resume sets it back to false; both read the
#              field back and fail unless it took. Resume does not promote
#              past a canary step's own pause: that is `kubectl argo
#              rollouts promote`, a human's call.
#     aws-asg  an EC2 Auto Scaling instance refresh of the group
#              ${RIPCORD_ASG_PREFIX}SERVICE. A refresh cannot be paused,
#              only cancelled: pause cancels it and waits until it is
#              Cancelled; the instances it already replaced STAY replaced
#              (roll them back one by one, deploy/rollback.sh). No refresh
#              in progress is success ("nothing to pause"). Resume is
#              refused (exit 2): starting a new refresh would re-upgrade the
#              hosts that were rolled back, so a human starts it
#              (`aws autoscaling start-instance-refresh`).
#   RIPCORD_K8S_NAMESPACE  argo: the Rollout's namespace (default: the
#                          kubeconfig context's)
#   RIPCORD_K8S_CONTEXT    argo: the kubeconfig context (default: current);
#                          KUBECONFIG as kubectl reads it
#   RIPCORD_ASG_PREFIX     aws-asg: prepended to SERVICE to name the Auto
#                          Scaling group (default: none, the group is SERVICE)
#   RIPCORD_POLL_SECONDS   pause between two status polls (default 10)
#   RIPCORD_WAIT_SECONDS   give up waiting for the cancel after this long
#                          (default 600)
#   aws-asg: AWS_REGION / AWS_PROFILE / AWS_* as the AWS CLI reads them
#
# Exit status (the failed step is named on stderr, and is the last line):
#   0  paused (or resumed), or nothing was in progress to pause
#   2  usage or configuration error (including resume on aws-asg): nothing
#      was called
#   3  a required tool is missing (kubectl, aws): nothing was called
#   4  the rollout was not found (no such Rollout or Auto Scaling group):
#      nothing was changed
#   5  the pause / resume call failed, or did not take effect in time
#
# Rules kept here: the arguments are checked against a strict pattern
# before anything else runs; every expansion is quoted; nothing is eval'd;
# every step is logged to stderr with a UTC timestamp; the first failing
# command ends the script (set -e, trap ERR) naming its step.
set -Eeuo pipefail
shopt -s inherit_errexit
export LC_ALL=C

PROG=pause-rollout.sh
usage() {
    printf 'usage: %s [--resume] SERVICE   (RIPCORD_ROLLOUT=argo|aws-asg; see the header)\n' "$PROG" >&2
}

# The arguments first: nothing else runs with a hostile one (`$(id)`,
# `--help`, `../x`, spaces, an empty string, a second service).
MODE=pause
if (($# == 2)) && [[ $1 == --resume ]]; then
    MODE=resume
    shift
fi
SERVICE=${1-}
SERVICE_RE='^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
if (($# != 1)) || ! [[ $SERVICE =~ $SERVICE_RE ]]; then
    printf '%s: refused: expected [--resume] SERVICE, SERVICE matching %s (got %d argument(s))\n' \
        "$PROG" "$SERVICE_RE" "$#" >&2
    usage
    exit 2
fi

log() {
    printf '%s %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$SERVICE" "$*" >&2
}

# The step running now and the exit status its failure means.
STEP=""
STEP_CODE=1
step() {
    STEP_CODE=$1
    STEP=$2
    log "step: $STEP"
}
die() {
    local code=$1
    shift
    if [[ -n $STEP ]]; then
        log "FAILED at step '$STEP': $*"
    else
        log "FAILED: $*"
    fi
    exit "$code"
}
on_err() {
    local status=$1 line=$2
    # A command substitution fails in its own subshell first: the parent
    # reports it (once) when the assignment fails there.
    if ((BASH_SUBSHELL > 0)); then
        exit "$status"
    fi
    log "FAILED at step '${STEP:-start}' (line $line, status $status)"
    exit "$STEP_CODE"
}
trap 'on_err "$?" "$LINENO"' ERR

# `attempt CMD...`: runs CMD with its stdout on our stderr, keeps its
# stderr in ATTEMPT_ERR (and copies it to ours), returns its status. For
# the calls whose failure has to be told apart (not found, nothing to do).
exec 3>&2
ATTEMPT_ERR=""
attempt() {
    local status=0
    ATTEMPT_ERR=$("$@" 2>&1 >&3) || status=$?
    if [[ -n $ATTEMPT_ERR ]]; then
        printf '%s\n' "$ATTEMPT_ERR" >&2
    fi
    return "$status"
}

# --- configuration ------------------------------------------------------

ROLLOUT=${RIPCORD_ROLLOUT-}
case $ROLLOUT in
    argo | aws-asg) ;;
    *) die 2 "RIPCORD_ROLLOUT must be argo or aws-asg (got '${ROLLOUT}')" ;;
esac

# `number VAR NAME DEFAULT`: VAR=$NAME (or DEFAULT), a whole number.
number() {
    local value=${!2-$3}
    [[ $value =~ ^[0-9]{1,6}$ ]] || die 2 "$2 must be a whole number of seconds (got '$value')"
    printf -v "$1" '%s' "$value"
}
POLL=0 WAIT=0
number POLL RIPCORD_POLL_SECONDS 10
number WAIT RIPCORD_WAIT_SECONDS 600

need() {
    command -v "$1" >/dev/null 2>&1 ||
        die 3 "'$1' is not on PATH ($PATH): install $2"
}

NAMESPACE=${RIPCORD_K8S_NAMESPACE-}
CONTEXT=${RIPCORD_K8S_CONTEXT-}
ASG_PREFIX=${RIPCORD_ASG_PREFIX-}
if [[ $ROLLOUT == argo ]]; then
    # A DNS-1123 label, as Kubernetes requires of a namespace.
    [[ -z $NAMESPACE || $NAMESPACE =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
        die 2 "RIPCORD_K8S_NAMESPACE is not a namespace name (got '${NAMESPACE}')"
    # Context names are free-form (EKS: arn:aws:eks:...:cluster/NAME); no
    # leading '-', no spaces or quotes.
    [[ -z $CONTEXT || $CONTEXT =~ ^[A-Za-z0-9_][A-Za-z0-9_.:@/+=-]{0,252}$ ]] ||
        die 2 "RIPCORD_K8S_CONTEXT is not a kubeconfig context name (got '${CONTEXT}')"
    need kubectl "kubectl (https://kubernetes.io/docs/tasks/tools/)"
else
    if [[ $MODE == resume ]]; then
        die 2 "refused: an instance refresh cannot be resumed, only started anew, and a new one would re-upgrade the hosts that were rolled back; a human starts it (aws autoscaling start-instance-refresh --auto-scaling-group-name ${ASG_PREFIX}${SERVICE})"
    fi
    # Auto Scaling group names may hold more, but a prefix for ripcord's
    # use needs no more than this; 255 characters at most in all.
    [[ -z $ASG_PREFIX || $ASG_PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,190}$ ]] ||
        die 2 "RIPCORD_ASG_PREFIX must match [A-Za-z0-9][A-Za-z0-9._-]* (got '${ASG_PREFIX}')"
    need aws "the AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html, or Debian's awscli)"
fi

# --- Argo Rollouts ------------------------------------------------------

rollout_argo() {
    local want=true
    [[ $MODE == pause ]] || want=false
    local -a kubectl=(kubectl)
    if [[ -n $CONTEXT ]]; then
        kubectl+=(--context "$CONTEXT")
    fi
    if [[ -n $NAMESPACE ]]; then
        kubectl+=(--namespace "$NAMESPACE")
    fi
    local where="the context's default namespace"
    if [[ -n $NAMESPACE ]]; then
        where="namespace $NAMESPACE"
    fi

    step 5 "$MODE: set spec.paused=$want on rollout $SERVICE ($where)"
    if ! attempt "${kubectl[@]}" patch rollout "$SERVICE" --type merge \
        -p "{\"spec\":{\"paused\":$want}}"; then
        case $ATTEMPT_ERR in
            *'(NotFound)'*)
                die 4 "no rollout $SERVICE in $where" ;;
            *"doesn't have a resource type"*)
                die 4 "no Rollout resource type: Argo Rollouts is not installed in this cluster" ;;
            *) die 5 "kubectl patch failed" ;;
        esac
    fi

    step 5 "read spec.paused of rollout $SERVICE back"
    local got
    got=$("${kubectl[@]}" get rollout "$SERVICE" -o 'jsonpath={.spec.paused}')
    # An unset field reads as empty and means not paused.
    [[ ${got:-false} == "$want" ]] ||
        die 5 "spec.paused of rollout $SERVICE is '$got' after the patch, not $want (something set it back?)"
    printf '%sd rollout %s (argo, %s)\n' "$MODE" "$SERVICE" "$where"
}

# --- EC2 Auto Scaling instance refresh ----------------------------------

refresh_status() {
    aws autoscaling describe-instance-refreshes --auto-scaling-group-name "$1" \
        --max-records 1 --query 'InstanceRefreshes[0].Status' --output text
}

rollout_aws_asg() {
    local group=$ASG_PREFIX$SERVICE
    ((${#group} <= 255)) || die 2 "Auto Scaling group name $group is longer than 255 characters"

    step 4 "look up Auto Scaling group $group"
    local count
    count=$(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$group" \
        --query 'length(AutoScalingGroups)' --output text)
    [[ $count == 1 ]] || die 4 "no Auto Scaling group $group (found $count)"

    step 5 "cancel the instance refresh of $group"
    if ! attempt aws autoscaling cancel-instance-refresh --auto-scaling-group-name "$group"; then
        # The CLI says "An error occurred (ActiveInstanceRefreshNotFound)
        # when calling ...": the error code is the stable part.
        if [[ $ATTEMPT_ERR == *'(ActiveInstanceRefreshNotFound)'* ]]; then
            log "no instance refresh in progress: nothing to pause"
            printf 'no instance refresh of %s in progress: nothing to pause\n' "$group"
            return 0
        fi
        die 5 "aws autoscaling cancel-instance-refresh failed"
    fi

    step 5 "wait until the instance refresh of $group is Cancelled"
    local state deadline=$((SECONDS + WAIT))
    while :; do
        state=$(refresh_status "$group")
        log "instance refresh: $state"
        if [[ $state == Cancelled ]]; then
            break
        fi
        # Any other finished state means the cancel did not take.
        if [[ $state =~ ^(Successful|Failed|RollbackSuccessful|RollbackFailed|None)$ ]]; then
            die 5 "the instance refresh ended '$state', not Cancelled: check which hosts it replaced"
        fi
        ((SECONDS < deadline)) || die 5 "the instance refresh is still '$state' after ${WAIT}s (want Cancelled)"
        sleep "$POLL"
    done
    printf 'cancelled the instance refresh of %s (hosts it already replaced stay replaced)\n' "$group"
}

log "$MODE rollout on $ROLLOUT"
case $ROLLOUT in
    argo) rollout_argo ;;
    aws-asg) rollout_aws_asg ;;
esac
log "done"
