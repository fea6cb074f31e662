"""Every kind of checkpoint folder llava_nb writes loads in the reference's own `load_pretrained_model` (llava-torch 1.2.2.post1,
transformers 4.37.2, in its own environment: `make reference`) and computes what llava_nb computes from it: next-token logits
within 1e-5 and the same 20 greedy tokens, on CPU in fp32."""
import subprocess
import sys

import pytest
import torch
from PIL import Image

from llava_nb.reference import ROOT, run_reference

from llava_nb.mm_utils import expand_image_tokens_2023, process_images, tokenizer_image_token
from llava_nb.model.builder import load_pretrained_model
from llava_nb.testing import PROMPT_2023, PROMPT_LATEST, example_image, make_tiny_checkpoints

TOLERANCE = 1e-5
GREEDY = 20


def llava_nb_logits(path, base, prompt, image):
    "What llava_nb computes from a checkpoint: (next-token logits, greedy tokens, prompt length)."
    tokenizer, model, processor, _ = load_pretrained_model(path, base, device="cpu")
    pixels = process_images([Image.open(image).convert("RGB")], processor, model.config)
    if getattr(model.config, "llava_format", "latest") == "2023":
        text = expand_image_tokens_2023(prompt, model.get_vision_tower().num_patches, model.config.mm_use_im_start_end)
        ids = tokenizer(text, return_tensors="pt").input_ids
    else: ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels).logits[0, -1]
        tokens = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=GREEDY, use_cache=True)[0].tolist()
    return logits, tokens


def train(*argv):
    "llava_nb's own training command (one process), as a user runs it."
    proc = subprocess.run([sys.executable, "-m", "llava_nb.train.train_mem", *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "One folder of each kind llava_nb writes, named as the reference's loader expects ('llava' in the name; 'lora' for adapters)."
    from llava_nb.model.delta import apply_delta, make_delta
    from llava_nb.model.hf_format import convert_llava_hf
    from llava_nb.model.merge_lora import merge_lora
    from llava_nb.toyworld import write_world
    root = tmp_path_factory.mktemp("reference_checkpoints")
    cks = make_tiny_checkpoints(root / "tiny", formats=("latest", "v0", "projector", "lora", "llava_hf"))
    base = cks.paths["base_lm"]
    kinds = {"latest": (cks.paths["latest"], None), "2023 (v0)": (cks.paths["v0"], None),
             "stage-1 projector": (cks.paths["projector"], base), "LoRA + non_lora_trainables": (cks.paths["lora"], base)}
    kinds["merged LoRA"] = (merge_lora(cks.paths["lora"], base, root / "llava-merged"), None)
    make_delta(base, cks.paths["latest"], root / "llava-delta")
    kinds["delta-applied"] = (apply_delta(base, root / "llava-applied", root / "llava-delta"), None)
    kinds["converted from llava-hf"] = (convert_llava_hf(cks.paths["llava_hf"], root / "llava-from-hf"), None)
    world = root / "world"
    write_world(world, n_train=8, n_test=2, bench_scenes=1)
    common = ["--vision_tower", cks.paths["clip"], "--image_folder", world / "images", "--mm_vision_select_layer", -2,
              "--mm_use_im_start_end", False, "--mm_use_im_patch_token", False, "--image_aspect_ratio", "pad",
              "--per_device_train_batch_size", 2, "--max_steps", 1, "--save_strategy", "no", "--report_to", "none",
              "--model_max_length", 512, "--learning_rate", 1e-3, "--dataloader_num_workers", 0]
    train("--model_name_or_path", base, "--version", "plain", "--data_path", world / "pretrain.json",
          "--tune_mm_mlp_adapter", True, "--mm_projector_type", "mlp2x_gelu", "--output_dir", root / "llava-stage1", *common)
    kinds["training: stage 1"] = (root / "llava-stage1", base)
    stage2 = ["--model_name_or_path", base, "--version", "v1", "--data_path", world / "instruct.json", "--mm_projector_type",
              "mlp2x_gelu", "--pretrain_mm_mlp_adapter", root / "llava-stage1" / "mm_projector.bin", *common]
    train(*stage2, "--output_dir", root / "llava-stage2")
    kinds["training: stage 2 full"] = (root / "llava-stage2", None)
    train(*stage2, "--lora_enable", True, "--lora_r", 4, "--lora_alpha", 8, "--output_dir", root / "llava-stage2-lora")
    kinds["training: stage 2 LoRA"] = (root / "llava-stage2-lora", base)
    example_image().save(root / "image.png")
    return kinds, root / "image.png"


def reference_name(path) -> str:
    "The model name the reference's loader branches on (its format detection reads names): 'llava', and 'lora' for adapters."
    name = path.name if path.name.startswith("llava") else f"llava-{path.name}"
    return name.replace("_", "-")


def test_every_checkpoint_kind_loads_in_the_reference_with_the_same_outputs(folders):
    kinds, image = folders
    models = []
    for kind, (path, base) in kinds.items():
        is_2023 = kind.startswith("2023")
        models.append({"kind": kind, "model_path": str(path), "model_base": str(base) if base else None,
                       "model_name": reference_name(path), "prompt": PROMPT_2023 if is_2023 else PROMPT_LATEST})
    answers = run_reference("logits", models=models, image=str(image), max_new_tokens=GREEDY)["models"]
    report, failures = [], []
    for spec, theirs in zip(models, answers):
        logits, tokens = llava_nb_logits(spec["model_path"], spec["model_base"], spec["prompt"], image)
        vocab = min(len(logits), len(theirs["logits"]))
        diff = (logits[:vocab] - theirs["logits"][:vocab]).abs().max().item()
        same = sum(a == b for a, b in zip(tokens, theirs["tokens"]))
        report.append(f"{spec['kind']:28s} max|logits diff| {diff:.2e}  greedy tokens {same}/{len(theirs['tokens'])}")
        if diff > TOLERANCE or tokens != theirs["tokens"]:
            failures.append(f"{spec['kind']}: diff {diff:.2e}, llava_nb {tokens} vs reference {theirs['tokens']}")
    print("\n".join(report))
    assert not failures, "\n".join(failures + report)


def test_toy_world_bases_load_in_the_reference(tmp_path):
    "The toy world's stage-0 bases (its tokenizer with phrase pieces and cell words, its LM, its full CLIP) read by the reference: same ids, logits, greedy tokens, features."
    from transformers import AutoModelForCausalLM, CLIPVisionModel
    from llava_nb.tiny import load_image_processor
    from llava_nb.tokenizer import load_tokenizer
    from llava_nb.toyworld import write_world
    from llava_nb.train.bases import train_toy_clip, train_toy_lm, train_toy_tokenizer
    world = tmp_path / "world"
    write_world(world, n_train=16, n_test=2, bench_scenes=1)
    tokenizer = train_toy_tokenizer(world, tmp_path / "tokenizer")
    train_toy_clip(world, tokenizer, tmp_path / "clip", steps=2, batch_size=4, width=32, layers=2, progress=False)
    train_toy_lm(world, tokenizer, tmp_path / "lm", steps=2, batch_size=4, hidden=32, progress=False)
    example_image().save(tmp_path / "image.png")
    text = "A chat between a curious user and an artificial intelligence assistant. USER: What colour is the red-circle? ASSISTANT:"
    theirs = run_reference("bases", lm=str(tmp_path / "lm"), clip=str(tmp_path / "clip"), image=str(tmp_path / "image.png"), text=text)
    tokenizer = load_tokenizer(tmp_path / "lm")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    ids = tokenizer(text, return_tensors="pt").input_ids
    clip = CLIPVisionModel.from_pretrained(tmp_path / "clip").eval()
    pixels = load_image_processor(tmp_path / "clip")(Image.open(tmp_path / "image.png"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = lm(ids).logits[0, -1]
        tokens = lm.generate(ids, do_sample=False, max_new_tokens=GREEDY)[0, ids.shape[1]:].tolist()
        features = clip(pixels, output_hidden_states=True).hidden_states[-2]
    logit_diff, feature_diff = (logits - theirs["logits"]).abs().max().item(), (features - theirs["features"]).abs().max().item()
    print(f"toy bases: {len(ids[0])} ids, LM logits diff {logit_diff:.1e}, greedy {sum(a == b for a, b in zip(tokens, theirs['tokens']))}/"
          f"{len(tokens)}; CLIP features diff {feature_diff:.1e}, missing {len(theirs['missing'])}")
    assert ids[0].tolist() == theirs["input_ids"]
    assert theirs["missing"] == [] and all(k.startswith(("text_model.", "text_projection", "visual_projection", "logit_scale"))
                                           for k in theirs["unexpected"])
    assert logit_diff <= TOLERANCE and tokens == theirs["tokens"] and feature_diff <= TOLERANCE
