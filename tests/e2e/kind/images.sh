#!/usr/bin/env bash
# Build the PEFM images the CPU overlay runs, from docker/<image>.Dockerfile, and load them into
# the kind cluster as kind.local/pefm-<image>:<tag> (image_plan says which); the plan lands in
# $E2E_STATE/images.txt as "NAME-IN-THE-RENDER LOADED-IMAGE" lines for deploy.sh's `images:`.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Image names (tag and digest dropped) in the overlay's render, one a line.
rendered_images() {
    kubectl kustomize "$REPO_ROOT/$OVERLAY" |
        sed -n 's/^[[:space:]-]*image:[[:space:]]*//p' | tr -d "\"'" |
        sed -e 's/@.*//' -e 's/:[^:/]*$//' | sort -u
}

build() {
    local role=$1 image=$2
    local args=(--file "docker/$role.Dockerfile" --tag "$image")
    if [[ $role == inference ]]; then
        args+=(--build-arg VARIANT=cpu)
    fi
    log "docker build $image"
    (cd "$REPO_ROOT" && docker build "${args[@]}" .)
}

# image_plan: "NAME-IN-THE-RENDER LOADED-IMAGE" for each image the overlay names that is built
# from this repository (its last path part, less a pefm- prefix, has a docker/<that>.Dockerfile).
image_plan() {
    local name role
    while IFS= read -r name; do
        role=${name##*/}
        role=${role#pefm-}
        if [[ -f $REPO_ROOT/docker/$role.Dockerfile ]]; then
            echo "$name $IMAGE_REGISTRY/pefm-$role:$IMAGE_TAG"
        else
            log "not built here (no docker/$role.Dockerfile): $name"
        fi
    done < <(rendered_images)
}

# The scenario's faulty candidate: the inference image BASE with the test-only fault injection
# of tests/faults (the images themselves have none), as FAULTY_IMAGE.
build_faulty() {
    local base=$1
    log "docker build $FAULTY_IMAGE (from $base)"
    docker build --file "$REPO_ROOT/tests/faults/Dockerfile" --build-arg "BASE=$base" --tag "$FAULTY_IMAGE" \
        "$REPO_ROOT/tests/faults"
    kind load docker-image --name "$CLUSTER" "$FAULTY_IMAGE"
}

main() {
    local name image role plan
    declare -A built=()
    plan=$(image_plan)
    [[ $plan == *"/pefm-inference:"* ]] || die "the overlay $OVERLAY names no inference image"
    while read -r name image; do
        role=${image##*/pefm-}
        role=${role%:*}
        if [[ -z ${built[$image]:-} ]]; then
            build "$role" "$image"
            kind load docker-image --name "$CLUSTER" "$image"
            built[$image]=1
        fi
    done <<<"$plan"
    build_faulty "$(awk '$2 ~ /\/pefm-inference:/ {print $2; exit}' <<<"$plan")"
    echo "$plan" >"$E2E_STATE/images.txt"
    cat "$E2E_STATE/images.txt"
}

# Sourced (tests/static/test_workflows.py lists the images), the functions alone.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
