#!/usr/bin/env bash
# The rollout scenario on the kind cluster, after deploy.sh (the load generator runs throughout,
# so Flagger's metric checks see traffic):
#   0. the bootstrap model serves (registry, Canary initialized, what answers requests);
#   a. a healthy candidate (same family, params and backtest windows as the serving model; gated
#      with a permissive policy) -> `pefm rollout start --watch` exits 0, Flagger promotes it;
#   b. a faulty one (its revision, of the test-only faulty image, answers every second /v1 request
#      with a 500: PEFM_FAULT_RATE=0.5)
#      -> `pefm rollout start --watch` exits 1, Flagger rolls it back, the registry rejects it;
#   c. a second healthy one through `pefm retrain` (train, gate, deploy by template patch; the
#      fault variable the last deploy added is dropped) -> Flagger promotes it.
# After each: the Canary's phase and Promoted condition, the primary revision and the model
# version it pins, the registry (SQL), the rollout PEFM recorded, what 20 requests through Kourier
# are answered with (body and headers), and `pefm status` (exit 0: registry and traffic agree).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GATES="$REPO_ROOT/tests/functions/permissive_gates.toml"
ROLLOUT_TIMEOUT=${E2E_ROLLOUT_TIMEOUT:-1200} # seconds for one rollout, Flagger's analysis included

# train_candidate LABEL: train a candidate like the serving model (family, params, series and
# backtest spec from the registry), gate it with the permissive policy; prints its id.
train_candidate() {
    local label=$1 serving row family params series spec id p s
    local args=()
    serving=$(registry_serving)
    check_version_id "$serving"
    row=$(psql_pefm "SELECT json_build_object('family', family, 'params', params, 'series', series_ids,
        'spec', coalesce(backtest->'spec', '{}'::jsonb)) FROM model_versions WHERE id = '$serving'")
    family=$(jq -r .family <<<"$row")
    mapfile -t params < <(jq -r '.params | to_entries[] | "\(.key)=\(.value | tojson)"' <<<"$row")
    mapfile -t series < <(jq -r '.series[]' <<<"$row")
    spec=$(jq -c .spec <<<"$row")
    args=(--model "$family" --windows "$(jq -r '.windows // 12' <<<"$spec")")
    args+=(--h "$(jq -r '.h // 1' <<<"$spec")" --step "$(jq -r '.step // 1' <<<"$spec")")
    args+=(--refit-every "$(jq -r '.refit_every // 1' <<<"$spec")")
    for p in "${params[@]}"; do args+=(--param "$p"); done
    for s in "${series[@]}"; do args+=(--series "$s"); done
    log "candidate $label: pefm train ${args[*]}"
    pefm_cli train "${args[@]}" | tee "$E2E_STATE/train-$label.log" >&2
    id=$(sed -n 's/^registered \([a-z0-9-]*\) .*/\1/p' "$E2E_STATE/train-$label.log")
    check_version_id "$id"
    [[ $(registry_status "$id") == candidate ]] || die "$id is not a registered candidate"
    log "candidate $label: pefm gate --candidate $id (permissive policy)"
    pefm_cli gate --candidate "$id" --policy "$GATES" >&2
    echo "$id"
}

# expect_rollout_recorded REVISION PHASES: PEFM's record of Flagger's rollout of REVISION (written
# by its webhooks) ended in one of PHASES (a regular expression).
expect_rollout_recorded() {
    local phase
    phase=$(psql_pefm "SELECT phase FROM rollouts WHERE engine = 'flagger' AND green_revision = '$1'
        ORDER BY id DESC LIMIT 1")
    [[ $phase =~ ^($2)$ ]] || die "PEFM recorded the rollout of $1 as '$phase', expected $2"
    pefm_cli rollout status || true
}

registry_says() {
    [[ $(registry_serving) == "$1" ]]
}

# expect_status VERSION STATUS: the registry's status of VERSION (Flagger calls the post-rollout
# webhook that settles the registry right after it sets the Canary's final phase: a few seconds).
expect_status() {
    local status
    for _ in {1..30}; do
        status=$(registry_status "$1")
        [[ $status == "$2" ]] && return 0
        sleep 2
    done
    die "$1 is '$status' in the registry, expected $2"
}

# expect_serving VERSION REVISION: the registry, the Canary's primary, Kourier's answers and
# `pefm status` all say VERSION, served by REVISION.
expect_serving() {
    local version=$1 revision=$2 pinned
    WAIT_INTERVAL=2 wait_until 60 "the registry to serve $version" registry_says "$version" ||
        die "the registry serves '$(registry_serving)', expected $version"
    [[ $(primary_revision) == "$revision" ]] || die "the primary revision is '$(primary_revision)', expected $revision"
    pinned=$(revision_env "$revision" PEFM_MODEL_VERSION)
    [[ -z $pinned || $pinned == "$version" ]] || die "revision $revision pins $pinned, expected $version"
    assert_served "$version" "$revision"
    pefm_cli status || die "pefm status: the registry and the traffic disagree"
}

expect_canary() {
    local phase=$1 promoted=$2
    [[ $(canary_phase) == "$phase" ]] || die "Canary phase '$(canary_phase)', expected $phase"
    [[ $(canary '{.status.conditions[?(@.type=="Promoted")].status}') == "$promoted" ]] ||
        die "Canary condition Promoted is not $promoted"
}

# settled SPEC: Flagger finished with the revision after SPEC (pefm's own wait already saw it:
# this is the independent check).
settled() {
    wait_until 120 "the Canary to settle" canary_settled_after "$1"
}

baseline() {
    log "0. the bootstrap model serves"
    expect_canary Initialized True
    V0=$(registry_serving)
    check_version_id "$V0"
    expect_serving "$V0" "$(primary_revision)"
}

healthy_rollout() {
    log "a. a healthy candidate is promoted"
    local before revision
    V1=$(train_candidate healthy)
    before=$(canary_spec)
    PEFM_CLI_TIMEOUT=$((ROLLOUT_TIMEOUT + 60)) pefm_cli rollout start --model-version "$V1" --watch \
        --timeout "$ROLLOUT_TIMEOUT" || die "pefm rollout start exited $? for the healthy candidate $V1"
    settled "$before"
    expect_canary Succeeded True
    revision=$(latest_revision)
    [[ $(revision_env "$revision" PEFM_MODEL_VERSION) == "$V1" ]] || die "revision $revision does not pin $V1"
    expect_serving "$V1" "$revision"
    expect_status "$V0" retired
    expect_rollout_recorded "$revision" Succeeded
    REVISION_A=$revision
}

faulty_rollout() {
    log "b. a faulty candidate (the faulty image, PEFM_FAULT_RATE=0.5) is rolled back"
    local before revision status
    V2=$(train_candidate faulty)
    before=$(canary_spec)
    if PEFM_CLI_TIMEOUT=$((ROLLOUT_TIMEOUT + 60)) pefm_cli rollout start --model-version "$V2" \
        --image "$FAULTY_IMAGE" --env PEFM_FAULT_RATE=0.5 --watch --timeout "$ROLLOUT_TIMEOUT"; then
        die "pefm rollout start exited 0 for the faulty candidate $V2"
    else
        status=$?
    fi
    ((status == 1)) || die "pefm rollout start exited $status for the faulty candidate, expected 1 (rolled back)"
    settled "$before"
    expect_canary Failed False
    revision=$(latest_revision)
    [[ $revision != "$REVISION_A" ]] || die "no new revision for the faulty candidate"
    [[ $(revision_env "$revision" PEFM_FAULT_RATE) == 0.5 ]] || die "revision $revision carries no PEFM_FAULT_RATE"
    expect_status "$V2" rejected
    expect_serving "$V1" "$REVISION_A"
    expect_rollout_recorded "$revision" "RolledBack|Failed"
}

retrained_rollout() {
    log "c. a second healthy candidate, from pefm retrain, is promoted"
    local before revision v3
    before=$(canary_spec)
    pefm_cli retrain --gate-policy "$GATES" | tee "$E2E_STATE/retrain.log"
    grep -q '^retrain [0-9a-f]*: deployed$' "$E2E_STATE/retrain.log" || die "pefm retrain deployed nothing"
    wait_until "$ROLLOUT_TIMEOUT" "Flagger to finish the retrained candidate's rollout" \
        canary_settled_after "$before"
    expect_canary Succeeded True
    revision=$(latest_revision)
    [[ -z $(revision_env "$revision" PEFM_FAULT_RATE) ]] || die "revision $revision kept the fault injection"
    v3=$(revision_env "$revision" PEFM_MODEL_VERSION)
    check_version_id "$v3"
    [[ $v3 != "$V1" && $v3 != "$V2" ]] || die "pefm retrain deployed an old version ($v3)"
    expect_serving "$v3" "$revision"
    expect_status "$V1" retired
    expect_rollout_recorded "$revision" Succeeded
}

baseline
healthy_rollout
faulty_rollout
retrained_rollout
log "e2e passed: promoted, rolled back, promoted"
