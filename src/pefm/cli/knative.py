"""``pefm knative validate``: Knative manifests against the CRDs and the webhook's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pefm.cli import console, err, knative_app


@knative_app.command("validate")
def validate(
    paths: Annotated[list[Path], typer.Argument(help="manifest files or kustomization folders")],
    crds: Annotated[
        Path | None, typer.Option(help="folder with the Knative CRDs (default ../shared/knative-crds)")
    ] = None,
) -> None:
    """Validate every Knative Service in PATHS; exit 1 listing each problem."""
    from pefm.knative.validate import default_crds, render, service_schema, validate_documents

    crds = crds or default_crds()
    if crds is None:
        err.print("[red]error:[/red] no Knative CRDs found: pass --crds")
        raise typer.Exit(2)
    schema = service_schema(crds)
    failed = False
    for path in paths:
        docs = render(path)
        problems = validate_documents(docs, schema)
        services = sum(1 for d in docs if d.get("kind") == "Service")
        if problems:
            failed = True
            for problem in problems:
                err.print(f"[red]{path}[/red]: {problem}", highlight=False)
        else:
            console.print(f"{path}: {services} Knative Service(s) valid", highlight=False)
    if failed:
        raise typer.Exit(1)
