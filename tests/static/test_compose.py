"""docker-compose.yml and the monitoring it wires (deploy/prometheus, deploy/grafana): the compose
schema, build contexts, ports, dependencies, volumes, secrets from .env, scrape targets, the
revisions the router knows, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.main import get_command

from pefm.cli import app

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "compose-schema" / "compose-spec.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?+])([^}]*))?\}")
SECRET_KEY = re.compile(r"TOKEN|PASSWORD|SECRET")
FUNCTION_IMAGES = ("ingest", "inference", "monitor")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def dockerfile(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    build = {"context": build} if isinstance(build, str) else build
    return ROOT / build["context"] / build.get("dockerfile", "Dockerfile")


def dockerfile_lines(service: dict[str, Any], keyword: str) -> list[str]:
    path = dockerfile(service)
    if path is None:
        return []
    return [line for line in path.read_text().splitlines() if line.startswith(f"{keyword} ")]


def has_healthcheck(service: dict[str, Any]) -> bool:
    """A healthcheck of its own in compose, or (unless disabled there) its image's HEALTHCHECK."""
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable") and check.get("test") != ["NONE"]
    return bool(dockerfile_lines(service, "HEALTHCHECK"))


def listening_ports(service: dict[str, Any]) -> set[int]:
    """Ports the service's container listens on: its image's EXPOSE, compose expose and ports."""
    ports = {int(p.split("/")[0]) for line in dockerfile_lines(service, "EXPOSE") for p in line.split()[1:]}
    ports |= {int(str(p)) for p in service.get("expose", [])}
    ports |= {int(str(p).split(":")[-1]) for p in service.get("ports", [])}
    return ports


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart", "no") == "no"


def commands(service: dict[str, Any]) -> list[str]:
    """The shell words of a service's command, split at && (list or string form)."""
    command = service.get("command")
    if command is None:
        return []
    if isinstance(command, list):
        command = command[-1] if command[:2] == ["sh", "-c"] else shlex.join(command)
    return [part.strip() for part in command.split("&&")]


def test_validates_against_the_compose_specification():
    """Guards the file's shape: the compose-spec JSON schema (the one `docker compose` implements)."""
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose())  # the schema's $schema: draft-07
    assert "version" not in compose(), "the compose specification has no version key"


def test_every_build_context_and_dockerfile_exists():
    """Guards `docker compose build`: each context and Dockerfile is in the repository, each image
    is ghcr.io/pefm/<the Dockerfile's name>."""
    built = {name: s for name, s in services().items() if "build" in s}
    assert len(built) >= 9
    for name, service in built.items():
        path = dockerfile(service)
        assert path.is_file(), f"{name}: {path} is missing"
        image = path.name.removesuffix(".Dockerfile")
        assert service["image"].startswith(f"ghcr.io/pefm/{image}:"), (name, service["image"])


def test_host_ports_do_not_clash_and_stay_on_loopback():
    """Guards `docker compose up`: no two services publish the same host port, all on 127.0.0.1."""
    seen: dict[int, str] = {}
    for name, service in services().items():
        for published in service.get("ports", []):
            address, host, _container = str(published).split(":")
            assert address == "127.0.0.1", f"{name} publishes {published} beyond this machine"
            assert int(host) not in seen, f"{name} and {seen.get(int(host))} both publish {host}"
            seen[int(host)] = name
    assert {8080, 8050, 9090, 3000} <= set(seen)


def test_depends_on_conditions_can_be_met():
    """Guards start-up order: service_healthy waits on a service with a healthcheck,
    service_completed_successfully on a one-shot; every name exists."""
    for name, service in services().items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services(), f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert has_healthcheck(services()[target]), f"{name} waits for {target}, which has no healthcheck"
            elif condition == "service_completed_successfully":
                assert one_shot(services()[target]), f"{name} waits for {target} to finish: it restarts"


def test_long_running_services_have_healthchecks_and_wait_for_the_init():
    """Guards the stack's readiness: each long-running service has a healthcheck, and the ones on the
    database start only after the one-shot init migrated it."""
    for name, service in services().items():
        if one_shot(service):
            continue
        assert has_healthcheck(service), f"{name} has no healthcheck"
        env = service.get("environment", {})
        if "PEFM_DATABASE_URL" in env:
            assert service["depends_on"]["init"]["condition"] == "service_completed_successfully", name


def test_named_volumes_are_declared_and_bind_mounts_exist():
    """Guards volumes: each named volume is declared at the top level, each bind mount's source exists."""
    declared = set(compose().get("volumes", {}))
    used = set()
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_the_example_env_file_covers_every_variable_and_holds_the_secrets():
    """Guards `cp .env.example .env && docker compose up`: every ${VAR} is in .env.example, every
    required one (${VAR:?}) has a value there, and no token or password is written in compose."""
    text = (ROOT / "docker-compose.yml").read_text()
    lines = (ROOT / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    used = {m.group(1): m.group(2) for m in VARIABLE.finditer(text)}
    assert used and set(used) <= set(example), f"not in .env.example: {set(used) - set(example)}"
    assert set(example) <= set(used), f"in .env.example but unused: {set(example) - set(used)}"
    assert all(example[name] for name, op in used.items() if op == ":?")
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_KEY.search(key):
                assert VARIABLE.fullmatch(str(value)), f"{name}: {key} must come from .env"


# Which database role each service connects as (pefm.storage.roles): the owner for the migrator
# only, every other service its component's role.
SERVICE_ROLES = {
    "init": "pefm",
    "ingest": "pefm_ingest",
    "inference-blue": "pefm_inference",
    "inference-green": "pefm_inference",
    "inference-gpu": "pefm_inference",
    "inference-gpu-register": "pefm_rollout",
    "router": "pefm_rollout",
    "rollout-api": "pefm_rollout",
    "monitor": "pefm_monitor",
    "dashboard": "pefm_dashboard",
}
DATABASE_URL = re.compile(r"postgresql://(\w+):\$\{(\w+):\?[^}]*\}@timescaledb:5432/pefm")


def role_password(role: str) -> str:
    """The .env variable holding ``role``'s password."""
    return "PEFM_DB_PASSWORD" if role == "pefm" else f"PEFM_ROLE_PASSWORD_{role.removeprefix('pefm_').upper()}"


def test_each_service_connects_as_its_own_role_and_only_the_trainer_signs():
    """Guards least privilege: only the one-shot init (the migrator) connects as the owner and sets
    the component roles' passwords (every role pefm.storage.roles creates); every other service
    connects as its component's role with that role's password from .env; only what trains holds
    the signing key, and every process that loads models (inference revisions, monitor, and what trains,
    whose gates load the serving model) the public keys."""
    from pefm.storage.roles import COMPONENTS

    with_url = {name for name, s in services().items() if "PEFM_DATABASE_URL" in (s.get("environment") or {})}
    assert with_url == set(SERVICE_ROLES), f"roles not decided for {sorted(with_url ^ set(SERVICE_ROLES))}"
    for name, role in SERVICE_ROLES.items():
        env = services()[name]["environment"]
        found = DATABASE_URL.fullmatch(str(env["PEFM_DATABASE_URL"]))
        assert found, f"{name}: PEFM_DATABASE_URL is not a role's URL to timescaledb with its password from .env"
        assert found.groups() == (role, role_password(role)), f"{name} connects as {found[1]}, not {role}"
        given = {k for k in env if k.startswith("PEFM_ROLE_PASSWORD_")}
        if name == "init":
            assert given == {f"PEFM_ROLE_PASSWORD_{c.upper()}" for c in COMPONENTS}, sorted(given)
            assert all(VARIABLE.fullmatch(str(env[k])).group(1) == k for k in given)
        else:
            assert not given, f"{name} holds role passwords {sorted(given)}"
    trainers = {"init"}
    monitor = services()["monitor"]["environment"]
    if monitor.get("PEFM_RETRAIN") == "local":  # it starts `pefm retrain`: as the trainer, with the key
        trainers.add("monitor")
        found = DATABASE_URL.fullmatch(str(monitor["PEFM_TRAINER_DATABASE_URL"]))
        assert found and found.groups() == ("pefm_trainer", role_password("pefm_trainer"))
    signing = {name for name, s in services().items() if "PEFM_SIGNING_KEY" in (s.get("environment") or {})}
    assert signing == trainers, f"the signing key is held by {sorted(signing)}, not {sorted(trainers)}"
    loaders = {
        name for name, s in services().items() if dockerfile(s) and dockerfile(s).stem in ("inference", "monitor")
    }
    assert loaders >= {"inference-blue", "inference-green", "inference-gpu", "monitor"}
    loaders |= trainers  # a trainer's gates load the serving model, which an older key may have signed
    for name in loaders:
        keys = str(services()[name]["environment"].get("PEFM_VERIFY_KEYS", ""))
        assert VARIABLE.fullmatch(keys), f"{name} loads models but has no PEFM_VERIFY_KEYS from .env"


def test_only_the_inference_revisions_hold_the_key_that_tags_the_cache_entries():
    """Guards PEFM_CACHE_KEY: every inference revision holds it (from .env), ingest, which reaches
    Valkey only to announce new data, does not; and nothing else reaches Valkey."""
    with_key = {n for n, s in services().items() if "PEFM_CACHE_KEY" in (s.get("environment") or {})}
    with_url = {n for n, s in services().items() if "PEFM_REDIS_URL" in (s.get("environment") or {})}
    assert with_key == {"inference-blue", "inference-green", "inference-gpu"}, sorted(with_key)
    assert with_url == with_key | {"ingest"}, sorted(with_url)
    for name in with_key:
        assert VARIABLE.fullmatch(str(services()[name]["environment"]["PEFM_CACHE_KEY"])).group(1) == "PEFM_CACHE_KEY"


def test_the_env_file_is_never_committed():
    """Guards the secrets: git ignores .env (only .env.example is committed)."""
    done = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 0, ".env is not in .gitignore"


def test_every_scrape_target_is_a_service_port_and_every_function_is_scraped():
    """Guards monitoring: each Prometheus target is a compose service on a port it listens on, and
    every function revision, the router and the rollout API are scraped."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        assert host in services(), f"scrape target {target}: no such service"
        assert int(port) in listening_ports(services()[host]), f"scrape target {target}: not a port {host} listens on"
    scraped = {t.split(":")[0] for t in targets}
    expected = {
        name
        for name, service in services().items()
        if not one_shot(service) and dockerfile(service) and dockerfile(service).stem in FUNCTION_IMAGES
    } | {"router", "rollout-api"}
    assert expected <= scraped, f"not scraped: {expected - scraped}"


def test_promtool_accepts_the_prometheus_config():
    """Guards deploy/prometheus/prometheus.yml with Prometheus' own checker."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_router_knows_every_inference_revision_under_its_k_revision():
    """Guards routing: each inference container is registered (`pefm local register`) under the
    K_REVISION it reports in its metrics, at its own service address; blue first, with the traffic."""
    registered = {}
    order = []
    for service in services().values():
        for command in commands(service):
            words = shlex.split(command)
            if words[:3] == ["pefm", "local", "register"]:
                _, revision, url = words[3:6]
                registered[revision] = url
                order.append((revision, words))
    inference = {
        name: s
        for name, s in services().items()
        if dockerfile(s) and dockerfile(s).stem == "inference" and not one_shot(s)
    }
    assert len(inference) >= 3
    for name, service in inference.items():
        revision = service["environment"]["K_REVISION"]
        assert registered.get(revision) == f"http://{name}:8080", (name, revision, registered)
    first_revision, first_words = order[0]
    assert first_revision == "pefm-inference-blue" and first_words[-2:] == ["--tag", "blue"]


def test_every_command_the_stack_runs_exists():
    """Guards the commands in compose: each `pefm ...` names a real subcommand and real options,
    each `python -m` a real module (in PEFM's images; the others run their own servers)."""
    import importlib.util

    root = get_command(app)
    for name, service in services().items():
        if not service.get("image", "").startswith("ghcr.io/pefm/"):
            continue
        for command in commands(service):
            words = shlex.split(command)
            if words[:2] == ["python", "-m"]:
                assert importlib.util.find_spec(words[2]), f"{name}: no module {words[2]}"
                continue
            assert words[0] == "pefm", f"{name}: unexpected command {command}"
            node, rest = root, words[1:]
            while rest and hasattr(node, "commands") and rest[0] in node.commands:
                node, rest = node.commands[rest[0]], rest[1:]
            assert not hasattr(node, "commands"), f"{name}: `{command}` is not a full command"
            options = {opt for param in node.params for opt in param.opts + param.secondary_opts}
            assert {w for w in rest if w.startswith("--")} <= options, f"{name}: unknown option in `{command}`"


def test_the_gpu_profile_builds_cuda_and_reserves_a_gpu():
    """Guards the gpu profile: a CUDA inference revision with an NVIDIA device reservation, off by default."""
    gpu = [s for s in services().values() if "gpu" in s.get("profiles", [])]
    revision = [s for s in gpu if "deploy" in s]
    assert len(revision) == 1
    service = revision[0]
    assert service["build"]["args"]["VARIANT"] == "cuda" and service["image"].endswith("-cuda")
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    others = [s for s in services().values() if s not in gpu and "args" in s.get("build", {})]
    assert others and {s["build"]["args"]["VARIANT"] for s in others} == {"cpu"}, "outside the profile: CPU images"


def grafana_expressions() -> list[str]:
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards
    return [t["expr"] for d in dashboards for p in json.loads(d.read_text())["panels"] for t in p.get("targets", [])]


def test_grafana_provisioning_is_wired_to_prometheus_and_the_dashboards():
    """Guards Grafana: the datasource points at the compose Prometheus, the dashboards name its
    uid, and the provider reads the folder compose mounts."""
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services()
    for path in (GRAFANA / "dashboards").glob("*.json"):
        uids = {p["datasource"]["uid"] for p in json.loads(path.read_text())["panels"]}
        assert uids == {source["uid"]}, path.name
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "pefm.yml").read_text())["providers"][0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services()["grafana"]["volumes"]}
    assert (ROOT / mounts[provider["options"]["path"]]).resolve() == (GRAFANA / "dashboards").resolve()


def test_grafana_shows_latency_quantiles_throughput_and_errors_per_revision():
    """Guards the dashboard's content: p50/p95/p99, request rate and 5xx per revision."""
    exprs = grafana_expressions()
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({quantile}," in e and "revision" in e for e in exprs), quantile
    assert any("rate(pefm_requests_total" in e and "by (revision)" in e and "5.." not in e for e in exprs)
    assert any('status=~"5.."' in e and "by (revision)" in e for e in exprs)


def test_grafana_queries_use_metrics_pefm_exports_and_parse():
    """Guards against dashboards of empty panels: every pefm_* metric is one the code defines, and
    promtool parses every query (Grafana's variables filled in)."""
    sources = "\n".join(p.read_text() for p in (ROOT / "src" / "pefm").rglob("*.py"))
    exprs = grafana_expressions()
    for metric in {m for e in exprs for m in re.findall(r"\bpefm_\w+", e)}:
        base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
        assert f'"{base}"' in sources, f"{metric}: no metric {base!r} in src/pefm"
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; .ci/run does it)")
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [
                    {
                        "record": f"grafana:expr{i}",
                        "expr": e.replace("$__rate_interval", "1m").replace("$service", ".*"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    done = subprocess.run(
        ["promtool", "check", "rules", "--lint=none", "/dev/stdin"],
        input=yaml.safe_dump(rules),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
