"""Stage 1 with `--mm_use_im_start_end True` adds `<im_start>`/`<im_end>` and trains their embedding rows: `mm_projector.bin` holds
them (LLaMA's `model.embed_tokens`, MPT's `transformer.wte`) and `load_pretrained_model(stage1, model_base=base)` loads them into
the base grown by two rows, for a LLaMA and an MPT base."""
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer

from llava_nb.model.builder import load_pretrained_model
from llava_nb.reference import ROOT
from llava_nb.testing import make_tiny_checkpoints
from llava_nb.toyworld import write_world


@pytest.mark.parametrize("family", ["llama", "mpt"])
def test_stage_1_with_start_end_tokens_saves_and_loads_their_embeddings(family, tmp_path):
    cks = make_tiny_checkpoints(tmp_path / "tiny", formats=("mpt",) if family == "mpt" else ("latest",))
    world = tmp_path / "world"
    write_world(world, n_train=4, n_test=1, bench_scenes=1)
    if family == "mpt":
        from llava_nb.tiny import save_tiny_mpt, train_neox_tokenizer
        from llava_nb.train.bases import toy_corpus
        base = tmp_path / "base_mpt"
        save_tiny_mpt(base, train_neox_tokenizer(base, toy_corpus(world)))
    else: base = cks.paths["base_lm"]
    args = ["--model_name_or_path", base, "--vision_tower", cks.paths["clip"], "--version", "mpt" if family == "mpt" else "plain",
            "--data_path", world / "pretrain.json", "--image_folder", world / "images", "--mm_projector_type", "linear",
            "--tune_mm_mlp_adapter", True, "--mm_use_im_start_end", True, "--mm_use_im_patch_token", False, "--max_steps", 2,
            "--per_device_train_batch_size", 2, "--learning_rate", 1e-2, "--model_max_length", 512, "--save_strategy", "no",
            "--report_to", "none", "--dataloader_num_workers", 0, "--output_dir", tmp_path / "stage1"]
    proc = subprocess.run([sys.executable, "-m", "llava_nb.train.train_mem", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(tmp_path / "stage1" / "mm_projector.bin")
    key = "transformer.wte.weight" if family == "mpt" else "model.embed_tokens.weight"
    base_vocab = len(AutoTokenizer.from_pretrained(base))
    assert key in saved and saved[key].shape[0] == base_vocab + 2, {k: tuple(v.shape) for k, v in saved.items()}
    tokenizer, model, _, _ = load_pretrained_model(tmp_path / "stage1", model_base=base, device="cpu")
    assert len(tokenizer) == base_vocab + 2
    assert torch.equal(model.get_input_embeddings().weight, saved[key].to(model.dtype))
