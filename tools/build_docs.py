#!/usr/bin/env python
"""Build the documentation site offline, without quarto: `python tools/build_docs.py` -> `_site/index.html`.

1. nbdev processes the notebooks into `_proc/` (the work of `nbdev_proc_nbs`, nbdev's own processors):
   `#| hide` cells dropped, `show_doc` cells rendered to markdown, backticked names linked, a raw
   front-matter cell (`title`, `description`, `output-file`) added. We drive nbdev's per-notebook
   processor (`nbdev.serve_drv.main`) rather than the `nbdev_proc_nbs` command, because that command
   first tries to install quarto and its fallback runs `pip install -e .` into the current environment
   (re-pointing a shared venv's editable install), and because one failing notebook stops it.
2. The quarto directives nbdev leaves for quarto are honoured here, in copies under `_mkdocs/docs/`:
   the front matter becomes the page's `# title` and `> summary`; `#| echo: false` + `#| output: asis`
   cells (the API reference) become markdown cells; other `#| echo: false` cells keep only their
   outputs; `#| include: false` / `#| hide` cells go; remaining `#|` lines are dropped from the code;
   pandoc attributes (`{target="_blank" ...}`) that Python-Markdown would print are removed, links to
   the quarto site become relative links; widget outputs, which need a live kernel, are dropped.
3. `mkdocs build` with mkdocs-material (`font: false`: no font download) and mkdocs-jupyter
   (`execute: false`: the saved outputs are shown) writes `_site/`, with a navigation over every
   notebook, grouped by package, titled from the front matter.

`nbs/_quarto.yml` stays as it is, for `nbdev_docs` on machines that have quarto.

Options: `--out DIR` (default `_site`), `--no-proc` (reuse `_proc/`), `--work DIR` (where `_proc/` and `_mkdocs/` go).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"model": "Model", "data": "Data", "train": "Training", "serve": "Serving", "eval": "Evaluation",
            "viz": "Dashboards", "bench": "Benchmarks"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _docs_eval(cell) -> bool | None:
    """Which cells the docs run executes: exported cells, cells of imports only, and `show_doc` cells.

    nbdev's own rule also runs any cell that mixes imports with other code, i.e. many test cells,
    which makes the docs build re-run the tests (minutes) and fail on names a skipped cell defines."""
    import ast
    if cell.cell_type != "code" or not cell.source or "nbdev_export" + "()" in cell.source: return None
    if cell.directives_.get("eval:", [""])[0].lower() == "false": return None
    if cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}: return True
    try: body = ast.parse("\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("%", "!")))).body
    except SyntaxError: return None
    return bool(body) and (all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body) or "show_doc(" in cell.source)


_PLAIN_DOC = """import inspect as _i
from IPython.display import Markdown as _M
try: _s = str(_i.signature(_o))
except (TypeError, ValueError, NameError): _s = "(...)"
_M("---\\n\\n### " + _o.__name__ + "\\n\\n```python\\n" + _o.__name__ + _s + "\\n```\\n\\n" + (vars(_o).get("__doc__") or ""))
"""


def _tolerant_exec(failures: list):
    "A replacement for nbdev's `exec_show_docs.__call__` that notes a failing cell and goes on."
    import nbdev.processors as P
    def call(self, cell):
        if not self.nb.has_docs_ or not hasattr(self, "k"): return
        if P._do_eval(cell):
            self.k.cell(cell)
            if self.k.exc:
                failures.append(f"cell {cell.idx_} ({cell.source.strip().splitlines()[-1][:60]}): {self.k.exc!r}"[:200])
                self.k.exc = None
                shown = re.search(r"^show_doc\(([\w.]+)\)\s*$", cell.source, re.M)
                if shown:  # keep an entry in the API reference: the name, the signature if it can be had, the docstring
                    source = cell.source
                    cell.source = f"_o = {shown.group(1)}\n" + _PLAIN_DOC
                    try: self.k.cell(cell)
                    finally: cell.source, self.k.exc = source, None
    return call


def proc_notebooks(cache: Path) -> tuple[Path, list[str]]:
    """Run nbdev's notebook processor over nbs/ into a fresh `cache` folder (`_proc/`), one notebook at a time in this process.

    nbdev executes cells to render the API reference (`show_doc`); which ones is `_docs_eval`'s choice.
    One failure stops nbdev; here a notebook that fails is processed again with the failing cells
    skipped (their output left out), and the failures are returned as warnings."""
    import nbdev.processors
    import nbdev.serve_drv
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.serve import _proc_file
    cfg = get_config(path=ROOT)
    path = cfg.nbs_path
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    files = nbglob(path, func=Path, file_glob="", file_re="")
    if (path / "_quarto.yml").exists(): files.append(path / "_quarto.yml")
    cwd, warnings, default_eval = os.getcwd(), [], nbdev.processors._do_eval
    os.chdir(ROOT)
    nbdev.processors._do_eval = _docs_eval
    try:
        for job in filter(None, (_proc_file(f, cache, path) for f in files)):
            try: nbdev.serve_drv.main(job)
            except Exception:
                failures, default = [], nbdev.processors.exec_show_docs.__call__
                nbdev.processors.exec_show_docs.__call__ = _tolerant_exec(failures)
                try: nbdev.serve_drv.main(job)
                finally: nbdev.processors.exec_show_docs.__call__ = default
                warnings += [f"{job[0].name}: {f}" for f in failures]
    finally: os.chdir(cwd); nbdev.processors._do_eval = default_eval
    return cache, warnings


def directives(source: str) -> tuple[dict, str]:
    "Leading `#| key: value` lines of a code cell, and the code without any `#|` line."
    opts, body = {}, []
    for line in source.splitlines():
        m = re.match(r"^#\|\s*([\w-]+)\s*(?::\s*(.*))?$", line)
        if m: opts[m.group(1)] = (m.group(2) or "true").strip()
        else: body.append(line)
    return opts, "\n".join(body).strip("\n")


def front_matter(cell: dict) -> dict:
    "Parse a raw `---` front-matter cell (a small YAML subset is all nbdev writes; PyYAML if present)."
    text = "".join(cell["source"]).strip().strip("-").strip()
    try:
        import yaml
        return yaml.safe_load(text) or {}
    except ImportError:
        return dict(re.findall(r"^(\w[\w-]*):\s*'?(.*?)'?$", text, re.M))


def fix_markdown(text: str, doc_url: str) -> str:
    "Markdown for Python-Markdown: no pandoc attributes, quarto-site links made relative."
    text = re.sub(r"\)\{[^{}\n]*\}", ")", text)  # [source](...){target="_blank" style=...}
    if doc_url: text = text.replace(doc_url, "")
    return text


def _md_cell(text: str) -> dict: return {"cell_type": "markdown", "metadata": {}, "source": text}


def convert(nb: dict, doc_url: str) -> tuple[dict, dict]:
    "Honour front matter and quarto directives in a processed notebook; returns (notebook, front matter)."
    meta, cells = {}, []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "raw" and src.lstrip().startswith("---"):
            meta = front_matter(cell)
            head = f"# {meta.get('title', '')}\n\n" + (f"> {meta['description']}\n" if meta.get("description") else "")
            cells.append(_md_cell(fix_markdown(head, doc_url)))
            continue
        if cell["cell_type"] == "markdown":
            if "AUTOGENERATED! DO NOT EDIT" in src: continue
            cells.append({**cell, "source": fix_markdown(src, doc_url)})
            continue
        if cell["cell_type"] != "code": continue
        opts, code = directives(src)
        if opts.get("hide") == "true" or opts.get("include") == "false": continue
        outputs = [o for o in cell.get("outputs", []) if WIDGET_MIME not in o.get("data", {}) and o.get("output_type") != "error"]
        if opts.get("output") == "asis":  # the output *is* markdown (show_doc): make it a markdown cell
            text = "\n".join("".join(o.get("data", {}).get("text/markdown", o.get("text", ""))) for o in outputs)
            if opts.get("echo") != "false" and code: cells.append({**cell, "source": code, "outputs": []})
            cells.append(_md_cell(fix_markdown(text, doc_url)))
            continue
        new = {**cell, "source": code, "outputs": outputs, "metadata": dict(cell.get("metadata", {}))}
        if opts.get("echo") == "false":
            if not outputs: continue
            new["metadata"]["tags"] = new["metadata"].get("tags", []) + ["remove_input"]
        if opts.get("output") == "false": new["outputs"] = []
        if not code and not new["outputs"]: continue
        cells.append(new)
    return {**nb, "cells": cells}, meta


def page_name(nb_path: Path, meta: dict) -> str:
    "The page's file stem: quarto's `output-file` (so nbdev's cross-links resolve), else the notebook name without its number."
    out = meta.get("output-file")
    if out: return Path(out).stem
    return re.sub(r"^\d+[a-z]?_", "", nb_path.stem)


def section(stem: str, nb_path: Path) -> str | None:
    "The navigation section of a page: by package for `pkg.module` pages, else Basics / Quickstart."
    if stem == "index": return None
    if "." in stem: return SECTIONS.get(stem.split(".")[0], stem.split(".")[0].title())
    return "Quickstart" if nb_path.stem.startswith("9") else "Basics"


def mkdocs_yml(nav: list, title: str, description: str) -> str:
    "The mkdocs configuration (JSON is valid YAML)."
    config = {
        "site_name": title, "site_description": description, "docs_dir": "docs", "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "navigation.indexes", "toc.follow"]},
        "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": False, "ignore_h1_titles": False,
                                                  "remove_tag_config": {"remove_input_tags": ["remove_input"]},
                                                  "include_requirejs": False, "cache": False}}],
        "markdown_extensions": ["tables", "admonition", {"toc": {"permalink": True}}],
        "extra_css": ["styles.css"], "nav": nav,
    }
    return json.dumps(config, indent=1)


def build(out: Path, proc: bool = True, work: Path = ROOT) -> Path:
    "Build the site into `out` (intermediate files in `work`: `_proc/`, `_mkdocs/`); returns the path of its index.html."
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    doc_url = f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl.rstrip('/')}/" if cfg.get("doc_host") else ""
    proc_dir, warnings = proc_notebooks(Path(work) / "_proc") if proc else (Path(work) / "_proc", [])
    for line in warnings: print(f"warning: nbdev's docs run failed on {line} (left out; a failing show_doc gets a plain entry)")
    if not proc_dir.exists(): raise SystemExit(f"{proc_dir} does not exist: run without --no-proc first")
    work = Path(work) / "_mkdocs"
    shutil.rmtree(work, ignore_errors=True)
    docs = work / "docs"
    docs.mkdir(parents=True)
    sections, nav_top = {}, []
    for nb_path in sorted(proc_dir.glob("*.ipynb")):
        if nb_path.name.startswith("_"): continue
        nb, meta = convert(json.loads(nb_path.read_text()), doc_url)
        stem = page_name(nb_path, meta)
        (docs / f"{stem}.ipynb").write_text(json.dumps(nb))
        title = str(meta.get("title") or stem).replace("`", "")  # navigation titles are plain text
        where = section(stem, nb_path)
        if where is None: nav_top.insert(0, {"Home": f"{stem}.ipynb"})
        else: sections.setdefault(where, []).append({title: f"{stem}.ipynb"})
    for extra in (ROOT / "nbs").glob("*.css"): shutil.copy(extra, docs / extra.name)
    if not (docs / "styles.css").exists(): (docs / "styles.css").write_text("")
    for f in proc_dir.rglob("*"):  # images and other files the pages refer to
        if f.is_file() and f.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg"):
            (docs / f.relative_to(proc_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, docs / f.relative_to(proc_dir))
    nav = nav_top + [{name: pages} for name, pages in sections.items()]
    (work / "mkdocs.yml").write_text(mkdocs_yml(nav, cfg.get("title", "docs"), cfg.get("description", "")))
    out = Path(out).resolve()
    subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--clean", "-q", "-f", str(work / "mkdocs.yml"),
                    "-d", str(out)], check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    index = out / "index.html"
    if not index.exists(): raise SystemExit(f"mkdocs wrote no {index}")
    return index


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "_site"), help="output folder (default: _site)")
    parser.add_argument("--no-proc", action="store_true", help="reuse _proc/ instead of running nbdev's processor")
    parser.add_argument("--work", default=str(ROOT), help="folder for the intermediate _proc/ and _mkdocs/ (default: the repository)")
    args = parser.parse_args(argv)
    index = build(Path(args.out), proc=not args.no_proc, work=Path(args.work))
    print(f"built {index}")


if __name__ == "__main__":
    main()
