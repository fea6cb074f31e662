#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does with quarto, which these machines lack).

Markdown cells are copied; code cells are shown as code blocks with their saved text outputs;
`#| hide`, `#| include: false` and `#| echo: false` are honoured. `--check` fails if README.md differs.
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def _directives(src: str) -> tuple[dict, str]:
    "Split leading `#| key: value` lines from a code cell's source."
    opts, lines = {}, src.splitlines()
    while lines and lines[0].startswith("#|"):
        body = lines.pop(0)[2:].strip()
        key, _, value = body.partition(":")
        opts[key.strip()] = value.strip() or True
    return opts, "\n".join(lines).strip("\n")


def _outputs(cell: dict) -> list[str]:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream": parts.append("```\n" + "".join(out["text"]).rstrip("\n") + "\n```")
        elif "data" in out:
            data = out["data"]
            if "text/markdown" in data: parts.append("".join(data["text/markdown"]).rstrip("\n"))
            elif "text/plain" in data: parts.append("```\n" + "".join(data["text/plain"]).rstrip("\n") + "\n```")
    return parts


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    blocks = []
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            blocks.append(src.strip("\n"))
            continue
        if cell["cell_type"] != "code": continue
        opts, code = _directives(src)
        if opts.get("hide") or opts.get("include") == "false" or "default_exp" in opts: continue
        lang = "sh" if code.startswith("!") else "python"
        if code and opts.get("echo") != "false":
            blocks.append(f"```{lang}\n" + re.sub(r"^!", "", code, flags=re.M) + "\n```")
        blocks += _outputs(cell)
    return HEADER + "\n\n".join(b for b in blocks if b) + "\n"


def main(argv):
    text = render(ROOT / "nbs" / "index.ipynb")
    readme = ROOT / "README.md"
    if "--check" in argv:
        if not readme.exists() or readme.read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py`")
            return 1
        return 0
    readme.write_text(text)
    print(f"wrote {readme.relative_to(ROOT)} ({len(text):,} chars)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
