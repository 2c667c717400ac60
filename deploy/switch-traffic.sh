#!/usr/bin/env bash
# switch-traffic.sh --lb alb|slb|nginx switch|restore SERVICE: shift the
# traffic of one service to its standby pool (switch), or back to its
# primary pool (restore), through its load balancer.
#
# ripcord runs it as `executors.switch_traffic` (deploy/ripcord.yaml) when
# the incident commander approves the rollback of a severe high-risk
# incident, beside the rollback, and as `executors.restore_traffic` when
# the rollout is resumed: the service label is the only value from an
# event, no shell, and a cleared environment apart from the allow-listed
# variables below. By hand:
#
#   switch-traffic.sh --lb alb switch payment
#   switch-traffic.sh --lb alb restore payment
#
# The pools of each service are in a file an operator writes (never in an
# event): RIPCORD_TRAFFIC_CONF, default /etc/ripcord/traffic.conf. One line
# per service and load balancer kind, `#` starts a comment:
#
#   SERVICE  KIND   KEY=VALUE ...
#   payment  alb    listener=LISTENER_ARN primary=TARGET_GROUP_ARN standby=TARGET_GROUP_ARN
#   payment  alb    rule=RULE_ARN primary=TARGET_GROUP_ARN standby=TARGET_GROUP_ARN
#   payment  slb    lb=lb-bp1... primary=i-aaa,i-bbb standby=i-ccc,i-ddd [weight=100]
#   payment  nginx  file=/etc/nginx/upstreams/payment.conf primary=10.0.1.11:8080,10.0.1.12:8080 standby=10.0.2.11:8080
#
#   alb    AWS Application Load Balancer, weighted target groups: the
#          listener's default action (listener=) or one of its rules
#          (rule=) becomes a forward to both groups, the pool to serve at
#          weight 100 and the other at 0 (`aws elbv2 modify-listener
#          --default-actions` / `modify-rule --actions`, with ForwardConfig
#          TargetGroups [{TargetGroupArn, Weight}], see the AWS CLI v2
#          reference for elbv2 modify-listener and modify-rule). The whole
#          action list is replaced: for listeners and rules whose only
#          action is that forward. The weights AWS answers with are read
#          back and must be the ones asked for.
#   slb    Aliyun Classic Load Balancer (SLB / CLB), backend weights: both
#          pools are attached to the load balancer; the pool to serve gets
#          `weight` (default 100), the other 0, which SLB forwards no
#          request to (`aliyun slb SetBackendServers --RegionId R
#          --LoadBalancerId lb-... --BackendServers '[{"ServerId":"i-...",
#          "Weight":"0","Type":"ecs"}]'`, at most 20 servers a call, see
#          Alibaba Cloud's SLB API reference, SetBackendServers). The
#          backend list SetBackendServers answers with is checked.
#   nginx  an upstream include file (`upstream payment { include
#          /etc/nginx/upstreams/payment.conf; }`): rewritten to list the
#          pool to serve (`server HOST:PORT;` lines), atomically (a new
#          file in the same directory, renamed over the old one), then
#          `nginx -t`, then `nginx -s reload`. A failed test or reload
#          puts the previous file back.
#
# Environment:
#   RIPCORD_TRAFFIC_CONF  the pools file (default /etc/ripcord/traffic.conf)
#   alb:   AWS_REGION / AWS_PROFILE / AWS_* as the AWS CLI reads them
#   slb:   ALIBABA_CLOUD_REGION_ID (required) and ALIBABA_CLOUD_* as the
#          aliyun CLI reads them; jq parses its answer
#   nginx: nginx on PATH, allowed to test the configuration and signal the
#          master process; the include file's directory writable
#
# Exit status (the failed step is named on stderr, and is the last line):
#   0  the traffic is on the pool asked for
#   2  usage or configuration error (arguments, environment, pools file):
#      nothing was called
#   3  a required tool is missing (aws, aliyun, jq, nginx): nothing was called
#   4  nginx refused the new upstream (`nginx -t`) or could not reload it:
#      the previous file is back, the traffic did not move
#   5  the load balancer call failed, or its answer is not the weights asked
#      for: the traffic may have moved in part; a human looks
#
# Rules kept here: every argument and every value of the pools file is
# checked against a strict pattern before anything runs; every expansion
# is quoted; nothing is eval'd or sourced; every step is logged to stderr
# with a UTC timestamp; the first failing command ends the script (set -e,
# trap ERR) naming its step.
set -Eeuo pipefail
shopt -s inherit_errexit
export LC_ALL=C

PROG=switch-traffic.sh
usage() {
    printf 'usage: %s --lb alb|slb|nginx switch|restore SERVICE   (see the header)\n' "$PROG" >&2
}

# The arguments first: nothing else runs with a hostile one (`$(id)`,
# `--help`, `../x`, spaces, an empty string, a second service).
LB=${2-}
MODE=${3-}
SERVICE=${4-}
SERVICE_RE='^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'
if (($# != 4)) || [[ $1 != --lb ]] || ! [[ $LB =~ ^(alb|slb|nginx)$ ]] ||
    ! [[ $MODE =~ ^(switch|restore)$ ]] || ! [[ $SERVICE =~ $SERVICE_RE ]]; then
    printf '%s: refused: expected --lb alb|slb|nginx switch|restore SERVICE, SERVICE matching %s (got %d argument(s))\n' \
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

# The pool that serves after this run, and the one that does not.
if [[ $MODE == switch ]]; then
    TO=standby FROM=primary
else
    TO=primary FROM=standby
fi

# --- the pools file -------------------------------------------------------

CONF=${RIPCORD_TRAFFIC_CONF-/etc/ripcord/traffic.conf}
[[ $CONF =~ ^/?[A-Za-z0-9._/-]{1,255}$ && $CONF != *..* ]] ||
    die 2 "RIPCORD_TRAFFIC_CONF is not a plain file path (got '${CONF}')"
[[ -f $CONF && -r $CONF ]] || die 2 "cannot read the pools file $CONF (RIPCORD_TRAFFIC_CONF)"

# The service's line for this kind of load balancer, as KEY=VALUE words
# in SETTINGS (an associative array). Exactly one line must match.
declare -A SETTINGS=()
FOUND=0
MINE=()
while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    read -r -a words <<<"$line"
    ((${#words[@]} > 0)) || continue
    [[ ${words[0]} == "$SERVICE" && ${words[1]-} == "$LB" ]] || continue
    FOUND=$((FOUND + 1))
    MINE=("${words[@]:2}")
done <"$CONF"
((FOUND == 1)) || die 2 "$CONF: expected one line '$SERVICE $LB ...', found $FOUND"
for word in "${MINE[@]}"; do
    [[ $word =~ ^([a-z]+)=(.+)$ ]] || die 2 "$CONF: '$word' is not KEY=VALUE"
    key=${BASH_REMATCH[1]}
    [[ -z ${SETTINGS[$key]+set} ]] || die 2 "$CONF: $key given twice for $SERVICE $LB"
    SETTINGS[$key]=${BASH_REMATCH[2]}
done

# `setting VAR KEY RE [DEFAULT]`: VAR=the KEY of the service's line (or
# DEFAULT), which must match RE.
setting() {
    local value
    if [[ -n ${SETTINGS[$2]+set} ]]; then
        value=${SETTINGS[$2]}
    elif (($# == 4)); then
        value=$4
    else
        die 2 "$CONF: $SERVICE $LB needs $2="
    fi
    [[ $value =~ $3 ]] || die 2 "$CONF: $SERVICE $LB: $2='$value' does not match $3"
    printf -v "$1" '%s' "$value"
}
# `allowed KEY...`: no other key on the line (a typo is no silent default).
allowed() {
    local key ok k
    for key in "${!SETTINGS[@]}"; do
        ok=0
        for k in "$@"; do
            if [[ $key == "$k" ]]; then
                ok=1
            fi
        done
        ((ok)) || die 2 "$CONF: $SERVICE $LB: unknown key $key= (expected: $*)"
    done
}

need() {
    command -v "$1" >/dev/null 2>&1 ||
        die 3 "'$1' is not on PATH ($PATH): install $2"
}

# --- AWS ALB: weighted target groups --------------------------------------

ARN_PART='^arn:aws(-cn|-us-gov)?:elasticloadbalancing:[a-z]{2}(-[a-z]+)+-[0-9]:[0-9]{12}:'
LISTENER_RE="${ARN_PART}listener/app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}/[0-9a-f]{16}\$"
RULE_RE="${ARN_PART}listener-rule/app/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}/[0-9a-f]{16}/[0-9a-f]{16}\$"
TG_RE="${ARN_PART}targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}\$"

switch_alb() {
    allowed listener rule primary standby
    local listener="" rule="" primary standby
    if [[ -n ${SETTINGS[listener]+set} ]]; then
        setting listener listener "$LISTENER_RE"
    fi
    if [[ -n ${SETTINGS[rule]+set} ]]; then
        setting rule rule "$RULE_RE"
    fi
    if [[ -z $listener && -z $rule ]] || [[ -n $listener && -n $rule ]]; then
        die 2 "$CONF: $SERVICE alb needs listener= or rule= (one of them)"
    fi
    setting primary primary "$TG_RE"
    setting standby standby "$TG_RE"
    [[ $primary != "$standby" ]] || die 2 "$CONF: $SERVICE alb: primary and standby are the same target group"
    need aws "the AWS CLI v2 (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html, or Debian's awscli)"

    local -A want=([primary]=0 [standby]=0)
    want[$TO]=100
    # Every value is a checked ARN or a number: nothing to escape.
    local actions
    actions=$(printf '[{"Type":"forward","ForwardConfig":{"TargetGroups":[{"TargetGroupArn":"%s","Weight":%d},{"TargetGroupArn":"%s","Weight":%d}]}}]' \
        "$primary" "${want[primary]}" "$standby" "${want[standby]}")
    local got
    if [[ -n $listener ]]; then
        step 5 "forward listener $listener to the $TO pool"
        got=$(aws elbv2 modify-listener --listener-arn "$listener" --default-actions "$actions" \
            --query 'Listeners[0].DefaultActions[0].ForwardConfig.TargetGroups[].[TargetGroupArn,Weight]' \
            --output text)
    else
        step 5 "forward rule $rule to the $TO pool"
        got=$(aws elbv2 modify-rule --rule-arn "$rule" --actions "$actions" \
            --query 'Rules[0].Actions[0].ForwardConfig.TargetGroups[].[TargetGroupArn,Weight]' \
            --output text)
    fi

    step 5 "check the weights AWS answered with"
    local arn weight seen=0
    while IFS=$'\t' read -r arn weight; do
        [[ -n $arn ]] || continue
        case $arn in
            "$primary") [[ $weight == "${want[primary]}" ]] || die 5 "primary $arn has weight '$weight', not ${want[primary]}" ;;
            "$standby") [[ $weight == "${want[standby]}" ]] || die 5 "standby $arn has weight '$weight', not ${want[standby]}" ;;
            *) die 5 "AWS answered with a target group that is not in the pools file: '$arn'" ;;
        esac
        seen=$((seen + 1))
    done <<<"$got"
    ((seen == 2)) || die 5 "AWS answered with $seen target group(s), not 2"
    printf '%s: traffic of %s on the %s pool (alb %s: %s weight %d, %s weight %d)\n' \
        "$MODE" "$SERVICE" "$TO" "${listener:-$rule}" \
        "$primary" "${want[primary]}" "$standby" "${want[standby]}"
}

# --- Aliyun SLB: backend server weights -----------------------------------

ECS_RE='^i-[0-9a-z]{8,30}(,i-[0-9a-z]{8,30}){0,19}$'

switch_slb() {
    allowed lb primary standby weight
    local lb primary standby weight
    setting lb lb '^lb-[0-9a-z-]{8,40}$'
    setting primary primary "$ECS_RE"
    setting standby standby "$ECS_RE"
    setting weight weight '^([1-9][0-9]?|100)$' 100
    local -a pools=() from_ids=() to_ids=()
    IFS=, read -r -a pools <<<"$primary,$standby"
    ((${#pools[@]} <= 20)) || die 2 "$CONF: $SERVICE slb: ${#pools[@]} servers; SetBackendServers takes 20 at most"
    local id o count
    for id in "${pools[@]}"; do
        count=0
        for o in "${pools[@]}"; do
            if [[ $o == "$id" ]]; then
                count=$((count + 1))
            fi
        done
        ((count == 1)) || die 2 "$CONF: $SERVICE slb: $id is listed twice"
    done
    if [[ $TO == standby ]]; then
        IFS=, read -r -a to_ids <<<"$standby"
        IFS=, read -r -a from_ids <<<"$primary"
    else
        IFS=, read -r -a to_ids <<<"$primary"
        IFS=, read -r -a from_ids <<<"$standby"
    fi
    REGION=${ALIBABA_CLOUD_REGION_ID-}
    [[ $REGION =~ ^[a-z]{2}-[a-z0-9-]{2,30}$ ]] ||
        die 2 "ALIBABA_CLOUD_REGION_ID must name the region, e.g. cn-hangzhou (got '${REGION}')"
    need aliyun "the Alibaba Cloud CLI (https://github.com/aliyun/aliyun-cli/releases)"
    need jq "jq (Debian package jq)"

    # Every value is a checked instance id or a number: nothing to escape.
    local servers="" sep=""
    for id in "${to_ids[@]}"; do
        servers+="$sep{\"ServerId\":\"$id\",\"Weight\":\"$weight\",\"Type\":\"ecs\"}"
        sep=,
    done
    for id in "${from_ids[@]}"; do
        servers+="$sep{\"ServerId\":\"$id\",\"Weight\":\"0\",\"Type\":\"ecs\"}"
    done
    step 5 "set the weights of $lb: the $TO pool $weight, the $FROM pool 0"
    local answer
    answer=$(aliyun slb SetBackendServers --RegionId "$REGION" --LoadBalancerId "$lb" \
        --BackendServers "[$servers]")

    step 5 "check the weights SLB answered with"
    local got
    got=$(jq -r '.BackendServers.BackendServer[]? | "\(.ServerId) \(.Weight)"' <<<"$answer")
    local -A weights=()
    local w
    while read -r id w; do
        if [[ -n $id ]]; then
            weights[$id]=$w
        fi
    done <<<"$got"
    for id in "${to_ids[@]}"; do
        [[ ${weights[$id]-absent} == "$weight" ]] || die 5 "$id has weight '${weights[$id]-absent}', not $weight"
    done
    for id in "${from_ids[@]}"; do
        [[ ${weights[$id]-absent} == 0 ]] || die 5 "$id has weight '${weights[$id]-absent}', not 0"
    done
    printf '%s: traffic of %s on the %s pool (slb %s: %s at weight %d, %s at 0)\n' \
        "$MODE" "$SERVICE" "$TO" "$lb" "${to_ids[*]}" "$weight" "${from_ids[*]}"
}

# --- nginx: an upstream include file --------------------------------------

HOST_PORT_RE='[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?:[0-9]{1,5}'

# `put FILE CONTENT`: FILE holds CONTENT, atomically: a new file next to
# it (created, never an existing one: noclobber), renamed over it.
put() {
    local file=$1 content=$2 tmp
    tmp="${file%/*}/.${file##*/}.ripcord-$$"
    (
        umask 022
        set -o noclobber
        printf '%s' "$content" >"$tmp"
    ) || die "$STEP_CODE" "cannot write $tmp"
    mv -f "$tmp" "$file" || die "$STEP_CODE" "cannot rename $tmp to $file (it is left there)"
}

switch_nginx() {
    allowed file primary standby
    local file primary standby
    setting file file '^/[A-Za-z0-9._/-]{1,255}\.conf$'
    [[ $file != *..* && $file != */./* ]] || die 2 "$CONF: $SERVICE nginx: file='$file' has . or .. in it"
    setting primary primary "^$HOST_PORT_RE(,$HOST_PORT_RE){0,63}\$"
    setting standby standby "^$HOST_PORT_RE(,$HOST_PORT_RE){0,63}\$"
    # ripcord rewrites the include, it does not create it: nginx's own
    # configuration includes it, with the primary pool to begin with.
    [[ -f $file ]] || die 2 "$CONF: $SERVICE nginx: no file $file (write it with the primary pool first)"
    need nginx "nginx (Debian package nginx)"
    need mv "coreutils"

    local pool=$primary
    if [[ $TO == standby ]]; then
        pool=$standby
    fi
    local -a servers=()
    IFS=, read -r -a servers <<<"$pool"
    local content s
    content="# written by $PROG: the $TO pool of $SERVICE ($MODE)"$'\n'
    for s in "${servers[@]}"; do
        content+="server $s;"$'\n'
    done

    local previous
    previous=$(<"$file")$'\n'
    step 4 "write the $TO pool into $file"
    put "$file" "$content"

    step 4 "test the configuration (nginx -t)"
    if ! nginx -t >&2; then
        log "putting the previous $file back"
        put "$file" "$previous"
        die 4 "nginx -t refused the $TO pool; the previous upstream is back, nothing reloaded"
    fi
    step 4 "reload nginx (nginx -s reload)"
    if ! nginx -s reload >&2; then
        log "putting the previous $file back"
        put "$file" "$previous"
        die 4 "nginx -s reload failed; the previous upstream is back in $file"
    fi
    printf '%s: traffic of %s on the %s pool (nginx %s: %s)\n' \
        "$MODE" "$SERVICE" "$TO" "$file" "${servers[*]}"
}

log "$MODE traffic to the $TO pool on $LB"
"switch_$LB"
log "done"
