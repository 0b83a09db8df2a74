"""The images (docker/<image>.Dockerfile) and their lock files (docker/locks/): pinned base, locked
hashed dependencies, non-root numeric USER, no build tools or secrets in the final stage, a
HEALTHCHECK, and every COPY source present in the build context."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
LOCKS = DOCKER / "locks"
IMAGES = ("ingest", "inference", "monitor", "dashboard", "control")
# (image, build args): every image as CI/CD builds it, the inference image in both variants
BUILDS = [(image, {}) for image in IMAGES if image != "inference"] + [
    ("inference", {"VARIANT": "cpu"}),
    ("inference", {"VARIANT": "cuda"}),
]
BUILD_IDS = [f"{image}-{args['VARIANT']}" if args else image for image, args in BUILDS]
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)\b")
PINNED_IMAGE = re.compile(r"^[\w./-]+:(?P<tag>\d+\.\d+\.\d+[\w.-]*)(@sha256:[0-9a-f]{64})?$")
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    """A parsed Dockerfile with its build args resolved."""

    path: Path
    args: dict[str, str]
    stages: list[Stage]

    def substitute(self, text: str) -> str:
        return VAR.sub(lambda m: self.args.get(m.group(1) or m.group(2), m.group(0)), text)

    def external_bases(self) -> list[str]:
        names = {s.name for s in self.stages if s.name}
        return [s.base for s in self.stages if s.base not in names]

    def final(self) -> list[tuple[str, str]]:
        """The instructions that make the final image: the last stage's, after those of the
        stages it is built FROM (``FROM runtime-${VARIANT}``)."""
        by_name = {s.name: s for s in self.stages if s.name}
        chain, stage = [], self.stages[-1]
        while True:
            chain.insert(0, stage)
            if stage.base not in by_name:
                return [i for s in chain for i in s.instructions]
            stage = by_name[stage.base]

    def final_values(self, keyword: str) -> list[str]:
        return [value for kw, value in self.final() if kw == keyword]

    def all_values(self, keyword: str) -> list[str]:
        return [value for s in self.stages for kw, value in s.instructions if kw == keyword]


def logical_lines(text: str) -> list[str]:
    """Instructions one a line: comments dropped, backslash continuations joined."""
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "a continuation runs off the end of the file"
    return lines


def parse(image: str, build_args: dict[str, str]) -> Dockerfile:
    """docker/<image>.Dockerfile with ARG defaults (then ``build_args``) substituted in FROM and COPY."""
    path = DOCKER / f"{image}.Dockerfile"
    dockerfile = Dockerfile(path, {}, [])
    for line in logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not dockerfile.stages:
            name, _, default = value.partition("=")
            dockerfile.args[name] = build_args.get(name, default)
        elif keyword == "FROM":
            words = dockerfile.substitute(value).split()
            if words[0].startswith("--platform"):
                words = words[1:]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            dockerfile.stages.append(Stage(words[0], name))
        else:
            assert dockerfile.stages, f"{path.name}: {keyword} before the first FROM"
            dockerfile.stages[-1].instructions.append((keyword, dockerfile.substitute(value)))
    return dockerfile


@cache
def dockerignore() -> list[tuple[bool, str]]:
    """(.dockerignore patterns as (is an exception, pattern)."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def ignored(relative: str) -> bool:
    """Whether .dockerignore keeps ``relative`` out of the build context (the last matching rule
    decides; a rule matching a parent folder matches what is inside it)."""
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exception, pattern in dockerignore():
        globbed = pattern.removeprefix("**/")
        if any(fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p.split("/")[-1], globbed) for p in prefixes):
            verdict = not exception
    return verdict


def copy_sources(value: str) -> tuple[list[str], list[str]]:
    """(flags, sources) of a COPY instruction (shell or JSON form); the destination is dropped."""
    words = yaml.safe_load(value) if value.startswith("[") else value.split()
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1]


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of a uv-compiled, hashed requirements file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][\w.-]*)==([^\s\\;]+)", line):
            current = canonicalize_name(match.group(1))
            entries[current] = (match.group(2), [])
        elif current and (match := re.search(r"--hash=(sha256:[0-9a-f]{64})", line)):
            entries[current][1].append(match.group(1))
        elif line.strip() and not line.lstrip().startswith(("#", "--hash")):
            current = None
    return entries


def lock_command(path: Path) -> str:
    """The `uv pip compile` command uv wrote at the top of a lock."""
    match = re.search(r"^#\s+(uv pip compile .*)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name}: no uv header (regenerate it with docker/locks/compile.sh)"
    return match.group(1)


def locks() -> list[Path]:
    return sorted(LOCKS.glob("*.txt"))


@pytest.fixture(params=BUILDS, ids=BUILD_IDS)
def build(request) -> tuple[str, Dockerfile]:
    image, args = request.param
    return image, parse(image, args)


def test_one_dockerfile_per_image():
    """Guards the image set CI/CD builds and compose runs: one docker/<image>.Dockerfile each, no strays."""
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile")} == set(IMAGES)


def test_base_images_are_pinned_to_an_exact_python_3_11(build):
    """Guards reproducible bases: every external FROM has an exact x.y.z tag (never latest or a bare
    minor), slim, Python 3.11 like the project."""
    _, dockerfile = build
    bases = dockerfile.external_bases()
    assert bases
    for base in bases:
        match = PINNED_IMAGE.match(base)
        assert match, f"{base!r} is not pinned to an exact version tag"
        assert base.startswith("python:3.11.") and "slim" in match.group("tag"), base
    assert len(dockerfile.stages) >= 2, "multi-stage: the final image must not be the builder"


def test_final_stage_runs_as_a_numeric_non_root_user(build):
    """Guards runAsNonRoot: the final image's USER is numeric (kubelet can check it) and not 0."""
    _, dockerfile = build
    users = dockerfile.final_values("USER")
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} must be a numeric, non-root uid"


@cache
def cluster_containers() -> list[tuple[str, dict, dict]]:
    """(overlay, pod spec, container) of every container the knative/ overlays run, images mapped
    by kustomize as a cluster gets them."""
    from pefm.knative.documents import pod_template
    from pefm.knative.validate import render

    out = []
    for overlay in ("cpu", "gpu"):
        for doc in render(ROOT / "knative" / "overlays" / overlay):
            if (template := pod_template(doc)) is not None:
                out += [(overlay, template[2], container) for container in template[2].get("containers", [])]
    return out


def test_the_uid_is_the_one_the_knative_manifests_run_as(build):
    """Guards the manifests' runAsUser against the images': a mismatch leaves files unreadable."""
    image, dockerfile = build
    uid = int(dockerfile.final_values("USER")[-1].split(":")[0])
    found = []
    for _, pod, container in cluster_containers():
        if container["image"].startswith(f"ghcr.io/pefm/{image}:"):
            user = container.get("securityContext", {}).get(
                "runAsUser", pod.get("securityContext", {}).get("runAsUser")
            )
            found.append(user)
    if image in ("ingest", "inference", "monitor"):
        assert found, f"no container in knative/ runs ghcr.io/pefm/{image}"
    assert all(u == uid for u in found), (image, uid, found)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_inference_image_runs_the_clusters_pefm_commands(variant):
    """Guards the image of the rollout API, the bootstrap Job and the retraining CronJob: every
    `pefm` command in knative/ runs the inference image, whose lock has the kubernetes client (the
    cluster extra) and whose final stage holds the rollout spec where PEFM_ROLLOUT_SPEC points."""
    commands = {
        " ".join(container["command"][:2]): container["image"]
        for _, _, container in cluster_containers()
        if container.get("command", [""])[0] == "pefm"
    }
    assert {"pefm serve", "pefm bootstrap", "pefm retrain"} <= set(commands), commands
    assert all(image.startswith("ghcr.io/pefm/inference:") for image in commands.values()), commands
    assert "kubernetes" in lock_entries(LOCKS / f"inference-{variant}.txt")
    dockerfile = parse("inference", {"VARIANT": variant})
    env = " ".join(dockerfile.final_values("ENV"))
    spec = re.search(r"\bPEFM_ROLLOUT_SPEC=(\S+)", env)
    assert spec, "PEFM_ROLLOUT_SPEC is not set in the final stage"
    copied = {
        copy_sources(value)[1][0]: value.split()[-1]
        for value in dockerfile.final_values("COPY")
        if not copy_sources(value)[0]
    }
    assert copied.get("knative/rollout.yaml") == spec.group(1), copied


def test_dependencies_come_from_the_hashed_lock(build):
    """Guards locked installs: the builder installs docker/locks/<image>.txt with --require-hashes,
    --no-deps and wheels only, then the project itself with --no-deps."""
    image, dockerfile = build
    copies = {}
    for value in dockerfile.all_values("COPY"):
        flags, sources = copy_sources(value)
        copies.update({value.split()[-1]: s for s in sources if s.startswith("docker/locks/")})
    variant = dockerfile.args.get("VARIANT")
    expected = f"docker/locks/{image}-{variant}.txt" if variant else f"docker/locks/{image}.txt"
    assert expected in copies.values(), f"{expected} is not copied in"
    runs = " ".join(dockerfile.all_values("RUN"))
    lock_install = re.search(r"pip install ([^&;]*-r\s+(\S+)[^&;]*)", runs)
    assert lock_install, "no `pip install -r <lock>`"
    flags, target = lock_install.group(1), lock_install.group(2)
    assert copies.get(target) == expected, f"installs {target}, not the copy of {expected}"
    for flag in ("--require-hashes", "--no-deps", "--only-binary :all:"):
        assert flag in flags, f"the lock install lacks {flag}"
    assert re.search(r"pip install --no-deps /src\b", runs), "the project is not installed with --no-deps"


def test_no_build_tools_in_the_final_stage(build):
    """Guards the slim runtime: the final stage installs no compiler or -dev package and takes
    only the built venv from the builder."""
    _, dockerfile = build
    for value in dockerfile.final_values("RUN"):
        assert not ("install" in value and BUILD_TOOLS.search(value)), value
    for value in dockerfile.final_values("COPY"):
        flags, sources = copy_sources(value)
        if any(f.startswith("--from=") for f in flags):
            assert sources == ["/opt/venv"], value


def test_healthcheck_uses_python_on_the_exposed_port(build):
    """Guards the HEALTHCHECK: present, python's urllib (slim has no curl), on the EXPOSEd port."""
    _, dockerfile = build
    checks = dockerfile.final_values("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    check = checks[-1]
    assert "urllib.request" in check and "curl" not in check and "wget" not in check, check
    exposed = {p.split("/")[0] for v in dockerfile.final_values("EXPOSE") for p in v.split()}
    assert exposed, "no EXPOSE"
    port = re.search(r"127\.0\.0\.1:(\d+|%s)", check).group(1)
    if port == "%s":  # the port comes from an ENV the check reads
        variable = re.search(r"os\.environ\['(\w+)'\]", check).group(1)
        env = " ".join(dockerfile.final_values("ENV"))
        port = re.search(rf"\b{variable}=(\d+)", env).group(1)
    assert port in exposed, (port, exposed)
    assert dockerfile.final_values("CMD") or dockerfile.final_values("ENTRYPOINT"), "no command"


def test_no_secret_looking_env_or_arg(build):
    """Guards against secrets baked into layers: no ENV or ARG named like a token or password."""
    _, dockerfile = build
    names = list(dockerfile.args)
    for keyword in ("ENV", "ARG"):
        for value in dockerfile.all_values(keyword):
            names += re.findall(r"(?:^|\s)([A-Za-z_]\w*)(?==|\s|$)", value)
    assert not [n for n in names if SECRET_NAME.search(n)], names


def test_every_copy_source_exists_in_the_build_context(build):
    """Guards the build: each COPY source exists (context = repository root) and .dockerignore lets it in."""
    _, dockerfile = build
    for value in dockerfile.all_values("COPY"):
        flags, sources = copy_sources(value)
        if any(f.startswith("--from=") for f in flags):
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_the_secrets_and_the_venv_out():
    """Guards the build context: .env, .venv and tests never reach an image."""
    assert ignored(".env") and ignored(".venv/bin/python") and ignored("tests/conftest.py")
    assert ignored("src/pefm/__pycache__/config.cpython-311.pyc")
    assert not ignored("src/pefm/config.py") and not ignored("functions/inference/function/func.py")


def test_cuda_variant_sets_the_nvidia_runtime_variables_and_cpu_does_not():
    """Guards the GPU image: NVIDIA_VISIBLE_DEVICES / DRIVER_CAPABILITIES only in VARIANT=cuda."""
    cuda = " ".join(parse("inference", {"VARIANT": "cuda"}).final_values("ENV"))
    cpu = " ".join(parse("inference", {"VARIANT": "cpu"}).final_values("ENV"))
    assert "NVIDIA_VISIBLE_DEVICES=all" in cuda and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in cuda
    assert "NVIDIA_" not in cpu


@pytest.mark.parametrize("lock", locks(), ids=lambda p: p.name)
def test_every_lock_pins_exact_hashed_versions(lock):
    """Guards --require-hashes: every requirement is pinned with == and carries a sha256."""
    entries = lock_entries(lock)
    assert len(entries) > 20
    assert not [name for name, (_, hashes) in entries.items() if not hashes]
    requirement_lines = [ln for ln in lock.read_text().splitlines() if ln and not ln.startswith((" ", "#", "--"))]
    assert len(requirement_lines) == len(entries), "a requirement that is not pinned with =="


@pytest.mark.parametrize("lock", locks(), ids=lambda p: p.name)
def test_every_lock_covers_pyproject_and_its_extras(lock):
    """Guards stale locks: each lock pins every dependency of pyproject.toml and of the extras its
    uv command names, and compile.sh regenerates it."""
    command = lock_command(lock)
    assert f"-o docker/locks/{lock.name}" in command and command.startswith("uv pip compile pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = re.findall(r"--extra (\S+)", command)
    wanted = project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]
    pinned = lock_entries(lock)
    missing = [r for r in wanted if canonicalize_name(Requirement(r).name) not in pinned]
    assert not missing, f"{lock.name} lacks {missing}: run docker/locks/compile.sh"
    script = (LOCKS / "compile.sh").read_text()
    assert re.search(rf"^lock(_cpu_torch)? {lock.stem}\b", script, re.MULTILINE), (
        f"compile.sh does not make {lock.name}"
    )


def test_the_locks_pin_httpx_for_the_router_probes_and_ingest():
    """Guards a runtime import missing from an image: pefm.local.router, pefm.rollout.probes and
    providers, pefm.serving.ingest and the dashboard import httpx."""
    assert not [lock.name for lock in locks() if "httpx" not in lock_entries(lock)]


def test_the_two_torch_builds():
    """Guards the inference variants: CPU torch (+cpu, with the CPU index for pip) and PyPI's CUDA
    torch with its nvidia-* libraries, the same torch version in both."""
    cpu, cuda = lock_entries(LOCKS / "inference-cpu.txt"), lock_entries(LOCKS / "inference-cuda.txt")
    assert cpu["torch"][0].endswith("+cpu") and not [n for n in cpu if n.startswith("nvidia-")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (LOCKS / "inference-cpu.txt").read_text()
    assert "+" not in cuda["torch"][0] and [n for n in cuda if n.startswith("nvidia-")]
    assert cpu["torch"][0].removesuffix("+cpu") == cuda["torch"][0]


# The locks of the images that load models: the inference revisions; the monitor (every drift check
# loads the serving model); control (compose's rollout API loads a canary's two models to measure
# their divergence, and `pefm train` runs in compose's init). Unpickling an mlp model imports torch.
MODEL_LOADERS = {"inference-cpu", "inference-cuda", "monitor", "control"}


@pytest.mark.parametrize("lock", locks(), ids=lambda p: p.name)
def test_torch_is_in_every_image_that_loads_models(lock):
    """Guards the images against a ModuleNotFoundError on an mlp model (the monitor's drift checks
    were one 500 each, and compose's rollout API could not measure an mlp canary): the locks of the
    images that load models pin torch, the CPU build (+cpu, with the CPU index for pip) in all but
    inference-cuda, the same version everywhere; the others have none."""
    entries = lock_entries(lock)
    if lock.stem not in MODEL_LOADERS:
        assert "torch" not in entries, f"{lock.name}: its image loads no model and needs no torch"
        return
    assert "torch" in entries, f"{lock.name}: its image loads models, and an mlp model needs torch"
    version = lock_entries(LOCKS / "inference-cpu.txt")["torch"][0]
    if lock.stem != "inference-cuda":
        assert entries["torch"][0] == version and version.endswith("+cpu"), (lock.name, entries["torch"])
        assert not [n for n in entries if n.startswith("nvidia-")], f"{lock.name}: CUDA libraries in a CPU image"
        assert lock.read_text().startswith("--extra-index-url https://download.pytorch.org/whl/cpu\n"), lock.name
