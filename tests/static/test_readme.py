"""The README's deploy guide names only files and folders that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# repository paths as the guide writes them: under a top-level folder of ours, or a root file
PATH = re.compile(
    r"(?<![\w./-])((?:\.github|\.ci|docker|deploy|terraform|knative|dashboard|functions|tools|src)/[\w./<>*-]*"
    r"|docker-compose\.yml|\.env\.example|pyproject\.toml)"
)


def deploy_guide() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Deploy\n")
    return text[start : text.index("\n## ", start + 1)]


def named_paths(text: str) -> set[str]:
    """Every path in ``text`` (``*`` globs kept); ``<image>`` placeholders and trailing punctuation dropped."""
    paths = set()
    for match in PATH.findall(text):
        path = match.rstrip(".,:;)")
        if "<" not in path:
            paths.add(path)
    return paths


def test_every_path_the_deploy_guide_names_exists():
    """A renamed Dockerfile, module or workflow breaks this test, not the reader's deploy."""
    paths = named_paths(deploy_guide())
    assert {"docker-compose.yml", ".env.example", "terraform/examples/eks", "knative/overlays/gpu"} <= paths
    assert {".github/workflows/cd.yml", "docker/locks/*.txt", "terraform/modules/existing-cluster"} <= paths
    missing = sorted(p for p in paths if not any(ROOT.glob(p)))
    assert missing == [], f"the deploy guide names paths that do not exist: {missing}"


def test_the_path_finder_sees_a_missing_path():
    """The check above can fail: a path that does not exist is found and reported."""
    [path] = named_paths("run `terraform/examples/nowhere` then stop.")
    assert path == "terraform/examples/nowhere" and not (ROOT / path).exists()
