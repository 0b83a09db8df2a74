"""bench/'s scripts as modules for the tests: bench/ is not a package, and left on sys.path its
``dashboard.py`` would shadow the project's ``dashboard`` package for every test."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    """A module of bench/ by its file, under a name of its own (``bench_<name>``, registered in
    ``sys.modules``: dataclasses look their module up there); bench/ is on sys.path only while it
    loads, for its sibling imports (``from broad_run import ...``)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module
