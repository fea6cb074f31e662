"""`llava_bench` from a shell: a tiny run of every section writes bench.json and bench.md with every
figure, the two sides' greedy outputs agree, and a wrong flag is refused with status 2.
(The tiny model measures nothing about speed: these tests check behaviour, never timings.)"""
import json
import subprocess
import sys

BENCH = [sys.executable, "-m", "llava_nb.bench.cli"]


def test_bench_tiny_run_writes_every_figure(tmp_path):
    run = subprocess.run(BENCH + ["--tiny", "--threads", "1", "--out", str(tmp_path), "--no-vllm"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["errors"] == {}
    names = [(f["section"], f["name"]) for f in saved["figures"]]
    assert [s for s, _ in names].count("generation") == 4
    assert [s for s, _ in names].count("serving") == 2 * len(saved["raw"]["serving"]) // 3  # two peers per number of streams
    assert [s for s, _ in names].count("http") == 1 + 2  # one number of streams, and the busy machine for two workers
    assert [s for s, _ in names].count("multi-turn") == 3
    assert [s for s, _ in names].count("training") == 6
    assert saved["raw"]["generation"]["identical"]
    assert saved["raw"]["generation"]["tokens_nb"] == saved["raw"]["generation"]["tokens_hf"]
    one_stream = [r for r in saved["raw"]["serving"] if r["streams"] == 1]
    assert {r["identical_to_one_at_a_time"] for r in one_stream} == {"1/1"}
    calls = next(f for f in saved["figures"] if f["name"].startswith("vision-tower calls"))
    assert (calls["ours"], calls["theirs"]) == (1.0, 5.0)
    report = (tmp_path / "bench.md").read_text()
    for _, name in names: assert f"| {name} |" in report
    assert "| batch-1 decode |" in run.stdout


def test_bench_refuses_an_unknown_section(tmp_path):
    run = subprocess.run(BENCH + ["--tiny", "--sections", "generation,speed"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "generation, serving, http, multiturn, training" in run.stderr
