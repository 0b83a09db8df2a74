"""The monitor's drift gauges: what a scrape sees while a check's values are set."""

from prometheus_client import CollectorRegistry

from pefm.serving.monitor import DriftGauges


def _entry(drifted: bool, score: float | None, ratio: float | None = None) -> dict:
    return {"drifted": drifted, "input": [{"feature": "value", "score": score}], "accuracy": {"ratio": ratio}}


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels.values()): s.value for metric in registry.collect() for s in metric.samples if s.name == name
    }


def test_a_check_replaces_the_last_ones_series_without_a_moment_of_none():
    """The gauges were cleared and then set: a scrape in between saw no series at all. Now the
    new values are set first, and only the label sets the new check lacks are removed after."""
    registry = CollectorRegistry()
    gauges = DriftGauges(registry)
    gauges.show({"a": _entry(True, 0.4, 1.5), "b": _entry(False, 0.1)}, breach=True)
    seen = []
    remove = gauges.detected.remove

    def watched(*labels):  # a scrape at the moment the old series go
        seen.append(_samples(registry, "pefm_drift_detected"))
        remove(*labels)

    gauges.detected.remove = watched
    gauges.show({"b": _entry(True, 0.3), "c": _entry(False, None)}, breach=False)
    assert seen == [{("a",): 1.0, ("b",): 1.0, ("c",): 0.0}]  # never empty: old and new, then new
    assert _samples(registry, "pefm_drift_detected") == {("b",): 1.0, ("c",): 0.0}
    assert _samples(registry, "pefm_drift_score") == {("b", "value"): 0.3}  # a's score and ratio gone
    assert _samples(registry, "pefm_drift_breach") == {(): 0.0}
