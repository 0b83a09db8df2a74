"""Test-only fault injection (see sitecustomize.py)."""

from pathlib import Path

FOLDER = Path(__file__).parent


def faulty_env(service_path: str | Path, rate: float) -> dict[str, str]:
    """The environment of a revision that fails a ``rate`` share of its /v1 requests: this folder
    first on PYTHONPATH (its sitecustomize installs the faults), then the function's own folder."""
    return {"PYTHONPATH": f"{FOLDER}:{service_path}", "PEFM_FAULT_RATE": f"{rate:g}"}


def skewed_env(service_path: str | Path, skew: float) -> dict[str, str]:
    """The environment of a revision that adds ``skew`` to every forecast it answers."""
    return {"PYTHONPATH": f"{FOLDER}:{service_path}", "PEFM_FAULT_SKEW": f"{skew:g}"}
