"""The chat dashboard works in a real JupyterLab: a server on 127.0.0.1 with a token, Chromium (Playwright)
opens a copy of nbs/52_viz.chat.ipynb (its `#| eval: false` cells left out, as nbdev_test leaves them),
runs all cells, then types a question into the displayed chat widget, presses Send and waits for the
kernel's streamed answer to appear. Screenshots go to test_artifacts/jupyterlab/."""
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llava_nb.serve.controller import free_port
from llava_nb.testing import launch_chromium

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test_artifacts" / "jupyterlab"


def runnable_copy(src: Path, dst: Path) -> Path:
    "The notebook without its `#| eval: false` cells (they need the quickstart's outputs) and without saved outputs."
    nb = json.loads(src.read_text())
    keep = []
    for cell in nb["cells"]:
        head = "".join(cell["source"]).splitlines()[:4]
        if cell["cell_type"] == "code" and any(l.replace(" ", "") == "#|eval:false" for l in head): continue
        if cell["cell_type"] == "code": cell.update(outputs=[], execution_count=None)
        keep.append(cell)
    nb["cells"] = keep
    dst.write_text(json.dumps(nb))
    return dst


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 with a random token, its config and state kept in a temporary folder; yields (url, token)."
    tmp = tmp_path_factory.mktemp("lab")
    runnable_copy(ROOT / "nbs" / "52_viz.chat.ipynb", tmp / "chat.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython")}
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}",
                             f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--ServerApp.port_retries=0",
                             "--LabApp.extension_manager=readonly"]  # no PyPI look-ups
                            + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/api/status", params={"token": token}, timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited: {(tmp / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else: raise RuntimeError(f"jupyter lab did not answer on {url}: {(tmp / 'lab.log').read_text()[-2000:]}")
        yield url, token
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


def wait_kernel_idle(page, timeout: float = 120, settle: float = 3) -> None:
    "Wait until the notebook's kernel has been idle for `settle` seconds (it shows idle, then connecting, then idle on start)."
    indicator, idle_since, end = page.locator(".jp-Notebook-ExecutionIndicator"), None, time.time() + timeout
    while time.time() < end:
        status = indicator.first.get_attribute("data-status") if indicator.count() else None
        idle_since = (idle_since or time.time()) if status == "idle" else None
        if idle_since and time.time() - idle_since >= settle: return
        time.sleep(0.25)
    raise TimeoutError(f"the kernel did not become idle in {timeout} s (status {status!r})")


def test_chat_widget_answers_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    blocked = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                   else (blocked.append(route.request.url), route.abort()))
        page.goto(f"{url}/lab/tree/chat.ipynb?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
        wait_kernel_idle(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.locator("li[data-command='runmenu:run-all']").click()
        question = page.locator(".jupyter-widgets input[placeholder='Ask about the image']")
        question.wait_for(timeout=180_000)  # the notebook's last cell displays the in-kernel chat widget
        chat = page.locator(".widget-vbox").filter(has=question).last
        chat.scroll_into_view_if_needed()
        history = chat.locator(".llava-assistant")
        history.first.wait_for(timeout=60_000)  # the notebook's own test turn
        before = history.count()
        page.screenshot(path=str(SHOTS / "chat_after_run_all.png"))
        question.fill("Where is the square?")
        chat.get_by_role("button", name="Send").click()
        page.wait_for_function(f"document.querySelectorAll('.llava-assistant').length > {before}", timeout=120_000)
        page.wait_for_function("document.querySelectorAll('.llava-user').length > 0 && "
                               "[...document.querySelectorAll('.llava-user')].some(e => e.innerText.includes('Where is the square?'))",
                               timeout=30_000)
        answer = history.nth(before)
        page.wait_for_function(f"!document.querySelectorAll('.llava-assistant')[{before}].innerText.includes('▌')", timeout=60_000)  # streamed
        chat.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "chat_answered.png"))
        text = answer.inner_text()
        assert text.startswith("ASSISTANT:") and len(text.split(":", 1)[1].strip()) > 0, text
        assert question.input_value() == ""  # the box is cleared after sending
        browser.close()
