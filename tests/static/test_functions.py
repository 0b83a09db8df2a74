"""The kn func projects (functions/*/func.yaml) against the Knative manifests beside them: `func
deploy` must run a function as knative/base does, with its own database role, the keys it needs
and the same scaling, and must not need a local variable a plain deploy lacks."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "func-schema" / "func_yaml-schema.json"  # upstream's, beside the repository
FUNCTIONS = ("inference", "ingest", "monitor")
SECRET = re.compile(r"^\{\{ secret:([a-z0-9-]+):([a-z0-9-]+) \}\}$")


class _Loader(yaml.SafeLoader):
    """YAML as func reads it: a timestamp stays text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def func_yaml(name: str) -> dict:
    return yaml.load((ROOT / "functions" / name / "func.yaml").read_text(), Loader=_Loader)


def manifest(name: str) -> dict:
    docs = yaml.safe_load_all((ROOT / "knative" / "base" / f"{name}.yaml").read_text())
    return next(d for d in docs if d and d.get("kind") == "Service" and d["apiVersion"].startswith("serving.knative"))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_yaml_follows_funcs_schema(name: str):
    assert SCHEMA.is_file(), "../shared/func-schema not found beside the repository"
    schema = json.loads(SCHEMA.read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(func_yaml(name))]
    assert errors == []


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_deploy_gives_the_env_the_manifest_gives(name: str):
    """Each variable func.yaml sets is the manifest's, from the same secret key (the component's
    database role, not the owner's URL) or with the same value; none names a local variable
    (`{{ env:X }}`), which func deploy refuses when X is unset."""
    template = manifest(name)["spec"]["template"]["spec"]["containers"][0]
    given = {e["name"]: e for e in template["env"]}
    for env in func_yaml(name)["run"]["envs"]:
        assert env["name"] in given, env
        expected = given[env["name"]]
        if found := SECRET.match(env["value"]):
            ref = expected["valueFrom"]["secretKeyRef"]
            assert (found[1], found[2]) == (ref["name"], ref["key"]), env
        else:
            assert "{{" not in env["value"] and env["value"] == expected.get("value"), env
    assert {"PEFM_DATABASE_URL"} <= {e["name"] for e in func_yaml(name)["run"]["envs"]}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_deploy_scales_as_the_manifest_does(name: str):
    annotations = manifest(name)["spec"]["template"]["metadata"]["annotations"]
    scale = func_yaml(name)["deploy"]["options"]["scale"]
    assert str(scale["min"]) == annotations["autoscaling.knative.dev/min-scale"]
    assert str(scale["max"]) == annotations["autoscaling.knative.dev/max-scale"]
    assert str(scale["target"]) == annotations["autoscaling.knative.dev/target"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_func_deploy_keeps_the_manifests_visibility(name: str):
    """The monitor takes its CloudEvents without a token because it is cluster-local: a `func
    deploy` that dropped the label made it reachable from the ingress, tokenless."""
    wanted = manifest(name)["metadata"].get("labels", {}).get("networking.knative.dev/visibility")
    given = {label["key"]: label.get("value") for label in func_yaml(name)["deploy"].get("labels", [])}
    assert given.get("networking.knative.dev/visibility") == wanted
