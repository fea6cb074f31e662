"""Engine tokens/s with torch threads 1 vs 2, without and with a competing busy process; interleaved trials, medians.\n    PYTHONPATH=$PWD:tools/engine_speed python tools/engine_speed/threads.py 2"""
import sys, time, statistics, subprocess, os
import torch
from build import load
from llava_nb.testing import example_image
from llava_nb.serve.engine import BatchEngine, GenerationRequest
tok, model, proc = load()
def prompt(i): return "USER: <image>\n" + "the cat sat on the mat " * (1 + i % 4) + "ASSISTANT:"
def run(n=8, new=24):
    eng = BatchEngine(tok, model, proc, max_batch_size=n, feature_cache_size=0)
    reqs = [GenerationRequest(prompt(i), [example_image(224)], temperature=0.0, max_new_tokens=new) for i in range(n)]
    t = time.perf_counter(); eng.generate(reqs); dt = time.perf_counter() - t
    return sum(r.completion_tokens for r in reqs) / dt
res = {}
for trial in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for th in (1, 2):
                torch.set_num_threads(th)
                v = run(); res.setdefault((busy, th), []).append(v)
                print(f"trial {trial} busy={busy} threads={th}: {v:.1f} tok/s", flush=True)
        finally:
            if hog: hog.kill(); hog.wait()
for k, xs in sorted(res.items()):
    print(f"busy={k[0]} threads={k[1]}: median {statistics.median(xs):.1f} tok/s [{min(xs):.1f}-{max(xs):.1f}]")
