"""Collect every notebook under nbs/ as a pytest item that runs `nbdev_test --path <notebook>`.

nbdev_test is what executes a notebook's cells as its tests; running it once per notebook, in a
subprocess, isolates notebooks from each other (models, servers, memory) and lets pytest count,
report and parallelise them. Extra nbdev test flags (e.g. `slow`) come from LLAVA_NB_TEST_FLAGS.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NBS = ROOT / "nbs"


def pytest_collect_file(parent, file_path):
    p = Path(file_path)
    if p.suffix != ".ipynb" or NBS not in p.parents: return None
    if any(part.startswith((".", "_")) for part in p.relative_to(NBS).parts): return None
    return NotebookFile.from_parent(parent, path=p)


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name=self.path.relative_to(NBS).as_posix())


class NotebookItem(pytest.Item):
    def runtest(self):
        cmd = [str(Path(sys.executable).parent / "nbdev_test"), "--path", str(self.path), "--do_print"]
        if os.environ.get("LLAVA_NB_TEST_FLAGS"): cmd += ["--flags", os.environ["LLAVA_NB_TEST_FLAGS"]]
        env = dict(os.environ)
        if os.environ.get("PYTEST_XDIST_WORKER") is not None:  # notebooks run side by side: one math thread each, or
            env.setdefault("OMP_NUM_THREADS", "1")          # their thread pools fight over the cores (measured 10x slower)
            env.setdefault("MKL_NUM_THREADS", "1")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        self.output = proc.stdout + proc.stderr
        if proc.returncode != 0 or "Success." not in proc.stdout:
            raise NotebookFailed(self.output)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, NotebookFailed): return f"nbdev_test failed on {self.name}:\n{excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"notebook {self.name}"


class NotebookFailed(Exception):
    pass


def pytest_terminal_summary(terminalreporter):
    "End with the plain `N passed, N failed` line that CI reads."
    stats = terminalreporter.stats
    passed, failed = len(stats.get("passed", [])), len(stats.get("failed", [])) + len(stats.get("error", []))
    skipped = len(stats.get("skipped", []))
    terminalreporter.write_line(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
