"""Static checks of terraform/: formatting, the cluster modules' shared output contract, typed and
described variables, described outputs, pinned providers, and examples that call real modules
with every required variable; then the facts a real cloud depends on (issue 14): the database on
CloudNativePG with a pinned, preloaded TimescaleDB image, the GPU runtime handlers, an EKS example
that plans on the first run, GKE's Cloud NAT and APIs, Flagger wired to the monitoring module's
Prometheus. ``terraform validate`` needs provider downloads, so CI runs it; the CNPG manifests are
built from variables only, so they are rendered here by ``terraform apply`` of those files alone
(no provider, no state outside a temporary folder).

python-hcl2 (8.x) keeps HCL strings quoted (``'"eks"'``) and wraps expressions as ``"${...}"``:
``unquote`` undoes the first, the expressions are compared as text.
"""

from __future__ import annotations

import json
import os
import re
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
        pytest.fail("the terraform binary (1.11.4) is not on PATH: `terraform fmt -check` cannot run")
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


# --- issue 14: what a real cloud accepts -------------------------------------------------------

DATA = MODULES / "data"
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
OFFLINE = {**os.environ, "CHECKPOINT_DISABLE": "1"}  # no version check call from terraform


def resource(folder: Path, address: str) -> dict[str, Any]:
    """One resource block of a folder by "type.name"."""
    found = typed_blocks(folder, "resource")
    assert address in found, f"{folder.name} has no {address}: {sorted(found)}"
    return found[address]


def default_of(folder: Path, variable: str) -> Any:
    """The default of a folder's variable (it must have one)."""
    body = blocks(folder, "variable")[variable]
    assert "default" in body, f"{folder.name}: variable {variable} has no default"
    return body["default"]


def render(folder: Path, files: list[str], outputs: dict[str, str], tmp: Path, **variables: str) -> dict[str, Any]:
    """Apply ``files`` of ``folder`` (locals built from variables only) in a scratch folder and return
    the ``outputs`` (name -> HCL expression, JSON-encoded there) decoded. ``variables`` are HCL values."""
    if shutil.which("terraform") is None:
        pytest.fail("the terraform binary (1.11.4) is not on PATH: these plans cannot run")
    if not list(tmp.glob("*.tf")):
        for name in files:
            shutil.copy(folder / name, tmp / name)
        body = "".join(f'output "{k}" {{\n  value = jsonencode({v})\n}}\n' for k, v in outputs.items())
        (tmp / "render_outputs.tf").write_text(body)
        subprocess.run(
            ["terraform", "init", "-input=false"], cwd=tmp, env=OFFLINE, capture_output=True, check=True, timeout=120
        )
    args = [arg for name, value in variables.items() for arg in ("-var", f"{name}={value}")]
    done = subprocess.run(
        ["terraform", "apply", "-auto-approve", "-input=false", *args],
        cwd=tmp,
        env=OFFLINE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run(
        ["terraform", "output", "-json"], cwd=tmp, env=OFFLINE, capture_output=True, text=True, check=True
    )
    return {name: json.loads(out["value"]) for name, out in json.loads(shown.stdout).items()}


def render_database(tmp: Path, **variables: str) -> dict[str, Any]:
    """The data module's CNPG manifests (cluster.tf) for the given variables."""
    outputs = {
        "cluster": "local.cluster",
        "catalog": "local.image_catalog",
        "backup": "local.scheduled_backup",
        "rw_host": "local.rw_host",
    }
    return render(DATA, ["variables.tf", "cluster.tf"], outputs, tmp, **variables)


def test_no_unmaintained_timescaledb_chart() -> None:
    """Guards against the timescaledb-single chart (unmaintained, TimescaleDB 2.9) coming back."""
    for path in TERRAFORM.rglob("*.tf"):
        assert "timescaledb-single" not in path.read_text(), path


def test_database_runs_on_a_pinned_cloudnative_pg_operator() -> None:
    """Guards the in-cluster database's operator: the cloudnative-pg chart from its repository at an exact
    version, installed only without a managed URL, before any of its custom resources."""
    chart = resource(DATA, "helm_release.cnpg")
    assert (chart["chart"], chart["repository"]) == ("cloudnative-pg", "https://cloudnative-pg.github.io/charts")
    assert chart["version"] == "${var.cnpg_chart_version}"
    assert EXACT_VERSION.match(default_of(DATA, "cnpg_chart_version"))
    assert "local.in_cluster" in chart["count"]
    for name in ("image_catalog", "cluster"):
        manifest = resource(DATA, f"kubectl_manifest.{name}")
        assert "local.in_cluster" in manifest["count"], name
    assert "helm_release.cnpg" in str(resource(DATA, "kubectl_manifest.image_catalog")["depends_on"])
    assert "kubectl_manifest.image_catalog" in str(resource(DATA, "kubectl_manifest.cluster")["depends_on"])
    assert "managed_database_url" in blocks(DATA, "variable")


def test_database_image_is_pinned_timescaledb_at_least_2_13() -> None:
    """Guards the default image: timescaledb-ha pinned to a PostgreSQL minor and a TimescaleDB patch
    release >= 2.13 (by_range), whose major is the one the ImageCatalog declares."""
    image = default_of(DATA, "database_image")
    found = re.fullmatch(r"timescale/timescaledb-ha:pg(\d+)\.\d+-ts(\d+)\.(\d+)\.(\d+)", image)
    assert found, f"not pinned to pgMM.m-tsX.Y.Z: {image}"
    major, ts = int(found[1]), tuple(int(found[i]) for i in (2, 3, 4))
    assert ts >= (2, 13, 0), image
    assert major == default_of(DATA, "postgres_major")
    assert default_of(DATA, "database_postgres_uid") == 1000  # timescaledb-ha's postgres user


def test_database_cluster_preloads_timescaledb_and_creates_it_in_public(tmp_path: Path) -> None:
    """Guards the rendered CNPG Cluster: timescaledb preloaded, the extension created in public of the
    application database, the owner's password from the Terraform-made bootstrap Secret, the image
    through the catalog, PDBs with 2 instances, no backup unless asked, and the read-write Service."""
    out = render_database(tmp_path)
    spec = out["cluster"]["spec"]
    assert out["cluster"]["kind"] == "Cluster"
    assert spec["postgresql"]["shared_preload_libraries"] == ["timescaledb"]
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] == initdb["owner"] == "pefm"
    sql = " ".join(initdb["postInitApplicationSQL"])
    assert re.search(r"CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public", sql), sql
    assert re.search(r"ALTER ROLE pefm CREATEROLE", sql), "the migrator could not create the component roles"
    assert initdb["secret"]["name"] == "pefm-db-app-credentials"
    assert resource(DATA, "kubernetes_secret_v1.database_bootstrap")["type"] == "kubernetes.io/basic-auth"
    ref, catalog = spec["imageCatalogRef"], out["catalog"]
    assert (ref["kind"], ref["name"]) == ("ImageCatalog", catalog["metadata"]["name"])
    assert catalog["spec"]["images"] == [{"major": ref["major"], "image": default_of(DATA, "database_image")}]
    assert (spec["instances"], spec["enablePDB"]) == (2, True)
    assert "backup" not in spec and out["backup"] is None
    assert out["rw_host"] == "pefm-db-rw.pefm-data.svc"
    url = locals_of(DATA)["database_url"]
    assert "${local.rw_host}" in url and "${random_password.database.result}" in url


def test_database_single_instance_has_no_pdb_and_backups_render(tmp_path: Path) -> None:
    """Guards that one instance gets no PodDisruptionBudget (it would block every drain) and that a backup
    destination renders Barman's object store with the cloud identity, plus a ScheduledBackup."""
    out = render_database(
        tmp_path,
        database_instances="1",
        storage_class="gp3",
        database_backup='{destination_path = "s3://bucket/pefm"}',
    )
    spec = out["cluster"]["spec"]
    assert spec["enablePDB"] is False
    assert spec["storage"] == {"size": "20Gi", "storageClass": "gp3"}
    store = spec["backup"]["barmanObjectStore"]
    assert store["destinationPath"] == "s3://bucket/pefm"
    assert store["s3Credentials"] == {"inheritFromIAMRole": True}
    assert out["backup"]["spec"]["cluster"]["name"] == out["cluster"]["metadata"]["name"]
    out = render_database(tmp_path, database_backup='{destination_path = "gs://b/p", credentials_secret = "gcs"}')
    google = out["cluster"]["spec"]["backup"]["barmanObjectStore"]["googleCredentials"]
    assert google == {"applicationCredentials": {"name": "gcs", "key": "APPLICATION_CREDENTIALS"}}


def test_secrets_and_optional_image_pull_secret() -> None:
    """Guards the Secrets the manifests read (pefm-database url, pefm-tokens ingest/admin/webhook/shadow; the
    database roles and pefm-signing: test_database_roles_and_the_signing_key) and the ghcr.io pull Secret, created
    only when a registry user is given, whose name is an output."""
    tokens = resource(DATA, "random_password.token")
    assert all(name in tokens["for_each"] for name in ('"ingest"', '"admin"', '"webhook"', '"shadow"'))
    registry = resource(DATA, "kubernetes_secret_v1.registry")
    assert registry["type"] == "kubernetes.io/dockerconfigjson"
    assert "local.pull_secret" in registry["count"]
    assert locals_of(DATA)["pull_secret"] == "${var.registry_username != null}"
    assert default_of(DATA, "registry_server") == "ghcr.io"
    assert "image_pull_secret" in blocks(DATA, "output")
    assert blocks(DATA, "variable")["registry_token"]["sensitive"] is True


def test_the_cache_secret_holds_a_key_of_its_own_for_the_entries() -> None:
    """Guards what knative/base/inference.yaml reads from pefm-cache: the URL and, apart from the
    server's password, a generated key of its own (PEFM_CACHE_KEY, at least 32 characters) that
    tags the entries the inference revisions keep there."""
    data = resource(DATA, "kubernetes_secret_v1.cache")["data"]
    assert set(data) == {"password", "url", "entry-key"}
    assert data["entry-key"] == "${random_password.cache_entry_key[0].result}"
    assert "random_password.cache[0].result" in data["url"] and "cache_entry_key" not in data["url"]
    key = resource(DATA, "random_password.cache_entry_key")
    assert key["length"] >= 32 and key["special"] is False


def test_the_cache_secret_exists_only_where_the_cache_is_deployed() -> None:
    """Guards the cache's optionality (issue: the Secret was always made): the functions take
    pefm-cache's url to mean the cache runs and never fall back from it, so a cluster without
    knative/cache must get no such Secret. It and its passwords exist only with deploy_cache, which
    every example and the platform module pass on, and whose default matches the deploy guide:
    true, and terraform/README.md applies knative/cache."""
    for address in ("kubernetes_secret_v1.cache", "random_password.cache", "random_password.cache_entry_key"):
        assert resource(DATA, address).get("count") == "${var.deploy_cache ? 1 : 0}", f"{address} ignores deploy_cache"
    assert blocks(DATA, "variable")["deploy_cache"]["type"] == "bool"
    callers = {folder: "data" for folder in [MODULES / "platform"]} | {e: "platform" for e in EXAMPLES.iterdir()}
    for folder, module in callers.items():
        assert blocks(folder, "module")[module].get("deploy_cache") == "${var.deploy_cache}", folder.name
        assert default_of(folder, "deploy_cache") is True, folder.name
    guide = (TERRAFORM / "README.md").read_text()
    assert "kubectl apply -k ../../../knative/cache" in guide, "the deploy guide no longer applies the cache"


def test_database_roles_and_the_signing_key() -> None:
    """Guards least privilege on the cluster: pefm-database holds the owner's url (the migrator's) plus a
    generated password and URL for every role pefm creates (pefm.storage.roles), each URL that role's on the
    owner's host (in-cluster or managed); pefm-signing holds an Ed25519 pair, private as PKCS#8 PEM (what
    PEFM_SIGNING_KEY reads) and public as PEM; the URLs are sensitive outputs, the public key a plain one."""
    from pefm.storage.roles import COMPONENTS

    assert set(locals_of(DATA)["components"]) == set(COMPONENTS)
    passwords = resource(DATA, "random_password.role")
    assert passwords["for_each"] == "${toset(local.components)}" and passwords["special"] is False
    assert passwords["length"] >= 24
    data = resource(DATA, "kubernetes_secret_v1.database")["data"]
    for part in (
        "{url = local.database_url}",
        '"${c}-url" => local.role_urls[c]',
        '"${c}-password" => random_password.role[c].result',
    ):
        assert part in data, f"pefm-database lacks {part}"
    urls = locals_of(DATA)
    assert "pefm_${c}:${random_password.role[c].result}@" in urls["role_urls"]
    assert "var.managed_database_url" in urls["url_parts"] and "${local.rw_host}:5432/" in urls["url_parts"]
    assert resource(DATA, "tls_private_key.signing")["algorithm"] == "ED25519"
    signing = resource(DATA, "kubernetes_secret_v1.signing")
    assert signing["metadata"][0]["name"] == "pefm-signing"
    assert signing["data"]["private"] == "${tls_private_key.signing.private_key_pem_pkcs8}"
    assert "tls_private_key.signing.public_key_pem" in urls["verify_keys"]
    assert signing["data"]["public"] == "${local.verify_keys}"
    for folder in (DATA, MODULES / "platform"):
        outputs = blocks(folder, "output")
        assert outputs["database_url"]["sensitive"] is True and outputs["role_database_urls"]["sensitive"] is True
        assert "verify_keys" in outputs
        [settings] = parse(folder / "versions.tf")["terraform"]
        providers = {k: v for entry in settings["required_providers"] for k, v in entry.items()}
        assert providers["tls"]["source"] == "hashicorp/tls", folder.name


def test_gpu_runtime_handlers_per_cloud() -> None:
    """Guards the RuntimeClass handler: AKS GPU nodes define nvidia-container-runtime (no runc), EKS AL2023
    NVIDIA nodes nvidia, GKE runc; the AKS choice carries its evidence."""
    knative = MODULES / "knative"
    assert locals_of(knative)["runtime_handlers"] == {
        "eks": "nvidia",
        "gke": "runc",
        "aks": "nvidia-container-runtime",
        "existing": "nvidia",
    }
    assert "AgentBaker" in (knative / "main.tf").read_text()


def test_no_module_call_defers_platform_data_sources() -> None:
    """Guards the first plan: no depends_on on module.platform (it defers the knative module's data
    sources, and so its for_each keys, to apply time); EKS passes its StorageClass as a value instead."""
    for example in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        assert "depends_on" not in blocks(example, "module")["platform"], example.name
    platform = blocks(EXAMPLES / "eks", "module")["platform"]
    assert platform["storage_class"] == "${kubernetes_storage_class_v1.gp3.metadata[0].name}"


def test_gke_enables_its_apis_and_nats_private_nodes() -> None:
    """Guards GKE: the APIs the module uses are enabled by Terraform (and left on at destroy), the cluster
    waits for them, and private nodes get a Cloud Router + Cloud NAT for public image pulls."""
    gke = MODULES / "gke"
    services = resource(gke, "google_project_service.this")
    assert services["disable_on_destroy"] is False
    apis = locals_of(gke)["apis"]
    for api in ("container", "compute", "cloudkms", "iam", "binaryauthorization"):
        assert f'"{api}.googleapis.com"' in apis, api
    assert "google_project_service.this" in str(resource(gke, "google_container_cluster.this")["depends_on"])
    router = resource(gke, "google_compute_router.nat")
    nat = resource(gke, "google_compute_router_nat.nat")
    assert router["network"] == "${var.network}"
    assert nat["router"] == "${google_compute_router.nat[0].name}"
    assert nat["source_subnetwork_ip_ranges_to_nat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    assert default_of(gke, "create_cloud_nat") is True


def test_flagger_is_pinned_and_reads_the_monitoring_prometheus() -> None:
    """Guards Flagger: the flagger chart from flagger.app at 1.44.0 (Flagger v1.44.0) with its CRDs, the
    Knative provider, and metricsServer = the monitoring module's Prometheus, passed through platform,
    which outputs the same address for the Canary's MetricTemplates."""
    knative = MODULES / "knative"
    flagger = resource(knative, "helm_release.flagger")
    assert (flagger["chart"], flagger["repository"]) == ("flagger", "https://flagger.app")
    assert flagger["version"] == "${var.flagger_chart_version}"
    assert default_of(knative, "flagger_chart_version") == "1.44.0"
    assert flagger["skip_crds"] is False
    values = flagger["values"][0]
    assert 'meshProvider = "knative"' in values and "metricsServer = var.prometheus_url" in values
    platform = MODULES / "platform"
    assert blocks(platform, "module")["knative"]["prometheus_url"] == "${module.monitoring.prometheus_url}"
    assert blocks(platform, "output")["prometheus_url"]["value"] == "${module.monitoring.prometheus_url}"
    url = blocks(MODULES / "monitoring", "output")["prometheus_url"]["value"]
    assert url.startswith("http://${local.release}-prometheus.${var.namespace}.svc"), url
    assert locals_of(MODULES / "monitoring")["release"] == "kube-prometheus-stack"


def test_prometheus_scrapes_the_annotated_pefm_pods() -> None:
    """Guards that kube-prometheus-stack scrapes PEFM's pods annotated prometheus.io/scrape at their
    annotated port and path (it does not by default), once: the PodMonitor no longer scrapes user-port."""
    monitoring = MODULES / "monitoring"
    job = locals_of(monitoring)["annotated_pods"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["${var.app_namespace}"]}}]
    rules = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    keep = rules[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert (keep["action"], keep["regex"]) == ("keep", "true")
    assert rules[("__meta_kubernetes_pod_annotation_prometheus_io_path",)]["target_label"] == "__metrics_path__"
    port = rules[("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port")]
    assert port["target_label"] == "__address__"
    stack = resource(monitoring, "helm_release.stack")["values"][0]
    assert "additionalScrapeConfigs = [local.annotated_pods]" in stack
    pod_monitor = resource(monitoring, "kubectl_manifest.pefm_pods")["yaml_body"]
    assert "user-port" not in pod_monitor


def test_cd_trust_is_optional_and_pinned_to_the_deploying_environment() -> None:
    """Guards the examples' OIDC trust for CD: created only with github_repository, it accepts only tokens
    of that repository's jobs in github_environment (production by default, as the CD jobs run), and
    the AWS role's sessions last as long as the workflow asks for (6 h)."""
    for cloud in ("eks", "gke", "aks"):
        example = EXAMPLES / cloud
        assert (example / "cd.tf").exists(), cloud
        assert default_of(example, "github_repository") is None, cloud
        assert default_of(example, "github_environment") == "production", cloud
        text = (example / "cd.tf").read_text()
        assert ":environment:${var.github_environment}" in text, cloud
    assert "${local.github_subject}" in str(
        typed_blocks(EXAMPLES / "eks", "data")["aws_iam_policy_document.github_trust"]
    )
    assert resource(EXAMPLES / "eks", "aws_iam_role.github_cd")["max_session_duration"] >= 21600
    credential = resource(EXAMPLES / "aks", "azurerm_federated_identity_credential.github_cd")
    assert credential["issuer"] == "https://token.actions.githubusercontent.com"
    assert credential["audience"] == ["api://AzureADTokenExchange"]
    provider = resource(EXAMPLES / "gke", "google_iam_workload_identity_pool_provider.github")
    assert provider["attribute_condition"] == "assertion.sub == '${local.github_subject}'"


# --- review fixes: what `terraform plan` and a real cloud would have refused ----------------------


def block_text(path: Path, header: str) -> str:
    """The source text of the top-level block that starts with ``header`` (e.g. 'output "x"') in a .tf file."""
    found = re.search(rf"^{re.escape(header)} \{{\n.*?^\}}\n", path.read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"{path} has no {header} block"
    return found.group(0)


def test_database_cluster_output_plans_with_a_managed_url_or_without(tmp_path: Path) -> None:
    """Guards the plan (validate never sees it): `database_cluster` derives from the sensitive
    managed_database_url through local.in_cluster, and every example outputs it as a plain value, so
    without nonsensitive() `terraform plan` stops with "Output refers to sensitive values". The chain
    data -> platform -> example is rebuilt from the real files (built-in only, no provider) and planned."""
    if shutil.which("terraform") is None:
        pytest.fail("the terraform binary (1.11.4) is not on PATH: these plans cannot run")
    [in_cluster] = [
        line for line in (DATA / "main.tf").read_text().splitlines() if re.match(r"\s*in_cluster\s*=", line)
    ]
    data, platform, root = tmp_path / "data", tmp_path / "platform", tmp_path / "root"
    for folder in (data, platform, root):
        folder.mkdir()
    shutil.copy(DATA / "variables.tf", data)
    shutil.copy(DATA / "cluster.tf", data)
    (data / "main.tf").write_text(
        f"locals {{\n{in_cluster}\n}}\n" + block_text(DATA / "outputs.tf", 'output "database_cluster"')
    )
    shutil.copy(MODULES / "platform" / "variables.tf", platform)
    calls = blocks(MODULES / "platform", "module")["data"]
    assert calls["managed_database_url"] == "${var.managed_database_url}"
    (platform / "main.tf").write_text(
        'module "data" {\n  source               = "../data"\n  managed_database_url = var.managed_database_url\n}\n'
        + block_text(MODULES / "platform" / "outputs.tf", 'output "database_cluster"')
    )
    outputs = {
        example.name: block_text(example / "outputs.tf", 'output "database_cluster"') for example in EXAMPLES.iterdir()
    }
    variable = block_text(EXAMPLES / "existing-cluster" / "variables.tf", 'variable "managed_database_url"')
    assert "sensitive   = true" in variable
    (root / "main.tf").write_text(
        variable
        + 'module "platform" {\n  source               = "../platform"\n  platform             = "existing"\n'
        + '  gpu_node_selector    = {}\n  gpu_node_taint       = { key = "k", value = "v", effect = "NoSchedule" }\n'
        + "  managed_database_url = var.managed_database_url\n}\n"
    )
    subprocess.run(
        ["terraform", "init", "-input=false"], cwd=root, env=OFFLINE, capture_output=True, check=True, timeout=120
    )
    for example, output in outputs.items():
        (root / "outputs.tf").write_text(output)
        for args in (
            [],
            ["-var", "managed_database_url=postgresql://pefm:secret@db.example.com:5432/pefm?sslmode=require"],
        ):
            done = subprocess.run(
                ["terraform", "plan", "-input=false", "-no-color", *args],
                cwd=root,
                env=OFFLINE,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, f"{example} {args}: {done.stdout}{done.stderr}"
            # a null output is no output: only the in-cluster plan shows it
            shown = '+ database_cluster = "pefm-data/pefm-db"' in done.stdout
            assert shown is not bool(args), f"{example} {args}: {done.stdout}"


def test_gke_control_plane_reaches_the_admission_webhooks() -> None:
    """Guards GKE's private control plane: its own firewall rule opens 443 and 10250 only, so a rule from
    master_ipv4_cidr_block to the nodes (by the node pools' service account: they carry no tags) opens
    Knative's webhooks (8443) and CloudNativePG's (9443)."""
    gke = MODULES / "gke"
    rule = resource(gke, "google_compute_firewall.webhooks")
    assert rule["direction"] == "INGRESS" and rule["network"] == "${var.network}"
    assert rule["source_ranges"] == ["${var.master_ipv4_cidr_block}"]
    for pool in ("cpu", "gpu"):
        account = resource(gke, f"google_container_node_pool.{pool}")["node_config"][0]["service_account"]
        assert rule["target_service_accounts"] == [account], pool
    [allow] = rule["allow"]
    assert allow["protocol"] == "tcp" and {"8443", "9443"} <= set(allow["ports"])


def test_aks_providers_wait_for_rbac_and_the_cluster_may_manage_its_subnet() -> None:
    """Guards AKS's first apply: the outputs the kubernetes, helm and kubectl providers are configured
    from wait for Terraform's RBAC Cluster Admin (and its propagation), the CPU pool (the system pool is
    tainted) and the cluster identity's Network Contributor on the node subnet (Kourier's load balancer)."""
    aks = MODULES / "aks"
    outputs = blocks(aks, "output")
    for name in ("host", "cluster_ca_certificate", "exec_auth"):
        waits = outputs[name].get("depends_on", [])
        for needed in (
            "time_sleep.rbac_propagation",
            "azurerm_kubernetes_cluster_node_pool.cpu",
            "azurerm_role_assignment.cluster_network",
        ):
            assert f"${{{needed}}}" in waits, f"output {name} does not wait for {needed}"
    sleep = resource(aks, "time_sleep.rbac_propagation")
    assert "azurerm_role_assignment.terraform_admin" in str(sleep["triggers"])
    network = resource(aks, "azurerm_role_assignment.cluster_network")
    assert network["scope"] == "${var.vnet_subnet_id}" and network["role_definition_name"] == "Network Contributor"
    assert network["principal_id"] == "${azurerm_kubernetes_cluster.this.identity[0].principal_id}"
    assert resource(aks, "azurerm_kubernetes_cluster.this")["identity"][0]["type"] == "SystemAssigned"
    assert blocks(EXAMPLES / "aks", "module")["cluster"]["vnet_subnet_id"] == "${azurerm_subnet.nodes.id}"


# cluster-autoscaler chart -> its appVersion's minor (kubernetes/autoscaler, cluster-autoscaler-chart-* tags)
AUTOSCALER_CHART_MINOR = {"9.43.2": "1.31", "9.45.0": "1.32", "9.47.0": "1.33", "9.52.0": "1.34", "9.59.0": "1.35"}


def test_default_kubernetes_versions_are_supported_and_the_autoscaler_matches() -> None:
    """Guards the default minors against end of support (December 2026: EKS 1.31's extended support
    ended 26 Nov 2026, AKS 1.31's support in Nov 2025; 1.35 is supported on both until March 2027)
    and the EKS example's cluster-autoscaler chart, whose minor must be the cluster's."""
    minors = {name: default_of(MODULES / name, "kubernetes_version") for name in ("eks", "aks")}
    for name, minor in minors.items():
        assert tuple(int(part) for part in minor.split(".")) >= (1, 35), f"{name} defaults to {minor}"
    chart = resource(EXAMPLES / "eks", "helm_release.cluster_autoscaler")["version"]
    assert AUTOSCALER_CHART_MINOR.get(chart) == minors["eks"], (
        f"cluster-autoscaler chart {chart} vs EKS {minors['eks']}"
    )


def device_plugin_and_handler(tmp: Path, platform: str, **variables: str) -> tuple[bool, str]:
    """The knative module's device_plugin and runtime_handler locals for a platform, evaluated by
    ``render`` of its variables and those locals alone."""
    knative, source = MODULES / "knative", tmp / "source"
    if not source.exists():
        source.mkdir()
        shutil.copy(knative / "variables.tf", source)
        lines = [
            line
            for line in (knative / "main.tf").read_text().splitlines()
            if re.match(r"\s*(runtime_handlers|runtime_handler|device_plugin)\s*=", line)
        ]
        assert len(lines) == 3, lines
        (source / "main.tf").write_text("locals {\n" + "\n".join(lines) + "\n}\n")
    required = {
        "platform": platform,
        "gpu_node_selector": "{}",
        "gpu_node_taint": '{key = "k", value = "v", effect = "NoSchedule"}',
        "prometheus_url": "http://p:9090",
    }
    (tmp / "work").mkdir(exist_ok=True)
    out = render(
        source,
        ["variables.tf", "main.tf"],
        {"device_plugin": "local.device_plugin", "runtime_handler": "local.runtime_handler"},
        tmp / "work",
        **{**required, **variables},
    )
    return out["device_plugin"], out["runtime_handler"]


def test_existing_cluster_takes_its_gpu_settings_and_keeps_the_gpu_operators_device_plugin(tmp_path: Path) -> None:
    """Guards the existing-cluster path terraform/README.md describes: its example takes storage_class,
    the GPU nodes' selector and taint, the runtime handler and the device plugin switch, and passes them
    through modules/platform to the knative module; NVIDIA's device plugin is installed by default on
    EKS and AKS only (GKE and the GPU operator of an existing cluster run their own)."""
    example = blocks(EXAMPLES / "existing-cluster", "module")
    for name in ("storage_class", "nvidia_runtime_handler", "install_nvidia_device_plugin"):
        assert example["platform"][name] == f"${{var.{name}}}", name
    for name in ("gpu_node_selector", "gpu_node_taint"):
        assert example["cluster"][name] == f"${{var.{name}}}", name
        assert default_of(EXAMPLES / "existing-cluster", name) == default_of(MODULES / "existing-cluster", name)
    knative = blocks(MODULES / "platform", "module")["knative"]
    for name in ("nvidia_runtime_handler", "install_nvidia_device_plugin"):
        assert knative[name] == f"${{var.{name}}}", name
        assert default_of(MODULES / "platform", name) is None
    expected = {
        "eks": (True, "nvidia"),
        "aks": (True, "nvidia-container-runtime"),
        "gke": (False, "runc"),
        "existing": (False, "nvidia"),
    }
    for platform, want in expected.items():
        assert device_plugin_and_handler(tmp_path, platform) == want, platform
    assert device_plugin_and_handler(
        tmp_path, "existing", install_nvidia_device_plugin="true", nvidia_runtime_handler="nvidia-cdi"
    ) == (True, "nvidia-cdi")


def test_knative_crds_are_established_before_their_resources() -> None:
    """Guards the CRD step: `wait` only waits for a deleted object's finalizers, so each CRD waits for its
    Established condition (alekc/kubectl's wait_for, correct from 2.1.2) before namespaces and objects."""
    knative = MODULES / "knative"
    crds = resource(knative, "kubectl_manifest.crds")
    assert crds["wait_for"] == [{"condition": [{"type": "Established", "status": "True"}]}]
    assert "kubectl_manifest.crds" in str(resource(knative, "kubectl_manifest.namespaces")["depends_on"])
    [settings] = parse(knative / "versions.tf")["terraform"]
    kubectl = {k: v for entry in settings["required_providers"] for k, v in entry.items()}["kubectl"]
    assert kubectl["source"] == "alekc/kubectl" and ">= 2.1.2" in kubectl["version"]


def test_cd_may_read_the_prometheus_flagger_runs_with() -> None:
    """Guards CD's fallback when PEFM_PROMETHEUS_URL is unset (cd.yml reads the -metrics-server of
    flagger-system/flagger): cd-access lets the CD identity get that Deployment and nothing else there,
    the EKS and GKE examples name Flagger's namespace, and the AKS example grants RBAC Reader on it."""
    access = MODULES / "cd-access"
    [rule] = resource(access, "kubernetes_role_v1.flagger")["rule"]
    assert (rule["api_groups"], rule["resources"], rule["verbs"]) == (["apps"], ["deployments"], ["get"])
    assert (
        rule["resource_names"] == ["${var.flagger_deployment}"]
        and default_of(access, "flagger_deployment") == "flagger"
    )
    assert default_of(access, "flagger_namespace") == "flagger-system"
    for cloud in ("eks", "gke"):
        assert (
            blocks(EXAMPLES / cloud, "module")["cd_access"]["flagger_namespace"]
            == "${module.platform.flagger_namespace}"
        )
    grants = resource(EXAMPLES / "aks", "azurerm_role_assignment.github_cd")["for_each"]
    assert "namespaces/${module.platform.flagger_namespace}" in grants and "RBAC Reader" in grants
    cd = (ROOT / ".github" / "workflows" / "cd.yml").read_text()
    assert "PEFM_PROMETHEUS_URL" in cd.split("\nname: cd\n")[0], "cd.yml's header does not list PEFM_PROMETHEUS_URL"
    assert "get deployment flagger" in cd and "metrics-server" in cd
