"""Code prepended to a subprocess script so that ``modeling_evalign`` cannot be imported there.

Used by the ``trust_remote_code`` tests: a checkpoint must load from its bundled module files alone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PRELUDE = f'''
import importlib.abc as _abc, os as _os, sys as _sys


class _BlockEvalign(_abc.MetaPathFinder):
    # the editable install has a finder of its own: refuse the package before any finder sees it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "modeling_evalign":
            raise ModuleNotFoundError(f"blocked for this test: {{name}}")
        return None


_sys.meta_path.insert(0, _BlockEvalign())
_sys.path[:] = [p for p in _sys.path if _os.path.realpath(p or _os.getcwd()) != {str(REPO)!r}]
'''


def without_package(code: str) -> str:
    """``code`` (dedented) preceded by the blocking prelude."""
    return PRELUDE + textwrap.dedent(code)


def run_without_package(code: str, workdir, timeout: int = 240) -> dict:
    """Run ``without_package(code)`` in a fresh interpreter; return the JSON object of its last stdout line.

    The dynamic-module cache lives in ``workdir`` and PYTHONPATH is dropped, so only the bundled files load.
    """
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_MODULES_CACHE": str(Path(workdir) / "modules")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", without_package(code)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
