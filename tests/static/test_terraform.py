"""Static checks of terraform/: formatting, the cluster modules' shared output contract, typed and
described variables, described outputs, pinned providers, and examples that call real modules
with every required variable. ``terraform validate`` needs provider downloads, so CI runs it.

python-hcl2 (8.x) keeps HCL strings quoted (``'"eks"'``) and wraps expressions as ``"${...}"``:
``unquote`` undoes the first, the expressions are compared as text.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES = TERRAFORM / "modules"
EXAMPLES = TERRAFORM / "examples"
CLUSTER_MODULES = ("eks", "gke", "aks", "existing-cluster")
CONTRACT_CORE = {"cluster_name", "host", "cluster_ca_certificate", "kubeconfig", "gpu_node_selector", "gpu_node_taint"}
META_ARGUMENTS = {"source", "version", "depends_on", "providers", "count", "for_each"}
GPU_OVERLAY = ROOT / "knative" / "overlays" / "gpu"


def unquote(value: Any) -> Any:
    """A python-hcl2 value with HCL's string quotes removed, recursively (keys too)."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")
        }  # __is_block__, __comments__
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return value


def parse(path: Path) -> dict[str, Any]:
    """One .tf (or .tfvars) file, unquoted."""
    with path.open() as handle:
        return unquote(hcl2.load(handle))


def blocks(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Every ``kind`` block (variable, output, module...) of a Terraform folder, by label."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for block in parse(path).get(kind, []):
            out.update(block)
    return out


def typed_blocks(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """``resource`` or ``data`` blocks by "type.name"."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for block in parse(path).get(kind, []):
            for type_, named in block.items():
                out.update({f"{type_}.{name}": body for name, body in named.items()})
    return out


def locals_of(folder: Path) -> dict[str, Any]:
    """All ``locals`` of a Terraform folder merged."""
    out: dict[str, Any] = {}
    for path in sorted(folder.glob("*.tf")):
        for block in parse(path).get("locals", []):
            out.update(block)
    return out


def terraform_folders() -> list[Path]:
    """Every module and example folder."""
    return sorted(p for p in [*MODULES.iterdir(), *EXAMPLES.iterdir()] if p.is_dir())


def test_terraform_fmt() -> None:
    """Guards that terraform/ is formatted the way `terraform fmt` writes it."""
    if shutil.which("terraform") is None:
        pytest.skip("the terraform binary is not on PATH: `terraform fmt -check` cannot run")
    done = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", str(TERRAFORM)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"not formatted (run `terraform fmt -recursive terraform/`):\n{done.stdout}"


def test_layout_is_complete() -> None:
    """Guards the modules and examples the deploy guide relies on."""
    modules = {p.name for p in MODULES.iterdir() if p.is_dir()}
    assert {*CLUSTER_MODULES, "knative", "data", "monitoring", "platform"} <= modules
    assert {p.name for p in EXAMPLES.iterdir() if p.is_dir()} >= {"eks", "gke", "aks", "existing-cluster"}
    for folder in terraform_folders():
        assert list(folder.glob("*.tf")), f"{folder} has no .tf file"
        for path in folder.glob("*.tf"):
            parse(path)


def test_cluster_modules_share_one_output_contract() -> None:
    """Guards that eks, gke, aks and existing-cluster expose the same outputs, equally sensitive."""
    contracts = {
        name: {output: bool(body.get("sensitive", False)) for output, body in blocks(MODULES / name, "output").items()}
        for name in CLUSTER_MODULES
    }
    reference = contracts["eks"]
    assert set(reference) >= CONTRACT_CORE, f"eks lacks {CONTRACT_CORE - set(reference)}"
    for name, contract in contracts.items():
        assert set(contract) == set(reference), f"{name}: {sorted(set(contract) ^ set(reference))} differ from eks"
        assert contract == reference, f"{name}: sensitivity differs from eks"
    assert reference["kubeconfig"] is True, "the kubeconfig output must be sensitive"


@pytest.mark.parametrize("folder", terraform_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_variables_and_outputs_are_described(folder: Path) -> None:
    """Guards that every variable has a type and a description, and every output a description."""
    for name, body in blocks(folder, "variable").items():
        assert body.get("type"), f"{folder.name}: variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"{folder.name}: variable {name} has no description"
    for name, body in blocks(folder, "output").items():
        assert str(body.get("description", "")).strip(), f"{folder.name}: output {name} has no description"


@pytest.mark.parametrize("folder", terraform_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_versions_are_pinned(folder: Path) -> None:
    """Guards that versions.tf pins Terraform and every provider the folder's resources use."""
    assert (folder / "versions.tf").exists(), f"{folder} has no versions.tf"
    [settings] = parse(folder / "versions.tf")["terraform"]
    assert settings.get("required_version"), f"{folder.name}: no required_version"
    providers = {}
    for entry in settings.get("required_providers", []):
        providers.update(entry)
    for name, spec in providers.items():
        assert spec.get("source") and spec.get("version"), f"{folder.name}: provider {name} is not pinned"
    used = {key.split("_")[0].split(".")[0] for kind in ("resource", "data") for key in typed_blocks(folder, kind)}
    used |= set(blocks(folder, "provider"))
    used -= {"terraform"}  # terraform_data is built in
    assert used <= set(providers), f"{folder.name}: providers used but not pinned: {sorted(used - set(providers))}"
    for name, body in blocks(folder, "module").items():
        if not str(body["source"]).startswith("."):
            assert body.get("version"), f"{folder.name}: registry module {name} has no version"


def test_module_calls_pass_their_required_variables() -> None:
    """Guards that every example wires a cluster module into the platform module, and that every local
    module call (examples and modules alike) resolves and passes every required variable, and only known ones."""
    for example in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        assert {"cluster", "platform"} <= set(blocks(example, "module")), f"{example.name} is not wired"
    assert {"knative", "data", "monitoring"} <= set(blocks(MODULES / "platform", "module"))
    for example in terraform_folders():
        calls = blocks(example, "module")
        for name, call in calls.items():
            source = str(call["source"])
            if not source.startswith("."):
                continue
            module = (example / source).resolve()
            assert module.is_dir() and list(module.glob("*.tf")), (
                f"{example.name}: module {name} -> {source} is missing"
            )
            variables = blocks(module, "variable")
            required = {v for v, body in variables.items() if "default" not in body}
            passed = set(call) - META_ARGUMENTS
            assert required <= passed, f"{example.name}: module {name} misses {sorted(required - passed)}"
            assert passed <= set(variables), f"{example.name}: module {name} has no {sorted(passed - set(variables))}"


def test_examples_document_their_inputs() -> None:
    """Guards that each example's terraform.tfvars.example sets every required variable it declares."""
    for example in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        tfvars = example / "terraform.tfvars.example"
        assert tfvars.exists(), f"{example.name} has no terraform.tfvars.example"
        given = set(parse(tfvars))
        declared = blocks(example, "variable")
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= given, f"{example.name}: tfvars example misses {sorted(required - given)}"
        assert given <= set(declared), f"{example.name}: tfvars example sets unknown {sorted(given - set(declared))}"


def test_knative_module_enables_exactly_the_overlay_feature_flags() -> None:
    """Guards that the knative module turns on the config-features flags the GPU overlay needs, and no more."""
    overlay = yaml.safe_load((GPU_OVERLAY / "config-features.yaml").read_text())["data"]
    assert overlay, "the GPU overlay's config-features is empty"
    assert locals_of(MODULES / "knative")["features"] == overlay


def test_gpu_nodes_match_the_gpu_overlay() -> None:
    """Guards that every cluster module's GPU label and taint are what the GPU overlay selects and tolerates."""
    patch = yaml.safe_load((GPU_OVERLAY / "gpu-inference.yaml").read_text())
    by_path = {op["path"]: op["value"] for op in patch}
    selector = by_path["/spec/template/spec/nodeSelector"]
    [toleration] = by_path["/spec/template/spec/tolerations"]
    for name in ("eks", "gke", "aks"):
        values = locals_of(MODULES / name)
        assert values["gpu_labels"] == selector, name
        taint = values["gpu_taint"]
        assert (taint["key"], taint["effect"]) == (toleration["key"], toleration["effect"]), name
    existing = blocks(MODULES / "existing-cluster", "variable")
    assert existing["gpu_node_selector"]["default"] == selector
    assert existing["gpu_node_taint"]["default"]["key"] == toleration["key"]
