"""LLaVA-MPT checkpoints in the reference's format compute in llava_nb what the reference's own code computes (llava-torch
1.2.2.post1, transformers 4.37.2, `make reference`): next-token logits within 1e-5 of the largest logit's size and 20 identical greedy tokens, fp32 on
CPU, on images of several sizes (relative, since the two sides' matrix products are different libraries: MKL in the reference,
oneDNN in llava_nb, `llava_nb.model.cpu_linear`, whose sums round differently). The reference's `LlavaMptForCausalLM` cannot run a forward or generate with an image as released
(its forward calls `prepare_inputs_labels_for_multimodal` with the 2023 signature); the harness repairs the call and gives it
its sibling classes' `generate` (`llava_nb.reference_side.fix_mpt_forward`), nothing else."""
import pytest
import torch
from PIL import Image

from llava_nb.mm_utils import process_images, tokenizer_image_token
from llava_nb.model.builder import load_pretrained_model
from llava_nb.reference import run_reference
from llava_nb.testing import PROMPT_MPT, make_tiny_checkpoints, save_example_images

TOLERANCE = 1e-5

def logits_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    "Largest difference of two logit vectors, relative to the largest logit (at least 1)."
    return (ours - theirs).abs().max().item() / max(1.0, theirs.abs().max().item())
GREEDY = 20
SIZES = [(48, 48), (90, 40), (33, 97)]  # square, wide, tall (padded to a square: image_aspect_ratio 'pad')
PROMPTS = [PROMPT_MPT, "<|im_start|>user\n<image>\nDescribe the image briefly.<|im_end|><|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpt_reference")
    cks = make_tiny_checkpoints(root / "tiny", formats=("mpt",))
    return cks, save_example_images(root, SIZES)


def test_llava_mpt_logits_and_greedy_tokens_equal_the_reference(setup):
    cks, images = setup
    path = cks.paths["mpt"]
    cases = [(prompt, image) for prompt in PROMPTS for image in images]
    models = [{"model_path": str(path), "model_base": None, "model_name": "llava-lightning-mpt-tiny", "prompt": p, "image": str(im)}
              for p, im in cases]  # the reference's loader takes the MPT branch on 'mpt' in the name
    theirs = run_reference("logits", models=models, max_new_tokens=GREEDY)["models"]
    tokenizer, model, processor, _ = load_pretrained_model(path, None, device="cpu")
    report, failures = [], []
    for (prompt, image), ref in zip(cases, theirs):
        ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
        assert ids[0].tolist() == ref["input_ids"]  # the same prompt ids (GPT-NeoX BPE, no BOS, one -200)
        pixels = process_images([Image.open(image).convert("RGB")], processor, model.config)
        with torch.no_grad():
            logits = model(input_ids=ids, images=pixels).logits[0, -1]
            tokens = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=GREEDY)[0].tolist()
        diff = logits_diff(logits, ref["logits"])
        report.append(f"{image.name} {prompt[22:40]!r}: max|logits diff| / max|logit| {diff:.2e}, "
                      f"greedy {sum(a == b for a, b in zip(tokens, ref['tokens']))}/{len(ref['tokens'])}")
        if diff > TOLERANCE or tokens != ref["tokens"] or len(tokens) != GREEDY:
            failures.append(report[-1] + f" ours {tokens} reference {ref['tokens']}")
    print("\n".join(report))
    assert not failures, "\n".join(failures)


def test_an_mpt_llava_trained_by_llava_nb_loads_in_the_reference_with_the_same_outputs(setup, tmp_path):
    "Stage 1 and stage 2 (`--version mpt`) on a tiny MPT with llava_nb's training command; the reference reads the result alike."
    import subprocess
    import sys
    from llava_nb.reference import ROOT
    from llava_nb.toyworld import write_world
    cks, images = setup
    world = tmp_path / "world"
    write_world(world, n_train=4, n_test=1, bench_scenes=1)
    common = ["--vision_tower", cks.paths["clip"], "--image_folder", world / "images", "--version", "mpt", "--mm_projector_type", "mlp2x_gelu",
              "--mm_use_im_start_end", False, "--mm_use_im_patch_token", False, "--image_aspect_ratio", "pad", "--save_strategy", "no",
              "--report_to", "none", "--model_max_length", 512, "--dataloader_num_workers", 0, "--per_device_train_batch_size", 2,
              "--max_steps", 2, "--learning_rate", 1e-3, "--model_name_or_path", cks.paths["base_mpt"]]
    stage1, stage2 = tmp_path / "llava-mpt-stage1", tmp_path / "llava-mpt-stage2"
    for argv in (["--data_path", world / "pretrain.json", "--tune_mm_mlp_adapter", True, "--output_dir", stage1],
                 ["--data_path", world / "instruct.json", "--pretrain_mm_mlp_adapter", stage1 / "mm_projector.bin", "--output_dir", stage2]):
        proc = subprocess.run([sys.executable, "-m", "llava_nb.train.train_mem", *map(str, argv + common)], capture_output=True, text=True,
                              cwd=ROOT, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ref = run_reference("logits", models=[{"model_path": str(stage2), "model_base": None, "model_name": stage2.name, "prompt": PROMPT_MPT,
                                           "image": str(images[0])}], max_new_tokens=GREEDY)["models"][0]
    tokenizer, model, processor, _ = load_pretrained_model(stage2, None, device="cpu")
    ids = tokenizer_image_token(PROMPT_MPT, tokenizer, return_tensors="pt")[None]
    assert ids[0].tolist() == ref["input_ids"]
    pixels = process_images([Image.open(images[0]).convert("RGB")], processor, model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, images=pixels).logits[0, -1]
        tokens = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=GREEDY)[0].tolist()
    diff = logits_diff(logits, ref["logits"])
    print(f"trained by llava_nb, read by the reference: max|logits diff| / max|logit| {diff:.2e}, greedy {tokens == ref['tokens']}, "
          f"largest logit {ref['logits'].abs().max().item():.1f}")
    assert diff <= TOLERANCE and tokens == ref["tokens"], (diff, tokens, ref["tokens"])
