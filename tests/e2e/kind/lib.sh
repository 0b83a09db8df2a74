#!/usr/bin/env bash
# Shared by the kind end-to-end scripts (cluster.sh, images.sh, deploy.sh, scenario.sh,
# diagnostics.sh): where things are, logging, bounded waits, the database, the Canary and the
# model version the inference Service actually serves. Sourced, never run.
# The settings below are read by the scripts that source this file (SC2034 cannot see them).
# shellcheck source-path=SCRIPTDIR disable=SC2034
# shellcheck source=versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

# Command substitutions fail with the commands inside them, as the scripts expect.
shopt -s inherit_errexit

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_DIR/../../.." && pwd)
# Run state (kubeconfig, secrets, renders, logs) outside the checkout; secrets stay in 0700 files.
E2E_STATE=${E2E_STATE:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/pefm-e2e}
CLUSTER=${E2E_CLUSTER:-pefm-e2e}
NS=pefm                       # PEFM's namespace (knative/base sets it)
LOAD_NS=pefm-e2e              # the load generator's (tests/e2e/kind/loadgen.yaml)
INFERENCE=pefm-inference      # the inference Knative Service, and the Canary that targets it
DB_PORT=${E2E_DB_PORT:-15432} # the runner's end of the port-forward to the in-cluster database
PROMETHEUS_URL=http://flagger-prometheus.flagger-system:9090
OVERLAY=knative/overlays/cpu
FORECAST_URL=http://$INFERENCE.$NS.svc.cluster.local/v1/forecast
FORECAST_BODY='{"series_id":"realgdp","horizon":4}'
IMAGE_REGISTRY=kind.local # Knative skips tag-to-digest resolution for it (cluster.sh sets it)
IMAGE_TAG=${E2E_IMAGE_TAG:-e2e-$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo local)}
# the inference image with the test-only fault injection of tests/faults (images.sh builds it)
FAULTY_IMAGE=$IMAGE_REGISTRY/pefm-inference-faulty:$IMAGE_TAG

mkdir -p "$E2E_STATE/bin"
PATH="$E2E_STATE/bin:$PATH"
export PATH E2E_STATE KUBECONFIG="$E2E_STATE/kubeconfig"
# The pefm CLI acts on the cluster (the inference Service's template, the Canary) in this namespace,
# with the repository's rollout spec wherever the scripts run from.
export PEFM_KNATIVE_NAMESPACE=$NS PEFM_ROLLOUT_SPEC="$REPO_ROOT/knative/rollout.yaml"
# rich wraps at 80 columns without a terminal; the scripts read single lines of pefm's output
export COLUMNS=200

log() {
    printf '\n==> %s\n' "$*" >&2
}

die() {
    printf '::error::%s\n' "$*" >&2
    exit 1
}

# wait_until SECONDS WHAT COMMAND...: run COMMAND every WAIT_INTERVAL seconds (default 5) until it
# succeeds; fail (status 1) after SECONDS.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            printf '::error::timed out after %ss waiting for %s\n' "$timeout" "$what" >&2
            return 1
        fi
        sleep "${WAIT_INTERVAL:-5}"
    done
}

# Every Deployment in a namespace Available, within SECONDS.
wait_deployments() {
    local namespace=$1 timeout=$2
    kubectl -n "$namespace" wait deployment --all --for=condition=Available --timeout="${timeout}s"
}

# --- secrets: random per run, masked in the workflow's log ---

secret_file() {
    printf '%s/secrets/%s\n' "$E2E_STATE" "$1"
}

# new_secret NAME: a random hex secret, made once per run, without a newline (Secrets made
# --from-file keep every byte); prints nothing.
new_secret() {
    local file
    file=$(secret_file "$1")
    if [[ ! -s $file ]]; then
        (umask 077 && mkdir -p "${file%/*}" && openssl rand -hex 24 | tr -d '\n' >"$file")
    fi
    mask "$(<"$file")"
}

mask() {
    if [[ -n ${GITHUB_ACTIONS:-} ]]; then
        printf '::add-mask::%s\n' "$1"
    fi
}

# --- the database: the in-cluster PostgreSQL of tests/e2e/kind/postgres.yaml ---

# psql_pefm SQL: one query as the pefm user, unaligned rows on stdout.
psql_pefm() {
    kubectl -n "$NS" exec deploy/pefm-postgres -c postgres -- \
        psql -U pefm -d pefm -v ON_ERROR_STOP=1 -qtAc "$1"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# (Re)start the port-forward that gives the runner's pefm CLI the database, unless it answers.
db_forward() {
    port_open "$DB_PORT" && return 0
    local pidfile="$E2E_STATE/db-forward.pid"
    if [[ -s $pidfile ]]; then
        kill "$(<"$pidfile")" 2>/dev/null || true
    fi
    kubectl -n "$NS" port-forward svc/pefm-postgres "$DB_PORT:5432" >>"$E2E_STATE/db-forward.log" 2>&1 &
    echo "$!" >"$pidfile"
    wait_until 30 "the port-forward to the database" port_open "$DB_PORT"
}

# pefm_cli ARGS...: the pefm CLI on the runner, against the in-cluster database and the cluster;
# stopped after PEFM_CLI_TIMEOUT seconds (default 1800, exit status 124).
pefm_cli() {
    db_forward
    # the operator: the owner's URL, and the trainer's key for the models it trains (pefm train, retrain)
    PEFM_DATABASE_URL="postgresql://pefm:$(<"$(secret_file db-password)")@127.0.0.1:$DB_PORT/pefm" \
        PEFM_SIGNING_KEY="$(<"$(secret_file signing-key)")" \
        timeout "${PEFM_CLI_TIMEOUT:-1800}" pefm "$@"
}

check_version_id() {
    [[ $1 =~ ^[a-z0-9][a-z0-9-]{0,62}$ ]] || die "not a model version id: '$1'"
}

# The registry's serving versions (comma-separated; one is expected).
registry_serving() {
    psql_pefm "SELECT coalesce(string_agg(id, ',' ORDER BY id), '') FROM model_versions WHERE status = 'serving'"
}

registry_status() {
    check_version_id "$1"
    psql_pefm "SELECT status FROM model_versions WHERE id = '$1'"
}

# --- the inference Service and its Canary ---

ksvc() {
    kubectl -n "$NS" get "services.serving.knative.dev/$INFERENCE" -o "jsonpath=$1"
}

primary_revision() {
    ksvc '{.metadata.annotations.flagger\.app/primary-revision}'
}

latest_revision() {
    ksvc '{.status.latestCreatedRevisionName}'
}

# revision_env REVISION NAME: the value of an environment variable in a revision's container.
revision_env() {
    kubectl -n "$NS" get "revisions.serving.knative.dev/$1" \
        -o "jsonpath={.spec.containers[0].env[?(@.name==\"$2\")].value}"
}

canary() {
    kubectl -n "$NS" get "canaries.flagger.app/$INFERENCE" -o "jsonpath=$1"
}

canary_phase() {
    canary '{.status.phase}'
}

# What Flagger last analysed (a hash of the latest created revision's name).
canary_spec() {
    canary '{.status.lastAppliedSpec}'
}

canary_phase_is() {
    local phase
    phase=$(canary_phase 2>/dev/null) || return 1
    [[ $phase == "$1" ]]
}

# canary_settled_after SPEC: Flagger has taken up a revision other than the one SPEC stands for
# and finished with it (Succeeded or Failed).
canary_settled_after() {
    local phase spec
    phase=$(canary_phase 2>/dev/null) || return 1
    spec=$(canary_spec 2>/dev/null) || return 1
    [[ $spec != "$1" && ($phase == Succeeded || $phase == Failed) ]]
}

# --- what serves: requests from inside the cluster, through Kourier ---

# sample_served N: N forecast requests from the load generator's pod; two lines each: the JSON
# body, then "HTTP_CODE X-PEFM-Model-Version X-PEFM-Revision".
sample_served() {
    # shellcheck disable=SC2016 # expanded by the pod's shell
    kubectl -n "$LOAD_NS" exec deploy/pefm-loadgen -- sh -c '
        i=0
        while [ "$i" -lt "$1" ]; do
            i=$((i + 1))
            curl -sS -m 10 -H "content-type: application/json" -d "$3" \
                -w "\n%{http_code} %header{x-pefm-model-version} %header{x-pefm-revision}\n" "$2" || echo
        done' sh "$1" "$FORECAST_URL" "$FORECAST_BODY"
}

# served_by VERSION REVISION N: N requests all answered 200 by REVISION serving VERSION, in the
# body (model_version, revision) and in the headers alike; otherwise says why and returns 1.
# (Called as a wait_until condition, where errexit is off: every failure returns explicitly.)
served_by() {
    local version=$1 revision=$2 n=$3 body meta code header_version header_revision got
    local count=0 samples="$E2E_STATE/served.txt"
    sample_served "$n" >"$samples" || return 1
    while IFS= read -r body && IFS= read -r meta; do
        count=$((count + 1))
        read -r code header_version header_revision <<<"$meta"
        if [[ $code != 200 ]]; then
            echo "request $count answered $code: $body" >&2
            return 1
        fi
        if ! got=$(jq -r '[.model_version, .revision] | join(" ")' <<<"$body" 2>/dev/null); then
            echo "request $count answered with something other than JSON: $body" >&2
            return 1
        fi
        if [[ $got != "$version $revision" || "$header_version $header_revision" != "$version $revision" ]]; then
            echo "request $count served '$got' (body), '$header_version $header_revision' (headers)," \
                "expected '$version $revision'" >&2
            return 1
        fi
    done <"$samples"
    if ((count != n)); then
        echo "expected $n answers from the load generator's pod, read $count" >&2
        return 1
    fi
}

# assert_served VERSION REVISION [N]: served_by, given a minute for Kourier to take up a new route.
assert_served() {
    local n=${3:-20}
    WAIT_INTERVAL=3 wait_until 60 "$n requests answered by $2 with model $1" served_by "$1" "$2" "$n" ||
        die "what answers requests is not $2 with model $1"
    log "served: $n of $n requests answered by $2 with model $1"
}
