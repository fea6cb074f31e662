"""LLaVA-Lightning-MPT in llava_nb: the seed's serving command with an MPT `--model-path` (controller, worker, OpenAI API, web UI
client), `run_llava`, the CLI and `model_vqa` on a tiny `llava_mpt` checkpoint; the 2023 preview's format; and
`llava_lightning mpt --run` turning a tiny plain MPT into a LLaVA-MPT that answers, on toy data."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from llava_nb.conversation import conv_templates
from llava_nb.model.builder import load_pretrained_model
from llava_nb.reference import ROOT
from llava_nb.serve.controller import free_port, start_server, stop_server
from llava_nb.testing import PROMPT_MPT, example_image, example_inputs, make_tiny_checkpoints

HOST = "127.0.0.1"
NAME = "LLaVA-Lightning-MPT-7B-preview"  # the seed's checkpoint name: the web UI and run_llava pick the `mpt` template from it
STOP = "<|im_end|>"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpt")
    cks = make_tiny_checkpoints(root / "tiny", formats=("mpt", "mpt_2023"))
    folder = shutil.copytree(cks.paths["mpt"], root / NAME)
    example_image().save(root / "image.png")
    return cks, folder, root / "image.png"


def greedy_answer(folder, prompt, max_new_tokens=8) -> str:
    "llava_nb's own greedy answer to `prompt` about the example image, cut at the `mpt` template's stop string."
    tokenizer, model, processor, _ = load_pretrained_model(folder, device="cpu")
    ids, pixels = example_inputs(model, tokenizer, processor, prompt)
    out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=max_new_tokens)[0]
    return tokenizer.decode(out, skip_special_tokens=True).split(STOP)[0]


def run(*argv, stdin=None, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, argv)], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_both_mpt_formats_load_with_the_logits_they_were_written_with(tiny):
    cks, _, _ = tiny
    for name, fmt in (("mpt", "latest"), ("mpt_2023", "2023")):
        tokenizer, model, processor, context = load_pretrained_model(cks.paths[name], device="cpu")
        ids, pixels = example_inputs(model, tokenizer, processor)
        with torch.no_grad(): logits = model(input_ids=ids, images=pixels).logits[..., :cks.columns(name)]
        assert type(model).__name__ == "LlavaMptForCausalLM" and model.config.llava_format == fmt
        assert (logits - cks.expected[name]).abs().max().item() <= 1e-5, name
        assert context == 512  # the tiny MPT's ALiBi table (max_seq_len)
    from transformers import AutoModelForCausalLM
    assert type(AutoModelForCausalLM.from_pretrained(cks.paths["mpt"])).__name__ == "LlavaMptForCausalLM"  # the Auto classes know llava_mpt


def test_the_seed_worker_command_serves_an_mpt_checkpoint(tiny, tmp_path):
    "`python -m llava.serve.model_worker --host --controller --port --worker --model-path` with llava_nb, behind its controller."
    _, folder, _ = tiny
    cport, wport = free_port(), free_port()
    controller, worker = f"http://{HOST}:{cport}", f"http://{HOST}:{wport}"
    servers = [start_server(["-m", "llava_nb.serve.controller", "--host", HOST, "--port", str(cport)], f"{controller}/list_models",
                            log_path=tmp_path / "controller.log")]
    try:
        servers.append(start_server(["-m", "llava_nb.serve.model_worker", "--host", HOST, "--controller", controller, "--port", str(wport),
                                     "--worker", worker, "--model-path", str(folder), "--device", "cpu"],
                                    f"{worker}/worker_get_status", log_path=tmp_path / "worker.log"))
        assert NAME in httpx.post(f"{controller}/list_models", timeout=10).json()["models"]
        address = httpx.post(f"{controller}/get_worker_address", json={"model": NAME}, timeout=10).json()["address"]
        image = _b64_image()
        body = {"model": NAME, "prompt": PROMPT_MPT, "images": [image], "temperature": 0, "max_new_tokens": 8, "stop": STOP}
        chunks = [json.loads(c) for c in httpx.post(f"{address}/worker_generate_stream", json=body, timeout=120).text.split("\0") if c]
        assert chunks and chunks[-1]["error_code"] == 0, chunks[-1:]
        served = chunks[-1]["text"]
        served = served[len(PROMPT_MPT):] if served.startswith(PROMPT_MPT) else served
        assert served == greedy_answer(folder, PROMPT_MPT), (served, greedy_answer(folder, PROMPT_MPT))
        message = {"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                               {"type": "image_url", "image_url": {"url": "data:image/png;base64," + image}}]}
        r = httpx.post(f"{controller}/v1/chat/completions", json={"model": NAME, "messages": [message], "max_tokens": 8, "temperature": 0},
                       timeout=120)
        assert r.status_code == 200, r.text
        assert STOP not in r.json()["choices"][0]["message"]["content"]
        from llava_nb.serve.gradio_web_server import add_text, new_conversation, stream_answer
        state = add_text(new_conversation(NAME), "What colour is the circle?", example_image(), "Pad")
        assert state.version == "mpt" and state.sep == STOP  # the template the reference's web UI picks for the name
        answers = list(stream_answer(controller, state, NAME, temperature=0.2, top_p=0.7, max_new_tokens=8))
        assert answers and not any(failed for _, failed in answers), answers
    finally:
        for proc in reversed(servers): stop_server(proc)


def _b64_image() -> str:
    import base64, io
    buf = io.BytesIO()
    example_image().save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_run_llava_cli_and_model_vqa_answer_with_an_mpt_checkpoint(tiny, tmp_path):
    _, folder, image = tiny
    out = run("-m", "llava_nb.eval.run_llava", "--model-path", folder, "--image-file", image, "--query", "What colour is the circle?",
              "--temperature", 0, "--max_new_tokens", 8)
    assert out.strip() and STOP not in out, out
    cli = run("-m", "llava_nb.serve.cli", "--model-path", folder, "--image-file", image, "--temperature", 0, "--max-new-tokens", 8,
              stdin="What colour is the circle?\n")
    assert "ASSISTANT" in cli or "assistant" in cli, cli[-1000:]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": k, "image": image.name, "text": q}) + "\n"
                                 for k, q in enumerate(["What colour is the circle?", "Where is the square?"])))
    run("-m", "llava_nb.eval.model_vqa", "--model-path", folder, "--question-file", questions, "--image-folder", image.parent,
        "--answers-file", tmp_path / "answers.jsonl", "--conv-mode", "mpt", "--temperature", 0, "--max_new_tokens", 8)
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [0, 1] and all(STOP not in a["text"] for a in answers), answers
    conv = conv_templates["mpt"].copy()  # the prompt model_vqa builds: the template's system, then <image> and the question
    conv.append_message(conv.roles[0], "<image>\nWhat colour is the circle?")
    conv.append_message(conv.roles[1], None)
    assert answers[0]["text"] == greedy_answer(folder, conv.get_prompt()).strip(), answers[0]


def test_llava_lightning_mpt_run_runs_both_stages_and_its_output_loads_and_generates(tiny, tmp_path):
    "`llava_lightning mpt --run` (the seed's `train_lightning_mpt.sh`): stage 1, projector extraction, stage 2, on a tiny MPT and toy data."
    from llava_nb.toyworld import write_world
    cks, _, image = tiny
    world = tmp_path / "world"
    write_world(world, n_train=8, n_test=2, bench_scenes=1)
    lightning = Path(sys.executable).parent / "llava_lightning"  # the console script, as a user runs it
    proc = subprocess.run([str(lightning), "mpt", "--run",
                           "--nproc", "1", "--model", cks.paths["base_mpt"], "--vision-tower", cks.paths["clip"],
                           "--pretrain-data", world / "pretrain.json", "--pretrain-images", world / "images",
                           "--instruct-data", world / "instruct.json", "--instruct-images", world / "images", "--out", tmp_path / "ck"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "--version mpt" in proc.stdout and "MptBlock" in proc.stdout
    assert (tmp_path / "ck" / "mm_projector" / "llava-lightning-mpt-pretrain.bin").exists()
    trained = tmp_path / "ck" / "llava-lightning-mpt"
    tokenizer, model, processor, _ = load_pretrained_model(trained, device="cpu")
    assert type(model).__name__ == "LlavaMptForCausalLM" and model.config.mm_projector_type == "linear"
    ids, pixels = example_inputs(model, tokenizer, processor, PROMPT_MPT)
    out = model.generate(ids, images=pixels, do_sample=False, max_new_tokens=8)[0]
    assert len(out) > 0 and tokenizer.decode(out, skip_special_tokens=True).strip()


def test_stage_1_and_2_make_a_tiny_plain_mpt_answer_toy_questions(tiny, tmp_path):
    "A plain MPT (no vision) becomes a LLaVA-MPT by stage 1 (projector) and stage 2 (all but the tower), `--version mpt`, and answers."
    from PIL import Image
    from llava_nb.mm_utils import process_images, tokenizer_image_token
    from llava_nb.toyworld import write_world
    cks, _, _ = tiny
    world = tmp_path / "world"
    write_world(world, n_train=8, n_test=2, bench_scenes=1)
    records = [r for r in json.loads((world / "instruct.json").read_text()) if r["id"].endswith("-conv")]  # short two-turn talks
    (world / "short.json").write_text(json.dumps(records))
    common = ["--vision_tower", cks.paths["clip"], "--image_folder", world / "images", "--version", "mpt", "--mm_projector_type", "linear",
              "--mm_use_im_start_end", False, "--mm_use_im_patch_token", False, "--image_aspect_ratio", "pad", "--save_strategy", "no",
              "--report_to", "none", "--model_max_length", 512, "--dataloader_num_workers", 0, "--per_device_train_batch_size", 4]
    from llava_nb.tiny import save_tiny_mpt, train_neox_tokenizer
    from llava_nb.train.bases import toy_corpus
    base = tmp_path / "base_mpt"  # a tiny MPT whose BPE was trained on the world's words, as a real MPT's covers English
    save_tiny_mpt(base, train_neox_tokenizer(base, toy_corpus(world)))
    run("-m", "llava_nb.train.train_mem", "--model_name_or_path", base, "--data_path", world / "pretrain.json", "--tune_mm_mlp_adapter", True,
        "--max_steps", 10, "--learning_rate", 1e-2, "--output_dir", tmp_path / "stage1", *common)
    run("-m", "llava_nb.train.train_mem", "--model_name_or_path", base, "--data_path", world / "short.json", "--max_steps", 80,
        "--learning_rate", 3e-3, "--pretrain_mm_mlp_adapter", tmp_path / "stage1" / "mm_projector.bin", "--output_dir", tmp_path / "stage2",
        *common)
    tokenizer, model, processor, _ = load_pretrained_model(tmp_path / "stage2", device="cpu")
    right, report = 0, []
    for rec in records:
        conv = conv_templates["mpt"].copy()
        question = rec["conversations"][0]["value"].replace("<image>", "").strip()
        conv.append_message(conv.roles[0], "<image>\n" + question)
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
        pixels = process_images([Image.open(world / "images" / rec["image"]).convert("RGB")], processor, model.config)
        text = tokenizer.decode(model.generate(ids, images=pixels, do_sample=False, max_new_tokens=40)[0], skip_special_tokens=True)
        expected = rec["conversations"][1]["value"]
        right += text.startswith(expected + STOP)  # the trained answer, then the template's stop string
        report.append(f"{question!r}: {text.split(STOP)[0]!r} (trained: {expected!r})")
    print("\n".join(report))
    assert right >= len(records) - 2, "\n".join(report)


def test_the_worker_engine_batches_both_mpt_formats_and_answers_as_generate_does(tiny):
    "The worker's batching engine (what the seed's worker command runs) on the latest and the 2023 (`<im_patch>`) MPT formats."
    from llava_nb.serve.engine import BatchEngine, GenerationRequest
    from llava_nb.testing import PROMPT_MPT_2023
    cks, _, _ = tiny
    for name, prompt in (("mpt", PROMPT_MPT), ("mpt_2023", PROMPT_MPT_2023)):
        tokenizer, model, processor, context = load_pretrained_model(cks.paths[name], device="cpu")
        engine = BatchEngine(tokenizer, model, processor, context)
        prompts = [prompt, prompt.replace("What colour is the circle?", "Where is the square?")]
        requests = engine.generate([GenerationRequest(p, [example_image()], temperature=0, max_new_tokens=8, stop=[STOP]) for p in prompts])
        for request, p in zip(requests, prompts):  # batched with each other, each answers what it answers alone
            assert request.error is None and request.text == greedy_answer(cks.paths[name], p), (name, request.text, request.error)
