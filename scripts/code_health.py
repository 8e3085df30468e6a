"""Two checks on the shape of the code, printed for a reader (issue 13's yardsticks):

1. the longest functions under ``singleshot/engine/`` (the aim: none over ~60 lines);
2. the process-wide state that importing every singleshot module changes (the aim: none): environment variables and
   warning filters, measured in fresh processes with the third-party modules imported first.

    .venv/bin/python scripts/code_health.py            # both
    .venv/bin/python scripts/code_health.py --top 20
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Pass 1: import every singleshot module and list the other modules that came with them.
_LIST = r"""
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
_PROBE = r"""
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
print(json.dumps({"modules": len(mods["ours"]), "env": changed,
                  "filters": [repr(f) for f in warnings.filters if f not in filters]}))
"""


def longest_functions(folder: Path, top: int = 10) -> list[tuple[int, str]]:
    """``[(lines, "file:line name"), ...]``, longest first, for every function and method under ``folder``."""
    rows = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                rows.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)[:top]


def import_side_effects() -> dict[str, object]:
    """``{"modules": N, "env": [changed variables], "filters": [added warning filters]}`` of importing singleshot."""
    listed = subprocess.run([sys.executable, "-c", _LIST], capture_output=True, text=True, check=True).stdout
    probe = subprocess.run([sys.executable, "-c", _PROBE], input=listed, capture_output=True, text=True, check=True)
    return json.loads(probe.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args()
    print("longest functions in singleshot/engine/ (aim: <= ~60 lines):")
    for lines, where in longest_functions(ROOT / "singleshot" / "engine", args.top):
        print(f"  {lines:4d}  {where}")
    effects = import_side_effects()
    print(f"import-time side effects of {effects['modules']} modules: environment {effects['env'] or 'none'}, "
          f"warning filters {effects['filters'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
