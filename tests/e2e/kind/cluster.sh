#!/usr/bin/env bash
# A kind cluster with what PEFM's cluster path needs, at the versions of versions.sh: Knative
# Serving with Kourier (the steps Flagger's own test/knative/install.sh takes), Knative Eventing
# (knative/eventing), and Flagger with its Knative kustomization (Flagger + flagger-prometheus).
# Idempotent: a second run reuses the cluster and re-applies the same releases.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVING=https://github.com/knative/serving/releases/download/knative-v$KNATIVE_VERSION
KOURIER=https://github.com/knative/net-kourier/releases/download/knative-v$KNATIVE_VERSION
EVENTING=https://github.com/knative/eventing/releases/download/knative-v$KNATIVE_VERSION
FLAGGER="github.com/fluxcd/flagger//kustomize/knative?ref=$FLAGGER_VERSION"

install_kind() {
    if [[ $(kind version 2>/dev/null) == "kind $KIND_VERSION "* ]]; then
        return 0
    fi
    log "kind $KIND_VERSION"
    local bin="$E2E_STATE/bin/kind"
    curl -fsSL --retry 3 -o "$bin.download" \
        "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-amd64"
    echo "$KIND_SHA512  $bin.download" | sha512sum --check --strict
    chmod +x "$bin.download"
    mv "$bin.download" "$bin"
}

create_cluster() {
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
    else
        log "kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
        kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --kubeconfig "$KUBECONFIG" --wait 180s
    fi
    kubectl wait node --all --for=condition=Ready --timeout=180s
}

# apply_release URL: a release manifest; CRDs established before anything uses them.
apply_release() {
    kubectl apply -f "$1"
    kubectl wait crd --all --for=condition=Established --timeout=120s
}

install_serving() {
    log "Knative Serving $KNATIVE_VERSION with Kourier"
    apply_release "$SERVING/serving-crds.yaml"
    apply_release "$SERVING/serving-core.yaml"
    wait_deployments knative-serving 300
    apply_release "$KOURIER/kourier.yaml"
    wait_deployments kourier-system 300
    wait_deployments knative-serving 300
    kubectl -n knative-serving patch configmap/config-network --type merge \
        -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
    # Images loaded with `kind load` exist in no registry: Knative must not resolve their tags.
    kubectl -n knative-serving patch configmap/config-deployment --type merge \
        -p "{\"data\":{\"registries-skipping-tag-resolving\":\"$IMAGE_REGISTRY,ko.local,dev.local\"}}"
    # The same podspec flags terraform/modules/knative sets, so the manifests meet the same Knative.
    kubectl -n knative-serving patch configmap/config-features --type merge -p '{"data":{
        "kubernetes.podspec-nodeselector":"enabled",
        "kubernetes.podspec-tolerations":"enabled",
        "kubernetes.podspec-runtimeclassname":"enabled"}}'
}

install_eventing() {
    log "Knative Eventing $KNATIVE_VERSION"
    apply_release "$EVENTING/eventing-crds.yaml"
    apply_release "$EVENTING/eventing-core.yaml"
    wait_deployments knative-eventing 300
}

install_flagger() {
    log "Flagger $FLAGGER_VERSION (kustomize/knative: Flagger and flagger-prometheus)"
    kubectl apply -k "$FLAGGER"
    kubectl wait crd/canaries.flagger.app crd/metrictemplates.flagger.app \
        --for=condition=Established --timeout=120s
    wait_deployments flagger-system 300
}

install_kind
create_cluster
install_serving
install_eventing
install_flagger
kubectl get pods -A -o wide
