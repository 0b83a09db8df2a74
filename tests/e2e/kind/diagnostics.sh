#!/usr/bin/env bash
# What went wrong, after a failed step: Flagger's logs, the Canary described, the Knative Services
# and revisions, pods, events, PEFM's logs, the registry and the rollouts PEFM recorded. Each
# part goes to $E2E_STATE/diagnostics/<part>.txt (the workflow uploads the folder; no secret is
# written there) and its tail to the log. Every command is bounded and allowed to fail.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OUT="$E2E_STATE/diagnostics"
mkdir -p "$OUT"
PSQL=(kubectl -n "$NS" exec deploy/pefm-postgres -c postgres -- psql -U pefm -d pefm -c)

# part NAME COMMAND...: COMMAND's output (60 s at most) into NAME.txt, its last lines to the log.
part() {
    local name=$1
    shift
    timeout 60 "$@" >"$OUT/$name.txt" 2>&1
    printf '\n::group::%s (%s)\n' "$name" "$*"
    tail -n "${TAIL_LINES:-80}" "$OUT/$name.txt"
    printf '::endgroup::\n'
}

part nodes kubectl describe nodes
part pods kubectl get pods -A -o wide
part events kubectl get events -A --sort-by=.lastTimestamp
part canary kubectl -n "$NS" describe "canaries.flagger.app/$INFERENCE"
part canary-yaml kubectl -n "$NS" get "canaries.flagger.app/$INFERENCE" -o yaml
part flagger kubectl -n flagger-system logs deploy/flagger --tail=-1
part knative-services kubectl -n "$NS" get services.serving.knative.dev -o yaml
part revisions kubectl -n "$NS" get revisions.serving.knative.dev -o wide
part jobs kubectl -n "$NS" describe jobs
part bootstrap kubectl -n "$NS" logs job/pefm-bootstrap --all-containers --tail=-1
part rollout-api kubectl -n "$NS" logs deploy/pefm-rollout --all-containers --tail=-1
part pefm-logs kubectl -n "$NS" logs -l app.kubernetes.io/part-of=pefm --all-containers --prefix --tail=300
part knative-serving kubectl -n knative-serving logs deploy/controller --tail=300
part kourier kubectl -n kourier-system logs deploy/3scale-kourier-gateway --tail=300
part loadgen kubectl -n "$LOAD_NS" logs deploy/pefm-loadgen --tail=100
part prometheus-targets kubectl -n flagger-system exec deploy/flagger-prometheus -- \
    wget -qO- 'http://127.0.0.1:9090/api/v1/targets?state=active'
part registry "${PSQL[@]}" "SELECT id, family, status, status_reason, created_at FROM model_versions ORDER BY created_at"
part rollouts "${PSQL[@]}" "SELECT r.id, r.engine, r.green_revision, r.green_model_version, r.phase, r.weight,
    e.ts, e.action, e.phase, e.reason FROM rollouts r JOIN rollout_events e ON e.rollout_id = r.id ORDER BY e.id"
part db-forward cat "$E2E_STATE/db-forward.log"
exit 0
