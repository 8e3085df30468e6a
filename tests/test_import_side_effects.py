"""Importing singleshot (every module of it) changes no process-wide state: no environment variables, no warning
filters. Settings that matter for speed are applied where a command starts (see ``singleshot.cli.main``)."""

from __future__ import annotations

import json
import subprocess
import sys

# Pass 1: import every singleshot module and list the other modules that came with them.
LIST = r"""
import importlib, json, pkgutil, sys
import singleshot
names = [m.name for m in pkgutil.walk_packages(singleshot.__path__, "singleshot.")
         if not m.name.endswith("__main__") and ".dali" not in m.name]
for name in names:
    importlib.import_module(name)
others = sorted(n for n in sys.modules if n.split(".")[0] != "singleshot" and not n.startswith("_"))
print(json.dumps({"ours": names, "others": others}))
"""

# Pass 2, a fresh process: the third-party modules first (they change both on their own: torch, numpy, onnx, ...),
# then the snapshot, then singleshot's modules.
PROBE = r"""
import importlib, json, os, sys, warnings
mods = json.loads(sys.stdin.read())
for name in mods["others"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
env, filters = dict(os.environ), list(warnings.filters)
import singleshot
for name in mods["ours"]:
    importlib.import_module(name)
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
print(json.dumps({"env": changed, "filters": [repr(f) for f in warnings.filters if f not in filters]}))
"""


def test_importing_every_module_changes_no_environment_and_no_warning_filter() -> None:
    listed = subprocess.run([sys.executable, "-c", LIST], capture_output=True, text=True, check=True).stdout
    assert len(json.loads(listed)["ours"]) > 40  # the walk found the package's modules
    probe = subprocess.run([sys.executable, "-c", PROBE], input=listed, capture_output=True, text=True, check=True)
    assert json.loads(probe.stdout.strip().splitlines()[-1]) == {"env": [], "filters": []}
