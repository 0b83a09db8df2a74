#!/usr/bin/env bash
# Every version the kind end-to-end run (.github/workflows/e2e-kind.yml) pins, in one place.
# Sourced by the other scripts; run it with --github-output to hand the versions to the
# workflow's steps (the kubectl setup action reads KUBECTL_VERSION from there).

# kind, the binary checked against the SHA-512 of its release asset, and the node image its
# release notes name for that kind version (by digest).
KIND_VERSION=v0.27.0
KIND_SHA512=7b744426a5a8cb9908eda1cc9af3308deb0318cc589a7fc864f4717815839644e31b24b351ee46d14422d990b9eb3ab10a25063c97a76973534d6d112631000c
KIND_NODE_IMAGE=kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f
KUBECTL_VERSION=v1.32.2
# Knative Serving, net-kourier and Eventing share a release (Flagger's own test/knative/install.sh
# tests its Knative provider on 1.17.0).
KNATIVE_VERSION=1.17.0
# Flagger with its Knative kustomization (Flagger and a Prometheus, flagger-prometheus, that
# scrapes pods annotated prometheus.io/scrape, Kourier's gateway among them).
FLAGGER_VERSION=v1.44.0
# The cluster-side fixtures: the database (the image docker-compose.yml runs) and the load
# generator's curl (>= 7.84 for %header{} in --write-out).
POSTGRES_IMAGE=timescale/timescaledb:2.17.2-pg16
CURL_IMAGE=curlimages/curl:8.11.1

export KIND_VERSION KIND_SHA512 KIND_NODE_IMAGE KUBECTL_VERSION KNATIVE_VERSION FLAGGER_VERSION \
    POSTGRES_IMAGE CURL_IMAGE

if [[ "${BASH_SOURCE[0]}" == "$0" && "${1:-}" == "--github-output" ]]; then
    set -euo pipefail
    {
        echo "kind=$KIND_VERSION"
        echo "kubectl=$KUBECTL_VERSION"
        echo "knative=$KNATIVE_VERSION"
        echo "flagger=$FLAGGER_VERSION"
    } >>"${GITHUB_OUTPUT:?versions.sh --github-output runs in a GitHub Actions step}"
fi
