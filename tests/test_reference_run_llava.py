"""The reference's own `llava/eval/run_llava.py` (llava-torch 1.2.2.post1 with transformers 4.37.2, in its own environment:
`make reference`) against `python -m llava_nb.eval.run_llava`: the template each infers from a model's name, and, on tiny
LLaVA-1.6 checkpoints (anyres tiles, spatial_unpad, image_sizes) named as the released ones are, the same greedy answer
about a wide and a tall image. CPU, fp32."""
import json
import subprocess
import sys

from llava_nb.eval.run_llava import default_conv_mode
from llava_nb.mm_utils import get_model_name_from_path
from llava_nb.reference import REFERENCE_PYTHON, ROOT, reference_env
from llava_nb.testing import example_image, make_tiny_checkpoints

# Run by the reference's Python. Run-time changes, all of them: its hard-coded float16 is read as float32 (CPU has no fast
# float16), `.cuda()` leaves the prompt ids on the CPU, and for the name checks its loader is replaced by a stub (no weights
# are needed to see which template it picks: it sets `args.conv_mode` before it loads the images, where the stub run stops).
REFERENCE_SCRIPT = r'''
import argparse, contextlib, io, json, sys, types
import torch
import llava.model.builder as builder
import llava.eval.run_llava as run_llava

fp32 = types.SimpleNamespace(**{**vars(torch), "float16": torch.float32})
builder.torch = run_llava.torch = fp32
torch.Tensor.cuda = lambda self, *args, **kwargs: self
request = json.loads(sys.argv[1])

def args_for(model_path, image_file="", query="?"):
    return argparse.Namespace(model_path=model_path, model_base=None, image_file=image_file, query=query, conv_mode=None, sep=",",
                              temperature=0, top_p=None, num_beams=1, max_new_tokens=request["max_new_tokens"])

class Stop(Exception): pass
def stop(args): raise Stop

stub = types.SimpleNamespace(config=types.SimpleNamespace(mm_use_im_start_end=False))
real_loader, real_parser = run_llava.load_pretrained_model, run_llava.image_parser
run_llava.load_pretrained_model = lambda *a, **k: (None, stub, None, 2048)
run_llava.image_parser = stop
modes = {}
for path in request["names"]:
    args = args_for(path)
    try: run_llava.eval_model(args)
    except Stop: modes[path] = args.conv_mode

run_llava.load_pretrained_model, run_llava.image_parser = real_loader, real_parser
answers = []
for run in request["runs"]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out): run_llava.eval_model(args_for(run["model_path"], run["image_file"], run["query"]))
    answers.append(out.getvalue().splitlines()[-1])
print(json.dumps({"modes": modes, "answers": answers}))
'''

NAMES = ["llava-v1.6-mistral-7b", "llava-v1.6-vicuna-7b", "llava-v1.6-vicuna-13b", "llava-v1.6-34b", "llava-v1.5-7b",
         "llava-v1.5-13b-lora", "llava-llama-2-13b-chat-lightning-preview", "LLaVA-Lightning-MPT-7B-preview", "llava-v1-0719-336px",
         "Mistral-7B-Instruct-v0.2", "llava-v1.6-mistral-7b-hermes", "vicuna-7b-v1.5", "llava-13b-v0", "stage2", "checkpoints/llava-v1.6-34b/checkpoint-100"]
MAX_NEW_TOKENS = 12
QUERY = "What colour is the circle?"


def llava_nb_answer(model_path, image_file):
    "`python -m llava_nb.eval.run_llava`, as a user runs it (template from the name, greedy)."
    proc = subprocess.run([sys.executable, "-m", "llava_nb.eval.run_llava", "--model-path", str(model_path), "--image-file", str(image_file),
                           "--query", QUERY, "--temperature", "0", "--max_new_tokens", str(MAX_NEW_TOKENS), "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout.splitlines()[-1]


def test_run_llava_against_the_reference(tmp_path):
    cks = make_tiny_checkpoints(tmp_path / "ckpt", formats=("v1_6", "v1_6_mistral"))
    folders = {"v1_6": tmp_path / "llava-v1.6-vicuna-tiny", "v1_6_mistral": tmp_path / "llava-v1.6-mistral-tiny"}
    for name, folder in folders.items(): cks.paths[name].rename(folder)  # the reference loads an image processor only for 'llava' names
    images = {"wide": tmp_path / "wide.png", "tall": tmp_path / "tall.png"}
    example_image(90, 40).save(images["wide"])
    example_image(40, 90).save(images["tall"])
    runs = [{"model_path": str(folder), "image_file": str(image), "query": QUERY} for folder in folders.values() for image in images.values()]
    request = {"names": [f"/models/{name}" for name in NAMES], "runs": runs, "max_new_tokens": MAX_NEW_TOKENS}
    proc = subprocess.run([str(REFERENCE_PYTHON), "-c", REFERENCE_SCRIPT, json.dumps(request)], env=reference_env(),
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]
    theirs = json.loads(proc.stdout.splitlines()[-1])

    ours = {path: default_conv_mode(get_model_name_from_path(path)) for path in request["names"]}
    assert ours == theirs["modes"]
    assert ours["/models/llava-v1.6-mistral-7b"] == "mistral_instruct" and ours["/models/llava-v1.6-34b"] == "chatml_direct"

    answers = [llava_nb_answer(run["model_path"], run["image_file"]) for run in runs]
    assert answers == theirs["answers"]
    assert len(set(answers)) > 1  # two models, two images: the answers differ, so equality says something
