#!/usr/bin/env bash
# Deploy PEFM on the kind cluster the way cd.yml deploys it on a real one: the Secrets, the CPU
# overlay through a kustomization whose `images:` name the loaded images, the Canary rendered with
# the webhook token; then wait for the bootstrap Job, the Knative Services and the Canary's
# initialization. Also the e2e fixtures: the database first, the load generator last.
# Needs cluster.sh and images.sh first.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOKENS=(admin ingest webhook shadow)
# The database roles pefm bootstrap creates (pefm.storage.roles), one URL and password each.
COMPONENTS=(ingest inference monitor rollout dashboard trainer)

ensure_namespace() {
    kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f -
}

# secret NAME KEY=FILE...: a generic Secret in PEFM's namespace, created or updated.
secret() {
    local name=$1 pair args=()
    shift
    for pair in "$@"; do
        args+=("--from-file=$pair")
    done
    kubectl -n "$NS" create secret generic "$name" "${args[@]}" --dry-run=client -o yaml | kubectl apply -f -
}

# db_url USER PASSWORD-FILE: the in-cluster database's URL for one role.
db_url() {
    printf 'postgresql://%s:%s@pefm-postgres.%s.svc.cluster.local:5432/pefm' "$1" "$(<"$2")" "$NS"
}

# The Ed25519 pair model artifacts are signed with (PEM: PKCS#8 private, SubjectPublicKeyInfo
# public), made once per run: signing-key for whatever trains, verify-key for what loads models.
new_signing_key() {
    local private public
    private=$(secret_file signing-key) public=$(secret_file verify-key)
    if [[ ! -s $private ]]; then
        (umask 077 && mkdir -p "${private%/*}" && openssl genpkey -algorithm ed25519 -out "$private")
    fi
    [[ -s $public ]] || openssl pkey -in "$private" -pubout -out "$public"
}

create_secrets() {
    log "Secrets pefm-postgres, pefm-database, pefm-tokens, pefm-signing and pefm-cache (random for this run)"
    local name file pairs=()
    new_secret db-password
    file=$(secret_file database-url)
    (umask 077 && db_url pefm "$(secret_file db-password)" >"$file")
    secret pefm-postgres "password=$(secret_file db-password)"
    # url: the owner's, for the bootstrap Job (the migrator); <component>-url and -password: the
    # role of each component, which the bootstrap Job creates with that password.
    pairs=("url=$file")
    for name in "${COMPONENTS[@]}"; do
        new_secret "$name-password"
        file=$(secret_file "$name-url")
        (umask 077 && db_url "pefm_$name" "$(secret_file "$name-password")" >"$file")
        pairs+=("$name-password=$(secret_file "$name-password")" "$name-url=$file")
    done
    secret pefm-database "${pairs[@]}"
    pairs=()
    for name in "${TOKENS[@]}"; do
        new_secret "$name-token"
        pairs+=("$name=$(secret_file "$name-token")")
    done
    secret pefm-tokens "${pairs[@]}"
    new_signing_key
    secret pefm-signing "private=$(secret_file signing-key)" "public=$(secret_file verify-key)"
    # the cache (knative/cache): its password, the URL inference and ingest reach it at, and the
    # key the inference revisions tag their entries with
    new_secret cache-password
    new_secret cache-entry-key
    file=$(secret_file cache-url)
    (umask 077 && printf 'redis://:%s@pefm-cache.%s.svc.cluster.local:6379/0' \
        "$(<"$(secret_file cache-password)")" "$NS" >"$file")
    secret pefm-cache "password=$(secret_file cache-password)" "url=$file" \
        "entry-key=$(secret_file cache-entry-key)"
}

# fixture FILE IMAGE: apply one of this folder's fixtures with its placeholder image (the
# fixture's `image:`, a plain name) set to IMAGE, through a kustomization in the run state.
fixture() {
    local file=$1 image=$2 dir
    dir="$E2E_STATE/kustomize/${file%.yaml}"
    mkdir -p "$dir"
    cp "$E2E_DIR/$file" "$dir/$file"
    local placeholder
    placeholder=$(grep -m 1 -E '^[[:space:]-]*image:' "$dir/$file" | sed 's/^[[:space:]-]*image:[[:space:]]*//')
    cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $file
images:
  - name: $placeholder
    newName: ${image%:*}
    newTag: ${image##*:}
EOF
    kubectl apply -k "$dir"
}

# The PEFM kustomization: the repository's overlay, the loaded images, and requests small enough
# for a runner's few cores (the e2e checks behaviour, not sizing: limits stay as they are; pull
# policy IfNotPresent, as the images exist only on the kind node).
pefm_kustomization() {
    local dir="$E2E_STATE/kustomize/pefm" name image
    mkdir -p "$dir"
    [[ -s $E2E_STATE/images.txt ]] || die "no $E2E_STATE/images.txt: run images.sh first"
    {
        cat <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$dir" "$REPO_ROOT/$OVERLAY")
images:
EOF
        while read -r name image; do
            printf '  - name: %s\n    newName: %s\n    newTag: %s\n' "$name" "${image%:*}" "${image##*:}"
        done <"$E2E_STATE/images.txt"
        cat <<'EOF'
patches:
  - target: {group: serving.knative.dev, kind: Service}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/resources/requests, value: {cpu: 25m, memory: 128Mi}}
  - target: {group: apps, kind: Deployment}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/resources/requests, value: {cpu: 25m, memory: 128Mi}}
      - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
  - target: {group: batch, kind: Job}
    patch: |-
      - {op: add, path: /spec/template/spec/containers/0/resources/requests, value: {cpu: 25m, memory: 128Mi}}
      - {op: add, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
  - target: {group: batch, kind: CronJob}
    patch: |-
      - {op: add, path: /spec/jobTemplate/spec/template/spec/containers/0/resources/requests, value: {cpu: 25m, memory: 128Mi}}
      - {op: add, path: /spec/jobTemplate/spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
EOF
    } >"$dir/kustomization.yaml"
    echo "$dir"
}

deploy_pefm() {
    local dir render="$E2E_STATE/pefm.yaml" stale
    dir=$(pefm_kustomization)
    log "PEFM ($OVERLAY) with the loaded images"
    cat "$dir/kustomization.yaml"
    kubectl kustomize "$dir" >"$render"
    stale=$(grep -E '^[[:space:]-]*image:' "$render" | grep -v "$IMAGE_REGISTRY/" || true)
    [[ -z $stale ]] || die "images the kustomization did not map to the loaded ones: $stale"
    kubectl apply -f "$render"
}

deploy_canary() {
    log "Canary and MetricTemplates rendered by pefm knative canary, with the webhook token"
    local canary="$E2E_STATE/canary.yaml" token
    token=$(<"$(secret_file webhook-token)")
    # The token reaches pefm through its environment (PEFM_WEBHOOK_TOKEN), not its arguments.
    (umask 077 && PEFM_WEBHOOK_TOKEN=$token pefm knative canary --namespace "$NS" \
        --prometheus-url "$PROMETHEUS_URL" >"$canary")
    grep -q 'token:' "$canary" || die "the Canary's webhooks carry no token"
    kubectl apply -f "$canary"
}

# job_done NAME: 0 once the Job completed, 1 while it runs; a failed Job ends the script.
job_done() {
    local conditions
    conditions=$(kubectl -n "$NS" get "job/$1" \
        -o 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}' 2>/dev/null) || return 1
    case " $conditions " in
        *" Complete "*) return 0 ;;
        *" Failed "*)
            kubectl -n "$NS" logs "job/$1" --all-containers --tail=300 >&2 || true
            die "Job $1 failed"
            ;;
    esac
    return 1
}

main() {
    ensure_namespace "$NS"
    create_secrets
    log "PostgreSQL ($POSTGRES_IMAGE)"
    fixture postgres.yaml "$POSTGRES_IMAGE"
    wait_deployments "$NS" 300
    log "cache (knative/cache)"
    kubectl apply -k "$REPO_ROOT/knative/cache"
    kubectl -n "$NS" rollout status statefulset/pefm-cache --timeout=300s

    deploy_pefm
    deploy_canary

    log "bootstrap Job: migrate, load the bundled data, train and register the first model"
    wait_until 1500 "Job pefm-bootstrap to complete" job_done pefm-bootstrap
    kubectl -n "$NS" logs job/pefm-bootstrap --all-containers --tail=50 || true

    log "Knative Services ready, Deployments available"
    kubectl -n "$NS" wait services.serving.knative.dev --all --for=condition=Ready --timeout=600s
    wait_deployments "$NS" 300

    log "Canary $INFERENCE initialized by Flagger"
    wait_until 600 "Canary $INFERENCE to be Initialized" canary_phase_is Initialized
    [[ -n $(primary_revision) ]] || die "Flagger did not pin the primary revision on $INFERENCE"

    log "load generator ($CURL_IMAGE)"
    fixture loadgen.yaml "$CURL_IMAGE"
    wait_deployments "$LOAD_NS" 180

    kubectl -n "$NS" get services.serving.knative.dev,revisions.serving.knative.dev,canaries.flagger.app,jobs,pods -o wide
}

# Sourced (tests/static/test_workflows.py renders the kustomization), the functions alone.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
