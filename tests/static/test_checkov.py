"""checkov on terraform/ and knative/: no failed check, and every skip carries a written reason.

checkov runs offline (``--skip-download``, no API key, no external checks) from its own venv:
``PEFM_CHECKOV`` (set by ``make test``) or ``.venv-tools/bin/checkov``. The JSON report is read
without ``--quiet``, because ``--quiet`` drops the passed and skipped checks from it.

knative/ is scanned as the cluster receives it, not file by file: every top-level kustomization
(the cpu and gpu overlays) is rendered with ``kubectl kustomize`` into a temporary folder, so the
``namespace: pefm`` and the overlay patches are applied the way ``kubectl apply -k`` applies them
(checkov's own kubernetes runner reads kustomize bases as loose YAML and would report the base
Services in the default namespace). Manifests that no kustomization includes would be copied as
they are (today every manifest is in one: the rollout API, the bootstrap Job and the retraining
CronJob come with the base). Skip annotations live in metadata.annotations
(``checkov.io/skipN: CKV_K8S_NN=reason``), which rendering keeps.

checkov's container checks only know core workload kinds (Pod, Deployment, Job, CronJob...): on a
Knative Service or a Flagger Canary it runs the generic checks (namespace...), so the Services' pod
hardening is guarded by the Knative validator's tests, not here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATION = "kustomization.yaml"
CHECKOV = Path(os.environ.get("PEFM_CHECKOV") or ROOT / ".venv-tools" / "bin" / "checkov")
NO_REASON = "No comment provided"  # what checkov reports for a skip written without a reason
MIN_REASON = 20  # characters: a reason says why, not just "n/a"


def run_checkov(directory: Path, framework: str) -> dict[str, Any]:
    """checkov's JSON report for ``directory`` under one framework."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is missing at {CHECKOV}: build it with `make .venv-tools/.installed`")
    done = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), f"checkov crashed ({done.returncode}): {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    assert isinstance(report, dict) and "results" in report, f"checkov found nothing to scan: {done.stdout[:500]}"
    assert report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


def kustomize_resources(folder: Path) -> set[Path]:
    """Every file and folder a kustomization pulls in (resources, patches), resolved."""
    spec = yaml.safe_load((folder / KUSTOMIZATION).read_text()) or {}
    names = list(spec.get("resources", [])) + [p["path"] for p in spec.get("patches", []) if "path" in p]
    names += spec.get("patchesStrategicMerge", [])
    return {(folder / name).resolve() for name in names}


def render_knative(out: Path) -> list[Path]:
    """Write what a cluster gets from knative/ into ``out``: rendered top-level kustomizations
    and the manifests no kustomization includes. Returns the files written."""
    folders = [p.parent.resolve() for p in (ROOT / "knative").rglob(KUSTOMIZATION)]
    included = set().union(*(kustomize_resources(f) for f in folders))
    written = []
    for folder in folders:
        if folder in included:
            continue
        rendered = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True)
        target = out / f"{folder.relative_to(ROOT / 'knative').as_posix().replace('/', '-')}.yaml"
        target.write_text(rendered.stdout)
        written.append(target)
    for path in sorted((ROOT / "knative").rglob("*.yaml")):
        if path.resolve() in included or path.name == KUSTOMIZATION:
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        if any("apiVersion" in d and "kind" in d for d in docs):
            target = out / path.relative_to(ROOT / "knative").as_posix().replace("/", "-")
            shutil.copy(path, target)
            written.append(target)
    return written


def failures(report: dict[str, Any]) -> list[str]:
    """One line per failed check."""
    return [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in report["results"]["failed_checks"]
    ]


def skips_without_reason(report: dict[str, Any]) -> list[str]:
    """Skipped checks whose suppress comment (the written reason) is missing or too short to say why."""
    out = []
    for check in report["results"]["skipped_checks"]:
        reason = (check.get("check_result", {}).get("suppress_comment") or "").strip()
        if reason == NO_REASON or len(reason) < MIN_REASON:
            out.append(f"{check['check_id']}: {check['resource']} ({check['file_path']}): {reason!r}")
    return out


def all_checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Passed, failed and skipped checks together."""
    results = report["results"]
    return results.get("passed_checks", []) + results["failed_checks"] + results.get("skipped_checks", [])


def scanned_name(check: dict[str, Any]) -> str:
    """Kind/name of the resource a kubernetes check looked at (checkov writes Kind.namespace.name)."""
    parts = check["resource"].split(".")
    return f"{parts[0]}/{parts[-1]}"


@pytest.fixture(scope="module")
def terraform_report() -> dict[str, Any]:
    """checkov's report on terraform/."""
    return run_checkov(ROOT / "terraform", "terraform")


@pytest.fixture(scope="module")
def knative_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's report on the rendered knative/ manifests."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl (with kustomize) is needed to render knative/ for checkov")
    out = tmp_path_factory.mktemp("knative-rendered")
    assert render_knative(out), "nothing rendered from knative/"
    return run_checkov(out, "kubernetes")


def test_terraform_has_no_failed_check(terraform_report: dict[str, Any]) -> None:
    """Guards terraform/ against any checkov finding that is neither fixed nor skipped with a reason."""
    assert terraform_report["summary"]["resource_count"] > 20, terraform_report["summary"]
    assert failures(terraform_report) == []


def test_terraform_skips_have_reasons(terraform_report: dict[str, Any]) -> None:
    """Guards that every `#checkov:skip=` in terraform/ says why."""
    assert skips_without_reason(terraform_report) == []


def test_terraform_cd_trust_was_checked(terraform_report: dict[str, Any]) -> None:
    """Guards that checkov's GitHub Actions OIDC checks looked at the examples' CD trust (they judge the
    sub claim a role or pool accepts): the AWS trust policy passed them, and GCP's is skipped with a reason."""
    ran = {(c["check_id"], c["resource"]) for c in all_checks(terraform_report)}
    assert ("CKV_AWS_358", "aws_iam_policy_document.github_trust") in ran, sorted(ran)
    assert ("CKV_GCP_125", "google_iam_workload_identity_pool_provider.github[0]") in ran, sorted(ran)


def test_knative_has_no_failed_check(knative_report: dict[str, Any]) -> None:
    """Guards the manifests a cluster receives from knative/ against unaddressed checkov findings."""
    scanned = {scanned_name(c) for c in all_checks(knative_report)}
    for resource in (
        "Service/pefm-inference",
        "Service/pefm-ingest",
        "Service/pefm-monitor",
        "ConfigMap/config-features",
        "Deployment/pefm-rollout",
        "Service/pefm-rollout",
        "Job/pefm-bootstrap",
        "CronJob/pefm-retrain",
        "CronJob/pefm-retrain-on-drift",
        "ServiceAccount/pefm-bootstrap",
        "Role/pefm-retrain",
        "Role/pefm-rollout",
        "RoleBinding/pefm-retrain",
    ):  # checkov has no check for NetworkPolicy: core_rules and its tests guard those
        assert resource in scanned, f"checkov never looked at {resource}: {sorted(scanned)}"
    # the container checks ran on every core workload (not only the generic ones)
    for workload in (
        "Deployment/pefm-rollout",
        "Job/pefm-bootstrap",
        "CronJob/pefm-retrain",
        "CronJob/pefm-retrain-on-drift",
    ):
        ids = {c["check_id"] for c in all_checks(knative_report) if scanned_name(c) == workload}
        assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_28", "CKV_K8S_40"} <= ids, (workload, sorted(ids))
    assert failures(knative_report) == []


def test_knative_skips_have_reasons(knative_report: dict[str, Any]) -> None:
    """Guards that every checkov.io/skip annotation in knative/ says why."""
    assert skips_without_reason(knative_report) == []
