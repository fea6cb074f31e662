"""Every command the README shows, and every command the quickstart's report shows, runs as written:
its program starts, and each flag it is shown with is one its `--help` lists (both spellings are
listed, so `--n-train` and `--n_train` both pass). The seed-command table is checked the same way:
the seed's own flags, from its first column, against the llava_nb command beside them. And every
console script exits 0 after a successful run and non-zero on a failed one."""
import configparser
import json
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = (ROOT / "README.md").read_text()
SETTINGS = configparser.ConfigParser()
SETTINGS.read(ROOT / "settings.ini")
CONSOLE_SCRIPTS = {entry.split("=")[0] for entry in SETTINGS["DEFAULT"]["console_scripts"].split()}
SHELL_BLOCK = re.compile(r"```(?:sh|bash|shell)\n(.*?)```", re.S)
COMMAND_SPAN = re.compile(r"^(python3? -m llava_nb\.|python3? tools/|make \w|(" + "|".join(CONSOLE_SCRIPTS) + r")\b)")


def block_commands(markdown: str) -> list[str]:
    "The commands of a Markdown text's sh/bash code blocks: one per line, continuations joined, comments and `&` dropped."
    commands = []
    for body in SHELL_BLOCK.findall(markdown):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip().removesuffix("&")
            if line.strip(): commands.append(" ".join(line.split()))
    return commands


def span_commands(markdown: str) -> list[str]:
    "Code spans outside code blocks that are commands: `python -m llava_nb...`, a console script, `make X`, `python tools/...`."
    prose = re.sub(r"```.*?```", "", markdown, flags=re.S)
    spans = [s.replace("\\|", "|") for s in re.findall(r"`([^`\n]+)`", prose)]
    return [s for s in spans if COMMAND_SPAN.match(s)]


def seed_table_rows(markdown: str) -> list[tuple[str, str]]:
    "(seed command, llava_nb command) for each row of the seed-command table: its first code span in each of the two first cells."
    rows = []
    for line in markdown.splitlines():
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if len(cells) < 3 or not re.search(r"`python3? -m llava\.|`scripts/|`llava/|\.py ", cells[0]): continue
        seed, ours = (re.findall(r"`([^`]+)`", c) for c in cells[:2])
        if seed and ours: rows.append((seed[0].replace("\\|", "|"), ours[0].replace("\\|", "|")))
    return rows


def flags(argv: list[str]) -> list[str]:
    "The long flags in an argument list, without values (`--out=x` -> `--out`; `[--num-gpus]` -> `--num-gpus`)."
    return [a.strip("[]").split("=")[0] for a in argv if a.strip("[").startswith("--")]


@lru_cache(maxsize=None)
def help_text(program: tuple) -> tuple[int, str]:
    proc = subprocess.run([*program, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def program_of(argv: list[str]) -> tuple[tuple | None, list[str], str | None]:
    "(program to ask for --help, its arguments, or a problem) for a documented command line; (None, [], None): nothing to run."
    head = argv[0]
    if head == "make":
        missing = [t for t in argv[1:] if not re.search(rf"^{re.escape(t)}:", (ROOT / "Makefile").read_text(), re.M)]
        return None, [], (f"no make target {missing}" if missing else None)
    if head in ("python", "python3") and argv[1] == "-m":
        if not argv[2].startswith("llava_nb"): return None, [], None  # the standard library's (http.server)
        if argv[2].rsplit(".", 1)[-1].isupper(): return None, [], None  # a placeholder: `python -m llava_nb.X`
        return (sys.executable, "-m", argv[2]), argv[3:], None
    if head in ("python", "python3"):
        script = ROOT / argv[1]
        return ((sys.executable, str(script)), argv[2:], None) if script.is_file() else (None, [], f"no script {argv[1]}")
    if head in CONSOLE_SCRIPTS: return (str(BIN / head),), argv[1:], None
    return None, [], f"{head!r} is not a llava_nb command"


def command_problems(command: str, shown_flags: list[str] | None = None) -> list[str]:
    "What is wrong with a documented command: its program does not start, or it does not list a flag it is shown with."
    argv = shlex.split(command)
    program, args, problem = program_of(argv)
    if problem: return [f"{command}: {problem}"]
    if program is None: return []
    code, text = help_text(program)
    if code != 0: return [f"{command}: `--help` exited {code}: {text[-800:]}"]
    unknown = [f for f in (shown_flags if shown_flags is not None else flags(args))
               if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    return [f"{command}: {' '.join(unknown)} not among the flags its --help lists"] if unknown else []


def test_readme_commands_run_as_written():
    "Code blocks and code spans of the README: each program starts and takes the flags shown."
    commands = list(dict.fromkeys(block_commands(README) + span_commands(README)))
    assert len(commands) >= 10, f"found only {commands}: the README lost its commands, or this test its parsing"
    assert any(c.startswith("llava_toyworld --out") for c in commands)
    problems = [p for c in commands for p in command_problems(c)]
    assert not problems, "\n".join(problems)


def test_seed_commands_take_the_seed_flags():
    "The seed-command table: each seed command's own flags are accepted by the llava_nb command beside it."
    rows = seed_table_rows(README)
    assert len(rows) >= 10, rows
    problems = [p for seed, ours in rows for p in command_problems(ours, flags(shlex.split(seed)))]
    assert not problems, "\n".join(problems)


def test_a_wrong_flag_is_caught():
    "The check above can fail: a documented command with a misspelt flag, an unknown program or make target is reported."
    assert command_problems("llava_toyworld --out DIR --n-train 10") == []
    assert command_problems("llava_toyworld --out DIR --n_train 10") == []
    assert "--n-trian" in command_problems("llava_toyworld --out DIR --n-trian 10")[0]
    assert command_problems("python -m llava_nb.no_such_module --x")
    assert command_problems("make no-such-target")
    assert "--model-paht" in command_problems("python -m llava_nb.eval.run_llava", ["--model-paht"])[0]
    assert block_commands("```sh\nllava_x --a 1 \\\n  --b 2  # note\nmake y &\n```") == ["llava_x --a 1 --b 2", "make y"]
    assert seed_table_rows("| `python -m llava.serve.cli --model-path` | `python -m llava_nb.serve.cli` | works |") == \
        [("python -m llava.serve.cli --model-path", "python -m llava_nb.serve.cli")]


def run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    "A real `llava_quickstart --size tiny` run: its folder and the finished process."
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    return out, run(BIN / "llava_quickstart", "--out", out, "--size", "tiny")


def test_quickstart_exit_status_and_report_commands(quickstart):
    "llava_quickstart exits 0 and ends with its summary; every command its report shows runs as written, and run_llava answers."
    out, proc = quickstart
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Held-out exact-answer accuracy" in proc.stdout and proc.stdout.count("overall") == 1
    commands = block_commands((out / "report" / "README.md").read_text())
    assert len(commands) >= 5, commands
    problems = [p for c in commands for p in command_problems(c)]
    assert not problems, "\n".join(problems)
    ask = next(c for c in commands if "llava_nb.eval.run_llava" in c)
    answer = run(*shlex.split(ask.replace("python ", f"{sys.executable} ", 1)))
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr[-2000:]
    assert run(BIN / "llava_quickstart", "--size", "huge").returncode == 2
    (out.parent / "a_file").write_text("not a folder")
    failed = run(BIN / "llava_quickstart", "--out", out.parent / "a_file", "--size", "tiny")
    assert failed.returncode != 0


def test_toyworld_exit_status(tmp_path):
    "llava_toyworld: the documented `--out DIR --n-train N` and the positional form write a world; no folder is an error."
    for argv in (["--out", tmp_path / "a", "--n-train", 4, "--n-test", 2, "--bench-scenes", 1],
                 [tmp_path / "b", "--n_train", 4, "--n_test", 2, "--bench_scenes", 1]):
        proc = run(BIN / "llava_toyworld", *argv)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout)["n_train"] == 4
    assert (tmp_path / "a" / "instruct.json").is_file() and (tmp_path / "b" / "instruct.json").is_file()
    proc = run(BIN / "llava_toyworld", "--n-train", 4)
    assert proc.returncode == 2 and "--out DIR" in proc.stderr


def test_toybench_exit_status(quickstart):
    "llava_toybench exits 0 after a run and prints its table once; a folder that is not a model is a non-zero exit with the reason."
    out, _ = quickstart
    proc = run(BIN / "llava_toybench", "--model-path", out / "stage2", "--limit", 10, "--no-blank")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("exact answers, test split") == 1 and proc.stdout.count("overall") == 1, proc.stdout
    proc = run(BIN / "llava_toybench", "--model-path", out / "no_such_model")
    assert proc.returncode != 0 and "no_such_model" in proc.stderr


def test_train_exit_status(quickstart, tmp_path):
    "llava_train: two real steps of stage 1 on the tiny quickstart's world exit 0; a missing base model exits non-zero."
    from llava_nb.quickstart import SIZES, stage1_command
    out, _ = quickstart
    sizes = {**SIZES["tiny"], "s1_steps": 2, "save_steps": 2, "nproc": 1}
    command = shlex.split(stage1_command(out / "world", out / "bases", tmp_path / "s1", sizes, seed=0))
    proc = run(BIN / "llava_train", *command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "s1" / "mm_projector.bin").is_file()
    bad = [tmp_path / "nope" if a == str(out / "bases" / "lm") else a for a in command]
    assert run(BIN / "llava_train", *bad).returncode != 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llava_nb.testing import make_tiny_checkpoints
    return make_tiny_checkpoints(tmp_path_factory.mktemp("tiny"), formats=("latest", "lora"))


def test_merge_lora_exit_status(tiny, tmp_path):
    proc = run(BIN / "llava_merge_lora", "--model-path", tiny.paths["lora"], "--model-base", tiny.paths["base_lm"],
               "--save-model-path", tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "merged" / "config.json").is_file()
    proc = run(BIN / "llava_merge_lora", "--model-path", tmp_path / "nope", "--model-base", tiny.paths["base_lm"],
               "--save-model-path", tmp_path / "merged2")
    assert proc.returncode != 0 and not (tmp_path / "merged2").exists()


def test_convert_exit_status(tiny, tmp_path):
    proc = run(BIN / "llava_convert", "--to", "hf", "--in", tiny.paths["latest"], "--out", tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "hf" / "config.json").is_file()
    assert run(BIN / "llava_convert", "--to", "hf", "--in", tmp_path / "nope", "--out", tmp_path / "hf2").returncode != 0


def test_lightning_exit_status(tmp_path):
    "llava_lightning prints the commands (exit 0); `--run` whose first step fails exits non-zero and names the step."
    proc = run(BIN / "llava_lightning", "v1", "--nproc", 1)
    assert proc.returncode == 0 and "llava_nb.train.train_mem" in proc.stdout, proc.stderr[-2000:]
    proc = run(BIN / "llava_lightning", "v1", "--run", "--nproc", 1, "--model", tmp_path / "no_such_lm", "--out", tmp_path / "ck")
    assert proc.returncode != 0 and "this step failed" in proc.stderr, proc.stderr[-2000:]
    assert run(BIN / "llava_lightning", "v9").returncode == 2


def test_train_anyres_exit_status(tiny, tmp_path):
    "llava_train with the LLaVA-1.6 flags (the reference's string form of the pinpoints): 2 steps exit 0 and the config records them; a cap that leaves no pinpoint exits 2 naming the flag."
    from llava_nb.testing import example_image
    (tmp_path / "images").mkdir()
    records = []
    for k, (w, h) in enumerate([(90, 40), (40, 90), (48, 48), (64, 32)]):
        example_image(w, h).save(tmp_path / "images" / f"{k}.png")
        records.append({"id": str(k), "image": f"{k}.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour is the circle?"},
                                                                             {"from": "gpt", "value": "Red."}]})
    (tmp_path / "data.json").write_text(json.dumps(records))
    command = ["--model_name_or_path", tiny.paths["base_lm"], "--vision_tower", tiny.paths["clip"], "--version", "v1",
               "--data_path", tmp_path / "data.json", "--image_folder", tmp_path / "images", "--mm_projector_type", "mlp2x_gelu",
               "--mm_use_im_patch_token", "False", "--image_aspect_ratio", "anyres", "--mm_patch_merge_type", "spatial_unpad",
               "--image_grid_pinpoints", "[(64, 32), (32, 64), (64, 64)]", "--per_device_train_batch_size", 2, "--max_steps", 2,
               "--report_to", "none", "--output_dir", tmp_path / "out"]
    proc = run(BIN / "llava_train", *command)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["image_aspect_ratio"], config["mm_patch_merge_type"], config["image_grid_pinpoints"]) == \
        ("anyres", "spatial_unpad", [[64, 32], [32, 64], [64, 64]])
    proc = run(BIN / "llava_train", *command[:-1], tmp_path / "capped", "--image_max_tiles", 1)
    assert proc.returncode == 2 and "error: --image_max_tiles 1 leaves no pinpoint" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "capped").exists()


def test_quickstart_anyres_comparison(quickstart):
    "llava_quickstart --anyres-comparison in a finished quickstart's folder reuses its stage-0 bases, trains pad and anyres on panoramas and prints both."
    out, first = quickstart
    assert first.returncode == 0, first.stderr[-2000:]
    proc = run(BIN / "llava_quickstart", "--out", out, "--size", "tiny", "--anyres-comparison")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for phase in ("world", "tokenizer", "clip", "lm"): assert f"[quickstart] {phase}: done before, skipped" in proc.stdout
    assert "panorama_anyres_evaluate:" in proc.stdout and proc.stdout.count("overall") == 1, proc.stdout[-2000:]
    summary = json.loads((out / "panorama" / "report" / "summary.json").read_text())
    assert (summary["runs"]["pad"]["image_rows"], summary["runs"]["anyres"]["image_rows"]) == (9, 39)
