#!/usr/bin/env bash
# rollback.sh INSTANCE_ID: put one cloud host back on its pre-upgrade image.
#
#   1. take it out of its load balancer(s), so no request reaches it;
#   2. rebuild its system disk from the pre-upgrade image (AWS: a
#      replace-root-volume task; Aliyun: stop, ReplaceSystemDisk, start);
#   3. put it back into its load balancer(s) and wait until it is healthy.
#
# ripcord runs it as `executors.rollback` (deploy/ripcord.yaml) with the
# instance label as the only argument, no shell, and a cleared environment
# apart from the allow-listed variables below. It is also the plan's
# one-command manual rollback: `rollback.sh i-0123456789abcdef0`.
#
# Environment:
#   RIPCORD_CLOUD        aws | aliyun (required)
#   RIPCORD_IMAGE_ID     the image to rebuild from. Default: the instance's
#                        tag `ripcord:pre-upgrade-image`, which the upgrade
#                        orchestrator sets before it upgrades the host.
#                        Meant for manual runs: ripcord does not pass it.
#   RIPCORD_LB           the load-balancer backends the instance serves in.
#                        Default: the instance's tag `ripcord:lb`. Words
#                        separated by spaces; `none` for a host behind no
#                        load balancer.
#                          aws:    target group names (resolved to ARNs)
#                          aliyun: slb:LOAD_BALANCER_ID (classic, CLB) and
#                                  alb:SERVER_GROUP_ID:PORT (ALB)
#   RIPCORD_POLL_SECONDS pause between two status polls (default 10)
#   RIPCORD_WAIT_SECONDS give up on one wait after this long (default 600)
#   RIPCORD_DRAIN_SECONDS Aliyun: wait after removing the backend before
#                        stopping it, for connections to drain (default 30;
#                        AWS waits for the target group's own draining)
#   aws:    AWS_REGION / AWS_PROFILE / AWS_* as the AWS CLI reads them
#   aliyun: ALIBABA_CLOUD_REGION_ID (required: the API calls name the
#           region) and ALIBABA_CLOUD_* credentials as the aliyun CLI reads
#           them; jq parses its JSON answers.
#
# Exit status (the failed step is named on stderr, and is the last line):
#   0  rolled back and back in the load balancer, healthy
#   2  usage or configuration error: nothing was changed
#   3  a required tool is missing (aws, aliyun, jq): nothing was changed
#   4  the pre-upgrade image or the load balancers could not be found:
#      nothing was changed
#   5  taking the instance out of a load balancer failed: it may be out of
#      some of them; it was not rebuilt
#   6  the rebuild failed or timed out: the instance is left OUT of its
#      load balancers on purpose (its state is unknown) and, on Aliyun,
#      possibly stopped; a human takes over
#   7  the instance was rebuilt, but putting it back into a load balancer
#      or its health check failed
#
# Rules kept here: the instance id is checked against a strict pattern
# before anything else runs; every expansion is quoted; nothing is eval'd;
# every step is logged to stderr with a UTC timestamp; the first failing
# command ends the script (set -e, trap ERR) naming its step.
set -Eeuo pipefail
shopt -s inherit_errexit
export LC_ALL=C

PROG=rollback.sh
usage() {
    printf 'usage: %s INSTANCE_ID   (RIPCORD_CLOUD=aws|aliyun; see the header)\n' "$PROG" >&2
}

# The instance id first: nothing else runs with a hostile argument
# (`$(id)`, `--help`, `../x`, spaces, an empty string).
INSTANCE=${1-}
ID_RE='^i-[0-9a-z]{8,30}$'
if (($# != 1)) || ! [[ $INSTANCE =~ $ID_RE ]]; then
    printf '%s: refused: the instance id must match %s (got %d argument(s))\n' \
        "$PROG" "$ID_RE" "$#" >&2
    usage
    exit 2
fi

log() {
    printf '%s %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROG" "$INSTANCE" "$*" >&2
}
# The step running now and the exit status its failure means.
STEP="start"
STEP_CODE=1
step() {
    STEP_CODE=$1
    STEP=$2
    log "step: $STEP"
}
die() {
    local code=$1
    shift
    if [[ $STEP == start ]]; then
        log "FAILED: $*"
    else
        log "FAILED at step '$STEP': $*"
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
    log "FAILED at step '$STEP' (line $line, status $status)"
    exit "$STEP_CODE"
}
trap 'on_err "$?" "$LINENO"' ERR

# --- configuration ------------------------------------------------------

CLOUD=${RIPCORD_CLOUD-}
case $CLOUD in
    aws)
        # 8 or 17 hex digits.
        [[ $INSTANCE =~ ^i-([0-9a-f]{8}|[0-9a-f]{17})$ ]] ||
            die 2 "not an EC2 instance id: $INSTANCE"
        ;;
    aliyun)
        [[ $INSTANCE =~ ^i-[0-9a-z]{10,30}$ ]] ||
            die 2 "not an ECS instance id: $INSTANCE"
        ;;
    *) die 2 "RIPCORD_CLOUD must be aws or aliyun (got '${CLOUD}')" ;;
esac

# `number VAR NAME DEFAULT`: VAR=$NAME (or DEFAULT), a whole number. Not
# `VAR=$(number ...)`: die in a command substitution would only end the
# subshell, and the ERR trap would then exit 1 naming step 'start'.
number() {
    local value=${!2-$3}
    [[ $value =~ ^[0-9]{1,6}$ ]] || die 2 "$2 must be a whole number of seconds (got '$value')"
    printf -v "$1" '%s' "$value"
}
POLL=0 WAIT=0 DRAIN=0
number POLL RIPCORD_POLL_SECONDS 10
number WAIT RIPCORD_WAIT_SECONDS 600
number DRAIN RIPCORD_DRAIN_SECONDS 30

need() {
    command -v "$1" >/dev/null 2>&1 ||
        die 3 "'$1' is not on PATH ($PATH): install $2"
}
if [[ $CLOUD == aws ]]; then
    need aws "the AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html, or Debian's awscli)"
else
    need aliyun "the Alibaba Cloud CLI (https://github.com/aliyun/aliyun-cli/releases)"
    need jq "jq (Debian package jq)"
    REGION=${ALIBABA_CLOUD_REGION_ID-}
    [[ $REGION =~ ^[a-z]{2}-[a-z0-9-]{2,30}$ ]] ||
        die 2 "ALIBABA_CLOUD_REGION_ID must name the region, e.g. cn-hangzhou (got '${REGION}')"
fi

# `until_state WHAT WANT BAD_RE PROBE...`: runs PROBE every $POLL seconds
# until it prints WANT; fails at once on a state matching BAD_RE, and
# after $WAIT seconds.
until_state() {
    local what=$1 want=$2 bad=$3 state
    shift 3
    local deadline=$((SECONDS + WAIT))
    while :; do
        state=$("$@")
        log "$what: $state"
        [[ $state == "$want" ]] && return 0
        if [[ $state =~ $bad ]]; then
            die "$STEP_CODE" "$what is '$state'"
        fi
        ((SECONDS < deadline)) || die "$STEP_CODE" "$what still '$state' after ${WAIT}s (want $want)"
        sleep "$POLL"
    done
}

# --- AWS ----------------------------------------------------------------

AMI_RE='^ami-([0-9a-f]{8}|[0-9a-f]{17})$'
TG_NAME_RE='^[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?$'

aws_tags() {
    # Tab-separated key/value lines of the two ripcord tags.
    aws ec2 describe-tags \
        --filters "Name=resource-id,Values=$INSTANCE" "Name=key,Values=ripcord:pre-upgrade-image,ripcord:lb" \
        --query 'Tags[].[Key,Value]' --output text
}

aws_task_state() {
    aws ec2 describe-replace-root-volume-tasks --replace-root-volume-task-ids "$1" \
        --query 'ReplaceRootVolumeTasks[0].TaskState' --output text
}

rollback_aws() {
    local image=${RIPCORD_IMAGE_ID-} lb=${RIPCORD_LB-} key value
    step 4 "look up the pre-upgrade image and target groups (tags of $INSTANCE)"
    if [[ -z $image || -z $lb ]]; then
        local tags
        tags=$(aws_tags)
        while IFS=$'\t' read -r key value; do
            case $key in
                ripcord:pre-upgrade-image) image=${image:-$value} ;;
                ripcord:lb) lb=${lb:-$value} ;;
            esac
        done <<<"$tags"
    fi
    [[ -n $image ]] || die 4 "no image: set the tag ripcord:pre-upgrade-image on $INSTANCE (or RIPCORD_IMAGE_ID)"
    [[ $image =~ $AMI_RE ]] || die 4 "the pre-upgrade image '$image' is not an AMI id"
    [[ -n $lb ]] || die 4 "no load balancer: set the tag ripcord:lb on $INSTANCE to its target group names, or to none"

    local -a names=() arns=()
    local name
    if [[ $lb != none ]]; then
        read -r -a names <<<"$lb"
        for name in "${names[@]}"; do
            [[ $name =~ $TG_NAME_RE ]] || die 4 "'$name' is not a target group name"
        done
        step 4 "resolve target groups ${names[*]}"
        local found
        found=$(aws elbv2 describe-target-groups --names "${names[@]}" \
            --query 'TargetGroups[].TargetGroupArn' --output text)
        read -r -a arns <<<"$found"
        ((${#arns[@]} == ${#names[@]})) || die 4 "found ${#arns[@]} of ${#names[@]} target groups"
    fi
    log "rolling back to $image; target groups: ${names[*]:-none}"

    local arn
    for arn in "${arns[@]}"; do
        step 5 "deregister from $arn"
        aws elbv2 deregister-targets --target-group-arn "$arn" --targets "Id=$INSTANCE" >&2
        step 5 "wait until drained from $arn"
        aws elbv2 wait target-deregistered --target-group-arn "$arn" --targets "Id=$INSTANCE" >&2
    done

    step 6 "start replacing the root volume from $image"
    local task
    task=$(aws ec2 create-replace-root-volume-task --instance-id "$INSTANCE" --image-id "$image" \
        --delete-replaced-root-volume \
        --query 'ReplaceRootVolumeTask.ReplaceRootVolumeTaskId' --output text)
    [[ $task =~ ^replacevol-[0-9a-f]{8,17}$ ]] || die 6 "unexpected task id '$task'"
    step 6 "wait for root volume replacement $task"
    until_state "task $task" succeeded '^(failing|failed|failed-detached|None)$' aws_task_state "$task"

    for arn in "${arns[@]}"; do
        step 7 "register with $arn"
        aws elbv2 register-targets --target-group-arn "$arn" --targets "Id=$INSTANCE" >&2
        step 7 "wait until healthy in $arn"
        aws elbv2 wait target-in-service --target-group-arn "$arn" --targets "Id=$INSTANCE" >&2
    done
    printf 'rolled back %s to %s (task %s); in service in: %s\n' \
        "$INSTANCE" "$image" "$task" "${names[*]:-no load balancer}"
}

# --- Aliyun -------------------------------------------------------------

M_RE='^m-[0-9a-z]{8,40}$'
SLB_RE='^slb:lb-[0-9a-z-]{8,40}$'
ALB_RE='^alb:sgp-[0-9a-z]{8,40}:[0-9]{1,5}$'

aliyun_tags() {
    aliyun ecs ListTagResources --RegionId "$REGION" --ResourceType instance \
        --ResourceId.1 "$INSTANCE" \
        --Tag.1.Key ripcord:pre-upgrade-image --Tag.2.Key ripcord:lb
}

# "STATUS LOCKS": the instance's status and how many operation locks it
# has (a system disk replacement is done when there are none).
aliyun_state() {
    aliyun ecs DescribeInstances --RegionId "$REGION" --InstanceIds "[\"$INSTANCE\"]" |
        jq -r '.Instances.Instance[0] // error("no such instance")
               | "\(.Status) \(.OperationLocks.LockReason // [] | length)"'
}

slb_health() {
    aliyun slb DescribeHealthStatus --RegionId "$REGION" --LoadBalancerId "$1" |
        jq -r --arg id "$INSTANCE" '[.BackendServers.BackendServer[]? | select(.ServerId == $id)
               | .ServerHealthStatus] | if length == 0 then "absent"
               elif all(. == "normal") then "normal" else (unique | join(",")) end'
}

rollback_aliyun() {
    local image=${RIPCORD_IMAGE_ID-} lb=${RIPCORD_LB-}
    step 4 "look up the pre-upgrade image and load balancers (tags of $INSTANCE)"
    if [[ -z $image || -z $lb ]]; then
        local tags
        tags=$(aliyun_tags)
        [[ -n $image ]] || image=$(jq -r '[.TagResources.TagResource[]?
            | select(.TagKey == "ripcord:pre-upgrade-image") | .TagValue][0] // ""' <<<"$tags")
        [[ -n $lb ]] || lb=$(jq -r '[.TagResources.TagResource[]?
            | select(.TagKey == "ripcord:lb") | .TagValue][0] // ""' <<<"$tags")
    fi
    [[ -n $image ]] || die 4 "no image: set the tag ripcord:pre-upgrade-image on $INSTANCE (or RIPCORD_IMAGE_ID)"
    [[ $image =~ $M_RE ]] || die 4 "the pre-upgrade image '$image' is not a custom image id (m-...)"
    [[ -n $lb ]] || die 4 "no load balancer: set the tag ripcord:lb on $INSTANCE (slb:lb-... alb:sgp-...:PORT), or to none"

    local -a backends=()
    local b
    if [[ $lb != none ]]; then
        read -r -a backends <<<"$lb"
        for b in "${backends[@]}"; do
            [[ $b =~ $SLB_RE || $b =~ $ALB_RE ]] ||
                die 4 "'$b' is neither slb:LOAD_BALANCER_ID nor alb:SERVER_GROUP_ID:PORT"
        done
    fi
    log "rolling back to $image; load balancers: ${backends[*]:-none}"

    local id port
    for b in "${backends[@]}"; do
        step 5 "remove from $b"
        case $b in
            slb:*)
                aliyun slb RemoveBackendServers --RegionId "$REGION" --LoadBalancerId "${b#slb:}" \
                    --BackendServers "[{\"ServerId\":\"$INSTANCE\",\"Type\":\"ecs\"}]" >&2
                ;;
            alb:*)
                id=${b#alb:} port=${id##*:} id=${id%:*}
                aliyun alb RemoveServersFromServerGroup --ServerGroupId "$id" \
                    --Servers.1.ServerId "$INSTANCE" --Servers.1.ServerType Ecs \
                    --Servers.1.Port "$port" >&2
                ;;
        esac
    done
    if ((${#backends[@]} > 0 && DRAIN > 0)); then
        step 5 "let connections drain (${DRAIN}s)"
        sleep "$DRAIN"
    fi

    # KeepCharging: a pay-as-you-go instance keeps its resources while
    # stopped, so it can start again after the disk is replaced.
    step 6 "stop the instance"
    aliyun ecs StopInstance --InstanceId "$INSTANCE" --StoppedMode KeepCharging >&2
    step 6 "wait until stopped"
    until_state "instance" "Stopped 0" '^$' aliyun_state
    step 6 "replace the system disk from $image"
    aliyun ecs ReplaceSystemDisk --InstanceId "$INSTANCE" --ImageId "$image" >&2
    step 6 "wait for the system disk replacement"
    until_state "instance" "Stopped 0" '^$' aliyun_state
    step 6 "start the instance"
    aliyun ecs StartInstance --InstanceId "$INSTANCE" >&2
    step 6 "wait until running"
    until_state "instance" "Running 0" '^$' aliyun_state

    for b in "${backends[@]}"; do
        step 7 "add to $b"
        case $b in
            slb:*)
                aliyun slb AddBackendServers --RegionId "$REGION" --LoadBalancerId "${b#slb:}" \
                    --BackendServers "[{\"ServerId\":\"$INSTANCE\",\"Type\":\"ecs\",\"Weight\":\"100\"}]" >&2
                # Not failing at once on `abnormal`: a host that has just
                # booted fails its first health checks until its services
                # are up; like AWS's target-in-service waiter, wait up to
                # $WAIT seconds for `normal`.
                step 7 "wait until healthy in $b"
                until_state "health in $b" normal '^$' slb_health "${b#slb:}"
                ;;
            alb:*)
                id=${b#alb:} port=${id##*:} id=${id%:*}
                aliyun alb AddServersToServerGroup --ServerGroupId "$id" \
                    --Servers.1.ServerId "$INSTANCE" --Servers.1.ServerType Ecs \
                    --Servers.1.Port "$port" --Servers.1.Weight 100 >&2
                ;;
        esac
    done
    printf 'rolled back %s to %s; in service in: %s\n' \
        "$INSTANCE" "$image" "${backends[*]:-no load balancer}"
}

log "rollback on $CLOUD"
"rollback_$CLOUD"
log "done"
