"""One optimizer step of the reference's own train.py (llava-torch 1.2.2.post1, CPU, fp32) and of llava_nb's, on the same tiny
checkpoint, data and seed, for stage 1 (projector) and stage 2 (full fine-tune): the same loss within 1e-5 and the same
updated projector. Where the reference masks a sample wrongly (its v1 round-length correction on a non-legacy tokenizer),
the test shows that sample's labels on both sides."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import ImageOps

from llava_nb.reference import REFERENCE_PYTHON, reference_env

from llava_nb.core import IGNORE_INDEX
from llava_nb.testing import example_image, make_tiny_checkpoints

TRAIN_STEP = Path(__file__).with_name("reference") / "train_step.py"
TOLERANCE = 1e-5


def one_step(side: str, flags: list, out: Path) -> dict:
    "Run train_step.py with the reference's Python or llava_nb's; what it recorded."
    python, env = (REFERENCE_PYTHON, reference_env()) if side == "reference" else (sys.executable, None)
    proc = subprocess.run([str(python), str(TRAIN_STEP), side, str(out), "--", *map(str, flags)], env=env, cwd=out.parent,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{side}: {proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return torch.load(out, weights_only=False)


def record(sample_id: str, image: str | None, turns: list[str]) -> dict:
    conversations = [{"from": "human" if i % 2 == 0 else "gpt", "value": text} for i, text in enumerate(turns)]
    return {"id": sample_id, **({"image": image} if image else {}), "conversations": conversations}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_training")
    cks = make_tiny_checkpoints(root / "tiny", formats=("projector",))
    (root / "images").mkdir()
    example_image().save(root / "images" / "a.png")
    ImageOps.mirror(example_image()).save(root / "images" / "b.png")
    data = {
        "pretrain": [record("p0", "a.png", ["<image>", "A red circle and a blue square."]),
                     record("p1", "b.png", ["<image>", "A blue square and a red circle."])],
        "instruct": [record("i0", "a.png", ["<image>\nWhat colour is the circle?", "The circle is red."]),
                     record("i1", "b.png", ["Where is the square?\n<image>", "The square is at the bottom left."])],
        "multi_turn": [record("m0", "a.png", ["<image>\nWhat colour is the circle?", "Red.", "And the square?", "Blue."]),
                       record("i1", "b.png", ["Where is the square?\n<image>", "The square is at the bottom left."])],
    }
    for name, records in data.items(): (root / f"{name}.json").write_text(json.dumps(records))
    common = ["--model_name_or_path", cks.paths["base_lm"], "--vision_tower", cks.paths["clip"], "--image_folder", root / "images",
              "--pretrain_mm_mlp_adapter", cks.paths["projector"] / "mm_projector.bin", "--mm_projector_type", "mlp2x_gelu",
              "--mm_vision_select_layer", -2, "--mm_use_im_start_end", False, "--mm_use_im_patch_token", False,
              "--image_aspect_ratio", "pad", "--group_by_modality_length", False, "--bf16", False, "--fp16", False,
              "--num_train_epochs", 1, "--max_steps", 1, "--per_device_train_batch_size", 2, "--gradient_accumulation_steps", 1,
              "--learning_rate", 1e-3, "--weight_decay", 0.0, "--warmup_ratio", 0.0, "--lr_scheduler_type", "constant",
              "--logging_steps", 1, "--model_max_length", 512, "--gradient_checkpointing", False, "--lazy_preprocess", True,
              "--dataloader_num_workers", 0, "--report_to", "none", "--save_strategy", "no", "--seed", 0]
    return root, common


STAGES = {"stage 1": ["--version", "plain", "--data_path", "pretrain.json", "--tune_mm_mlp_adapter", True],
          "stage 2": ["--version", "v1", "--data_path", "instruct.json"]}


@pytest.mark.parametrize("stage", list(STAGES))
def test_one_training_step_agrees_with_the_reference(setup, stage, tmp_path):
    root, common = setup
    flags = [*common, *[root / f if str(f).endswith(".json") else f for f in STAGES[stage]]]
    runs = {side: one_step(side, [*flags, "--output_dir", tmp_path / side], tmp_path / f"{side}.pt") for side in ("reference", "llava_nb")}
    ref, ours = runs["reference"], runs["llava_nb"]
    loss_diff = abs(ref["losses"][0] - ours["losses"][0])
    weight_diff = max((ref["projector"][k] - ours["projector"][k]).abs().max().item() for k in ref["projector"])
    print(f"{stage}: loss reference {ref['losses'][0]:.7f} llava_nb {ours['losses'][0]:.7f} (diff {loss_diff:.1e}); "
          f"projector after the step: max |diff| {weight_diff:.1e}")
    assert sorted(ref["projector"]) == sorted(ours["projector"])
    assert loss_diff <= TOLERANCE and weight_diff <= TOLERANCE


def test_where_the_reference_masks_a_multi_turn_sample_wrongly(setup, tmp_path):
    "The reference's v1 round-length correction on a non-legacy tokenizer misplaces every round after the first, finds a mismatch and masks the whole sample; llava_nb trains its answers."
    from llava_nb.tokenizer import load_tokenizer
    root, common = setup
    flags = [*common, "--version", "v1", "--data_path", root / "multi_turn.json"]
    runs = {side: one_step(side, [*flags, "--output_dir", tmp_path / side], tmp_path / f"{side}.pt") for side in ("reference", "llava_nb")}
    tokenizer = load_tokenizer(common[common.index("--model_name_or_path") + 1])
    pad = tokenizer.unk_token_id
    def samples(run):
        return {tuple(t for t in ids.tolist() if t != pad): labels for ids, labels in zip(run["input_ids"][0], run["labels"][0])}
    ref, ours = samples(runs["reference"]), samples(runs["llava_nb"])
    assert sorted(ref) == sorted(ours), "the two sides tokenized the batch differently"
    multi = max(ref, key=len)  # the two-round sample
    trained_ref, trained_ours = (int((s[multi] != IGNORE_INDEX).sum()) for s in (ref, ours))
    answer = tokenizer.decode([t for t in ours[multi].tolist() if t != IGNORE_INDEX])
    print(f"multi-turn sample: the reference trains {trained_ref} tokens, llava_nb {trained_ours}: {answer!r}")
    assert trained_ref == 0 and trained_ours > 0
    assert "Red." in answer and "Blue." in answer
    single = min(ref, key=len)
    assert torch.equal(ref[single], ours[single])  # the one-round sample is masked the same on both sides
