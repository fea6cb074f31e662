"""llava_nb's side of the interop tests: run a task in the reference's own environment (a separate process) and read its answer."""
import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = Path(os.environ.get("LLAVA_NB_REFERENCE", ROOT / ".reference")) / "bin" / "python"
REFERENCE_SIDE = Path(__file__).with_name("reference_side.py")
MISSING = (f"no reference environment at {REFERENCE_PYTHON.parent.parent}: run `make reference` (tools/reference_env.sh "
           "installs llava-torch 1.2.2.post1 and transformers 4.37.2 from PyPI into it)")


def reference_env() -> dict:
    "The environment for a reference process: its own Python, no llava_nb on the path, offline, one math thread per process."
    if not REFERENCE_PYTHON.exists(): raise FileNotFoundError(MISSING)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    return env


def run_reference(task: str, timeout: int = 600, **request):
    "Run `task` of reference_side.py in the reference's Python; returns what it saved."
    with tempfile.TemporaryDirectory() as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "out.pt"
        req.write_text(json.dumps({"task": task, **request}, default=str))
        proc = subprocess.run([str(REFERENCE_PYTHON), str(REFERENCE_SIDE), str(req), str(out)], env=reference_env(),
                              capture_output=True, text=True, timeout=timeout, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"the reference failed on {task} {str(request)[:300]}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return torch.load(out, weights_only=False)
