"""``pefm knative validate``: cluster manifests against the Knative and Flagger CRDs, the Kubernetes
schemas and the rules the cluster enforces beyond them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pefm.cli import console, error, knative_app


@knative_app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="manifest files or kustomization folders")],
    crds: Annotated[
        Path | None, typer.Option(help="folder with the Knative Serving CRDs (default ../shared/knative-crds)")
    ] = None,
    flagger_crds: Annotated[
        Path | None, typer.Option(help="folder with Flagger's crd.yaml (default ../shared/flagger-crds)")
    ] = None,
) -> None:
    """Validate every resource in PATHS (each path's documents together); exit 1 listing each problem.

    Kinds no schema here covers (Knative Eventing) are named as not schema-checked; unknown kinds fail."""
    from pefm.knative.core_rules import KUBERNETES_VERSION
    from pefm.knative.validate import CrdSchemas, default_crds, default_flagger_crds, render, validate_all

    crds = crds or default_crds()
    flagger_crds = flagger_crds or default_flagger_crds()
    for folder, what, option in ((crds, "Knative", "--crds"), (flagger_crds, "Flagger", "--flagger-crds")):
        if folder is None or not Path(folder).is_dir():
            error(f"no {what} CRDs found: pass {option}")
            raise typer.Exit(2)
    schemas = CrdSchemas.load(crds, flagger_crds)
    failed = False
    for path in paths:
        try:
            docs = render(path)
        except (ValueError, OSError) as problem:
            error(str(problem), label=str(path))
            failed = True
            continue
        report = validate_all(docs, schemas)
        counts = (
            ", ".join(f"{family} {n}" for family, n in sorted(report.counts.items()))
            or "no resource with a schema here"
        )
        for problem in report.problems:
            error(str(problem), label=str(path))
        if report.problems:
            failed = True
            console.print(
                f"{path}: {len(report.problems)} problem(s) in resources of {counts}", highlight=False, soft_wrap=True
            )
        else:
            console.print(
                f"{path}: valid: {counts} (Kubernetes {KUBERNETES_VERSION} schemas)", highlight=False, soft_wrap=True
            )
        if report.unchecked:
            console.print(
                f"{path}: not schema-checked (no CRD for them here): {', '.join(report.unchecked)}",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise typer.Exit(1)
