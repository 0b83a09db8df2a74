#!/usr/bin/env bash
# Run one `pefm` step in the cluster as a Job made from cd-job.yaml, wait for it, print its log and
# exit with its exit status: how CD (.github/workflows/cd.yml) trains, gates and rolls out without
# the database URL ever reaching the runner. Needs kubectl (with kustomize) and jq, and a kubeconfig
# that may create Jobs and apply cd-network-policy.yaml in namespace pefm, and read their pods, logs
# and events.
#
#   cd-job.sh --step STEP --image REGISTRY/NAME@sha256:DIGEST [options] -- pefm ARGS...
#     --step NAME              what the Job does (train, gate, rollout, ...): its name is
#                              pefm-cd-STEP-<GitHub run id>-<attempt> (or -<epoch seconds> elsewhere)
#     --image REF              the inference image, by digest
#     --service-account NAME   default pefm-bootstrap (no API token); any other one gets its token
#     --timeout SECONDS        how long the step may run once created (default 3600); then the log
#                              so far is printed, the Job deleted and the exit status is 124
#     --pull-secret NAME       image pull Secret for the pod, used only when it exists in pefm
#     --log FILE               also write the log here
#     --render                 print the Job and stop (no cluster needed)
# Exit status: the container's (pefm gate: 1 when the candidate fails; pefm rollout start --watch:
# 1 rolled back, 3 timed out), 1 when the pod never started (image pull, missing Secret), 124 on
# the timeout, 2 on a usage error.
set -euo pipefail
shopt -s inherit_errexit

NAMESPACE=pefm
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATE="$HERE/cd-job.yaml"
POLL=${PEFM_CD_JOB_POLL:-10}   # seconds between looks at the Job
STUCK=${PEFM_CD_JOB_STUCK:-300} # seconds a pod may stay unable to start before the step fails

die() {
    echo "::error::cd-job.sh: $*" >&2
    exit "${2:-1}"
}

usage() {
    sed -n '/^#   cd-job.sh /,/^#     --render/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

step="" image="" service_account=pefm-bootstrap timeout=3600 pull_secret="" log_file="" render=false
while [[ $# -gt 0 ]]; do
    case $1 in
        --render) render=true; shift; continue ;;
        --) shift; break ;;
        --step | --image | --service-account | --timeout | --pull-secret | --log) [[ $# -ge 2 ]] || usage ;;
        *) usage ;;
    esac
    case $1 in
        --step) step=$2 ;;
        --image) image=$2 ;;
        --service-account) service_account=$2 ;;
        --timeout) timeout=$2 ;;
        --pull-secret) pull_secret=$2 ;;
        --log) log_file=$2 ;;
    esac
    shift 2
done
[[ $# -gt 0 ]] || usage
[[ $step =~ ^[a-z][a-z0-9-]{0,15}$ ]] || die "--step must be a short DNS label, not '$step'" 2
[[ $image =~ ^([a-z0-9][a-z0-9._/:-]*)@(sha256:[0-9a-f]{64})$ ]] ||
    die "--image must name the image by digest (NAME@sha256:...), not '$image'" 2
image_name=${BASH_REMATCH[1]} image_digest=${BASH_REMATCH[2]}
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a number of seconds, not '$timeout'" 2
[[ $service_account =~ ^[a-z0-9][a-z0-9.-]*$ ]] || die "bad --service-account '$service_account'" 2

suffix="$step-${GITHUB_RUN_ID:-$(date +%s)}${GITHUB_RUN_ATTEMPT:+-$GITHUB_RUN_ATTEMPT}"
job="pefm-cd-$suffix"

# The Job: cd-job.yaml through a kustomization written as JSON (jq quotes every value, the command's
# arguments included), so nothing a caller passes can change the manifest's structure.
render_job() {
    local dir=$1 ops
    shift
    ops=$(jq -cn \
        --arg step "$step" --arg sa "$service_account" --argjson deadline "$((timeout + 300))" \
        --arg pull "$pull_secret" --arg source "${GITHUB_RUN_ID:+${GITHUB_SERVER_URL:-https://github.com}/${GITHUB_REPOSITORY:-}/actions/runs/$GITHUB_RUN_ID}" \
        --args '
        [
          {op: "add", path: "/metadata/labels/app.kubernetes.io~1component", value: $step},
          {op: "add", path: "/spec/template/metadata/labels/app.kubernetes.io~1component", value: $step},
          {op: "replace", path: "/spec/activeDeadlineSeconds", value: $deadline},
          {op: "replace", path: "/spec/template/spec/serviceAccountName", value: $sa},
          {op: "replace", path: "/spec/template/spec/automountServiceAccountToken", value: ($sa != "pefm-bootstrap")},
          {op: "replace", path: "/spec/template/spec/containers/0/command", value: $ARGS.positional}
        ]
        + (if $pull == "" then [] else
            [{op: "add", path: "/spec/template/spec/imagePullSecrets", value: [{name: $pull}]}] end)
        + (if $source == "" then [] else
            [{op: "add", path: "/metadata/annotations/pefm.dev~1source", value: $source}] end)' \
        -- "$@")
    cp "$TEMPLATE" "$dir/cd-job.yaml"
    jq -n --arg ns "$NAMESPACE" --arg suffix "-$suffix" --arg name "$image_name" --arg digest "$image_digest" \
        --arg ops "$ops" '{
          apiVersion: "kustomize.config.k8s.io/v1beta1",
          kind: "Kustomization",
          namespace: $ns,
          nameSuffix: $suffix,
          resources: ["cd-job.yaml"],
          images: [{name: "pefm-inference", newName: $name, digest: $digest}],
          patches: [{target: {kind: "Job", name: "pefm-cd"}, patch: $ops}]
        }' >"$dir/kustomization.yaml"
    kubectl kustomize "$dir"
}

# "Complete" or "Failed" once the Job finished, else nothing.
finished() {
    kubectl -n "$NAMESPACE" get "job/$job" \
        -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{"\n"}{end}' |
        grep -xE 'Complete|Failed' | head -n 1 || true
}

pods() {
    kubectl -n "$NAMESPACE" get pods -l "batch.kubernetes.io/job-name=$job" "$@"
}

print_log() {
    local out=${log_file:-/dev/null}
    echo "----- log of job/$job -----"
    kubectl -n "$NAMESPACE" logs "job/$job" --all-containers --tail=-1 2>&1 | tee "$out" || true
    echo "----- end of the log of job/$job -----"
}

diagnose() {
    pods -o wide || true
    kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp \
        --field-selector "involvedObject.name=$job" || true
    local pod
    for pod in $(pods -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
        kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp --field-selector "involvedObject.name=$pod" || true
    done
}

main() {
    local manifest
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    if [[ -n $pull_secret && $render == false ]] &&
        ! kubectl -n "$NAMESPACE" get secret "$pull_secret" -o name >/dev/null 2>&1; then
        pull_secret="" # public packages: no pull Secret in the cluster, none needed
    fi
    manifest=$(render_job "$WORK" "$@")
    if [[ $render == true ]]; then
        echo "$manifest"
        return 0
    fi

    echo "job/$job: $* (image $image, ServiceAccount $service_account, at most ${timeout}s)"
    kubectl apply -f "$HERE/cd-network-policy.yaml"
    kubectl -n "$NAMESPACE" create -f - <<<"$manifest"
    local start=$SECONDS stuck_since="" state="" waiting="" elapsed last_report=0
    while :; do
        state=$(finished)
        [[ -n $state ]] && break
        elapsed=$((SECONDS - start))
        if [[ $elapsed -ge $timeout ]]; then
            print_log
            diagnose
            kubectl -n "$NAMESPACE" delete "job/$job" --wait=false || true
            die "job/$job did not finish in ${timeout}s: deleted" 124
        fi
        # A pod that cannot start (image pull, missing Secret or ServiceAccount) would sit there
        # until the deadline: give it STUCK seconds, then stop.
        waiting=$(pods -o jsonpath='{.items[*].status.containerStatuses[*].state.waiting.reason}' 2>/dev/null || true)
        if [[ $waiting =~ ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainerConfigError|CreateContainerError ]] ||
            [[ -z $(pods -o name 2>/dev/null) ]]; then
            stuck_since=${stuck_since:-$SECONDS}
            if [[ $((SECONDS - stuck_since)) -ge $STUCK ]]; then
                diagnose
                kubectl -n "$NAMESPACE" delete "job/$job" --wait=false || true
                die "job/$job: no pod could start in ${STUCK}s (${waiting:-no pod created}): deleted"
            fi
        else
            stuck_since=""
        fi
        if [[ $((elapsed - last_report)) -ge 60 ]]; then
            echo "job/$job: running for $((elapsed / 60)) min (pods: $(pods -o jsonpath='{.items[*].status.phase}' 2>/dev/null || true)${waiting:+, $waiting})"
            last_report=$elapsed
        fi
        sleep "$POLL"
    done

    print_log
    if [[ $state == Complete ]]; then
        echo "job/$job: complete"
        return 0
    fi
    local code reason
    code=$(pods -o jsonpath='{.items[-1:].status.containerStatuses[0].state.terminated.exitCode}' 2>/dev/null || true)
    reason=$(kubectl -n "$NAMESPACE" get "job/$job" -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}' || true)
    diagnose
    [[ $code =~ ^[1-9][0-9]*$ ]] || code=1 # killed at the deadline, or no status left: a failure all the same
    die "job/$job failed (${reason:-no reason given}, exit status $code)" "$code"
}

main "$@"
