"""Time the BatchEngine of a git ref ("old") against this checkout's ("new"), and HF's generate, at 1 (one at a time), 8 and 16
concurrent requests of mixed lengths, each with an image; interleaved trials, medians. Run from the repository root:
    PYTHONPATH=$PWD:tools/engine_speed python tools/engine_speed/bench.py --old-ref main --threads 1 --new-tokens 96"""
import argparse, importlib.util, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch
from build import load
from llava_nb.testing import example_image
from llava_nb.mm_utils import process_images, tokenizer_image_token
from llava_nb.serve import engine as new_engine

def engine_at(ref: str):
    "The engine module as it is at git `ref`, imported under another name."
    src = subprocess.run(["git", "show", f"{ref}:llava_nb/serve/engine.py"], capture_output=True, text=True, check=True).stdout
    src = re.sub(r"^from \.\.(\w)", r"from llava_nb.\1", src, flags=re.M)
    src = re.sub(r"^from \.(\w)", r"from llava_nb.serve.\1", src, flags=re.M)
    path = Path(tempfile.mkdtemp()) / "old_engine.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_engine", path)
    module = sys.modules["old_engine"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

p = argparse.ArgumentParser()
p.add_argument("--trials", type=int, default=3)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--new-tokens", type=int, default=48)
p.add_argument("--which", default="old,new,hf")
p.add_argument("--sizes", default="1,8,16")
p.add_argument("--old-ref", default="main")
args = p.parse_args()
old_engine = engine_at(args.old_ref)
torch.set_num_threads(args.threads)
tok, model, proc = load()
WORDS = "the quick brown fox jumps over a lazy dog while the cat sleeps on a warm mat near the window".split()

def prompt(i):
    n = 8 + (i * 37) % 120  # 8 .. 127 words: mixed lengths
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))
    return f"USER: <image>\n{text} ASSISTANT:"

def images(i): return [example_image(224 + 16 * (i % 3))]  # distinct images, three sizes
def budget(i): return args.new_tokens - (i * 7) % (args.new_tokens // 2)  # mixed output lengths

def run_engine(mod, n, one_at_a_time):
    eng = mod.BatchEngine(tok, model, proc, context_len=2048, max_batch_size=max(n, 1), feature_cache_size=0)
    reqs = [mod.GenerationRequest(prompt(i), images(i), temperature=0.0, max_new_tokens=budget(i)) for i in range(n)]
    t = time.perf_counter()
    if one_at_a_time:
        for r in reqs: eng.generate([r])
    else: eng.generate(reqs)
    dt = time.perf_counter() - t
    assert all(r.finish_reason == "length" for r in reqs), [r.finish_reason for r in reqs]
    return sum(r.completion_tokens for r in reqs) / dt, eng.stats["prefills"], [r.text for r in reqs]

def run_hf(n, one_at_a_time):
    "HF's generate: one static batch of n (it runs every row to the longest budget), or n requests one after another."
    groups = [[i] for i in range(n)] if one_at_a_time else [list(range(n))]
    t = time.perf_counter()
    for g in groups:
        ids = [tokenizer_image_token(prompt(i), tok, return_tensors="pt") for i in g]
        L = max(len(x) for x in ids)
        batch = torch.stack([torch.cat([torch.zeros(L - len(x), dtype=torch.long), x]) for x in ids])
        mask = torch.stack([torch.cat([torch.zeros(L - len(x), dtype=torch.long), torch.ones(len(x), dtype=torch.long)]) for x in ids])
        pix = process_images([images(i)[0] for i in g], proc, model.config)
        if isinstance(pix, list): pix = torch.stack(pix)
        longest = max(budget(i) for i in g)
        model.generate(batch, images=pix, attention_mask=mask, do_sample=False, max_new_tokens=longest, min_new_tokens=longest, pad_token_id=0)
    dt = time.perf_counter() - t
    return sum(budget(i) for i in range(n)) / dt  # the tokens the requests asked for (a static batch computes more)

results = {}
sizes = [int(s) for s in args.sizes.split(",")]
modes = [(n, n == 1) for n in sizes]
which = args.which.split(",")
for trial in range(args.trials):
    for n, seq in modes:
        for w in which:
            if w == "hf": v, pf = run_hf(8 if n == 1 else n, one_at_a_time=(n == 1)), None
            else:
                v, pf, texts = run_engine(old_engine if w == "old" else new_engine, 8 if n == 1 else n, one_at_a_time=(n == 1))
                results.setdefault(("texts", n, w), texts)
            results.setdefault((n, w), []).append(v)
            print(f"trial {trial} n={n} {w}: {v:.1f} tok/s prefills={pf}", flush=True)
for n in sizes:
    line = [f"n={n}"]
    for w in which:
        xs = results[(n, w)]
        line.append(f"{w} {statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]")
    if "old" in which and "new" in which:
        r = [b / a for a, b in zip(results[(n, 'old')], results[(n, 'new')])]
        line.append(f"new/old median {statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}]")
        same = results[("texts", n, "old")] == results[("texts", n, "new")]
        line.append(f"same texts: {same}")
    print(" | ".join(line))
