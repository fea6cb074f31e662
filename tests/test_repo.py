"""Repository checks that cannot live in a notebook: the library and README are generated from the
notebooks and must match them, and notebooks must be committed clean."""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _copy_project(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in ("settings.ini", "nbs", "llava_nb"):
        src = ROOT / name
        (shutil.copytree(src, dst / name, ignore=ignore, symlinks=True) if src.is_dir() else shutil.copy2(src, dst / name))
    return dst


def _differing(a: Path, b: Path, pattern: str) -> list:
    names = {p.relative_to(a) for p in a.rglob(pattern)} | {p.relative_to(b) for p in b.rglob(pattern)}
    return sorted(str(n) for n in names
                  if not ((a / n).exists() and (b / n).exists() and filecmp.cmp(a / n, b / n, shallow=False)))


def _regenerate_and_compare(tmp_path, command: str, folder: str, pattern: str) -> list:
    "Run an nbdev command on a copy of the project; the files under `folder` it would change."
    work = _copy_project(tmp_path)
    subprocess.run([BIN / command], cwd=work, check=True, capture_output=True)
    return _differing(ROOT / folder, work / folder, pattern)


def test_library_matches_notebooks(tmp_path):
    "`nbdev_export` must leave llava_nb/ unchanged: the library is generated from nbs/, never edited by hand."
    diff = _regenerate_and_compare(tmp_path, "nbdev_export", "llava_nb", "*.py")
    assert not diff, f"nbdev_export changes {diff}: edit the notebooks, run nbdev_export, and commit both"


def test_notebooks_are_clean(tmp_path):
    "`nbdev_clean` must leave nbs/ unchanged (no outputs' execution counts, no stray metadata)."
    diff = _regenerate_and_compare(tmp_path, "nbdev_clean", "nbs", "*.ipynb")
    assert not diff, f"nbdev_clean changes {diff}: run nbdev_clean before committing"


def test_readme_matches_index():
    "README.md is generated from nbs/index.ipynb by tools/make_readme.py."
    out = subprocess.run([sys.executable, ROOT / "tools" / "make_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
