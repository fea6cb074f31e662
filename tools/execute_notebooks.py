#!/usr/bin/env python
"""Execute notebooks in place so that their saved outputs (shown by GitHub, the README and the docs
site) are current: `python tools/execute_notebooks.py [--all] [nbs/xx.ipynb ...]` (default: all of nbs/).
Run `nbdev_clean` afterwards. Cells flagged with a test flag (`#| notest`, `#| slow`, `#| gpu`)
keep their old outputs, unless `--all` is given (then they run too, e.g. to record a measurement)."""
import os
import sys
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("notest", "slow", "gpu")


def _skip(cell) -> bool:
    return any(line.strip() in (f"#| {f}" for f in FLAGS) or line.strip() == "#|eval: false" or line.strip() == "#| eval: false"
               for line in cell.source.splitlines()[:5])


def _script_entry(cell) -> bool:
    "The `if __name__ == \"__main__\": main()` line of a script module: in a kernel `__name__` is `__main__` too, so it would parse the kernel's argv."
    return 'if __name__ == "__main__"' in cell.source


def execute(path: Path, run_all: bool = False) -> None:
    nb = read_nb(path)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        shell = CaptureShell(path)
        for cell in nb.cells:
            if cell.cell_type != "code" or (_skip(cell) and not run_all) or _script_entry(cell): continue
            shell.cell(cell)
            if shell.exc: raise RuntimeError(f"{path.name}: cell failed:\n{cell.source}") from shell.exc
    finally: os.chdir(cwd)
    write_nb(nb, path)
    print(f"executed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--all"]
    paths = [Path(p).resolve() for p in args] or sorted((ROOT / "nbs").glob("[!_]*.ipynb"))
    for p in paths: execute(p, run_all="--all" in sys.argv)
