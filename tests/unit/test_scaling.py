"""How Knative scales each service, read from knative/base (what the local runtime follows)."""

from pathlib import Path

from pefm.knative.scaling import manifest_scaling


def test_the_manifests_scaling_is_read_from_the_knative_service_document():
    """ingest.yaml holds a ServiceAccount before its Service: the Service is the one read."""
    inference, ingest = manifest_scaling("inference"), manifest_scaling("ingest")
    assert (inference.container_concurrency, inference.target, inference.utilization) == (100, 50.0, 0.70)
    assert (inference.min_scale, inference.max_scale, inference.initial_scale) == (0, 20, 1)
    assert (ingest.container_concurrency, ingest.target, ingest.max_scale) == (20, 20.0, 10)


def test_replicas_follow_knatives_formula_within_min_and_max_scale():
    inference = manifest_scaling("inference")  # target 50 at 70%: 35 in flight per replica
    assert [inference.replicas_for(c) for c in (0, 1, 35, 36, 100, 10_000)] == [0, 1, 1, 2, 3, 20]


def test_knatives_defaults_fill_what_a_template_leaves_out(tmp_path: Path):
    """No target: the containerConcurrency, else 100; utilization 70%; initial scale 1."""
    (tmp_path / "bare.yaml").write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: bare}\n"
        "spec:\n  template:\n    spec:\n      containerConcurrency: 10\n      containers: [{image: x}]\n"
    )
    (tmp_path / "open.yaml").write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: open}\n"
        "spec:\n  template:\n    spec:\n      containers: [{image: x}]\n"
    )
    bare, unlimited = manifest_scaling("bare", tmp_path), manifest_scaling("open", tmp_path)
    assert (bare.target, bare.utilization, bare.initial_scale, bare.max_scale) == (10.0, 0.70, 1, 0)
    assert (unlimited.container_concurrency, unlimited.target) == (0, 100.0)
    assert unlimited.replicas_for(1000) == 15  # no max scale
