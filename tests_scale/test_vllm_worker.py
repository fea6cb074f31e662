"""The vLLM worker with the real vLLM (CPU build, `make vllm-env`), as processes on loopback: llava_nb's controller with a llava_nb
worker and a vLLM worker serving the same weights. Greedy answers are equal through both; the OpenAI API (the `openai` client),
the web UI's client and the reference's CLI client (`llava.serve.test_message`, against llava_nb's controller and the
reference's) reach the model through the vLLM worker; a vLLM worker and a vLLM server killed mid-stream are handled like any
worker that dies. Run by `make test-scale` (not by `make test`: vLLM takes minutes to start)."""
import base64
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest
from safetensors.torch import load_file, save_file

from llava_nb.reference import REFERENCE_PYTHON, reference_env
from llava_nb.serve.controller import free_port, iter_chunks, start_server, stop_server
from llava_nb.serve.vllm_worker import vllm_env_dir
from llava_nb.testing import PROMPT_LATEST, example_image, make_tiny_checkpoints

HOST = "127.0.0.1"
TEST_SECONDS = 300  # the most one test may take (the module's vLLM start is bounded by the worker's --startup-timeout)
PROMPTS = [PROMPT_LATEST,
           "A chat between a curious human and an artificial intelligence assistant. USER: <image>\nWhat is on the left? <image>\n"
           "And here? ASSISTANT:",
           "USER: Describe a red circle. ASSISTANT:"]


def vllm_ready_checkpoint(root):
    """The tiny reference-format checkpoint, made fit for vLLM's CPU build: two attention heads of 32 instead of four of 16 (its
    CPU attention takes head sizes from 32; the weights keep their shapes), and the special and byte tokens never preferred
    (their rows of lm_head zeroed), so greedy answers are words, which every detokenizer writes alike, and run to max_new_tokens."""
    cks = make_tiny_checkpoints(root / "tiny", formats=("latest",))
    ckpt = shutil.copytree(cks.paths["latest"], root / "llava-tiny")
    config = json.loads((ckpt / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1)
    config.pop("head_dim", None)
    (ckpt / "config.json").write_text(json.dumps(config, indent=2))
    weights = load_file(ckpt / "model.safetensors")
    weights["lm_head.weight"][:259] = 0  # <unk>, <s>, </s> and the 256 byte tokens: logit 0, below the best word's
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    return ckpt


def post(url, **kw): return httpx.post(url, timeout=30, **kw)


def group_alive(pgid: int) -> bool:
    "Whether any process of the process group `pgid` (vLLM's server and its engine processes) is still running."
    try: os.killpg(pgid, 0)
    except ProcessLookupError: return False
    return True


def group_members(pgid: int) -> list[int]:
    "The pids of the process group `pgid`."
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit(): continue
        try: stat = open(f"/proc/{entry}/stat").read()
        except OSError: continue  # it ended meanwhile
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid: members.append(int(entry))  # fields after the name: state, ppid, pgrp
    return members


def wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition(): return
        time.sleep(0.3)
    raise TimeoutError(f"{what}: not within {timeout} s")


def image_b64(image=None) -> str:
    buf = io.BytesIO()
    (image or example_image()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMAGES = [image_b64(), image_b64(example_image(40, 30).rotate(90))]


def stream(url, model, prompt, max_new_tokens=24, **kw):
    "The chunks of one /worker_generate_stream answer (at a worker or a controller)."
    body = {"model": model, "prompt": prompt, "images": IMAGES[:prompt.count("<image>")], "temperature": 0,
            "max_new_tokens": max_new_tokens, **kw}
    with httpx.stream("POST", url + "/worker_generate_stream", json=body, timeout=120) as r:
        return list(iter_chunks(r.iter_bytes()))


def answer(url, model, prompt, **kw) -> dict:
    chunks = stream(url, model, prompt, **kw)
    assert chunks and chunks[-1].get("error_code") == 0, chunks[-1:]
    return chunks[-1]


@pytest.fixture(autouse=True)
def bounded():
    "Each test ends within TEST_SECONDS (SIGALRM raises in it)."
    def expire(signum, frame): raise TimeoutError(f"the test ran over {TEST_SECONDS} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    "llava_nb's controller, a llava_nb worker ('llava-tiny') and a vLLM worker that starts vLLM ('llava-tiny-vllm'), one checkpoint."
    python = vllm_env_dir() / "bin" / "python"
    if not python.exists(): pytest.fail(f"no vLLM environment at {python.parent.parent}: run `make vllm-env` (tools/vllm_env.sh)")
    root = tmp_path_factory.mktemp("scale")
    ckpt = vllm_ready_checkpoint(root)
    cport, p1, p2 = free_port(), free_port(), free_port()
    s = {"root": root, "ckpt": ckpt, "controller": f"http://{HOST}:{cport}", "llava_nb": f"http://{HOST}:{p1}", "vllm": f"http://{HOST}:{p2}",
         "procs": {}}
    procs = s["procs"]
    try:
        procs["controller"] = start_server(["-m", "llava_nb.serve.controller", "--host", HOST, "--port", cport, "--heart-beat-expiration", "4"],
                                           s["controller"] + "/list_models", log_path=root / "controller.log")
        procs["llava_nb"] = start_server(["-m", "llava_nb.serve.model_worker", "--host", HOST, "--port", p1, "--worker", s["llava_nb"],
                                          "--controller", s["controller"], "--model-path", ckpt, "--model-name", "llava-tiny", "--device", "cpu",
                                          "--heart-beat-interval", "1", "--num-threads", "1"],
                                         s["llava_nb"] + "/worker_get_status", log_path=root / "llava_nb_worker.log")
        start = time.time()
        procs["vllm"] = start_server(["-m", "llava_nb.serve.vllm_worker", "--host", HOST, "--port", p2, "--worker", s["vllm"],
                                      "--controller", s["controller"], "--model-path", ckpt, "--model-name", "llava-tiny-vllm",
                                      "--converted-dir", root / "converted", "--vllm-log", root / "vllm.log", "--heart-beat-interval", "1",
                                      "--startup-timeout", "900"],
                                     s["vllm"] + "/worker_get_status", timeout=960, log_path=root / "vllm_worker.log")
        s["startup_seconds"] = time.time() - start
        print(f"\nthe vLLM worker answered {s['startup_seconds']:.0f} s after it was started (conversion and vLLM's start included)")
        s["details"] = post(s["vllm"] + "/model_details").json()
        s["vllm_url"] = s["details"]["engine"]["url"]
        wait_until(lambda: post(s["controller"] + "/list_models").json()["models"] == ["llava-tiny", "llava-tiny-vllm"], 30, "both registered")
        yield s
    finally:
        for proc in reversed(list(procs.values())): stop_server(proc)
    if "details" in s:  # the vLLM this worker started is gone with all its processes, whether the worker stopped or vLLM was killed
        wait_until(lambda: not group_alive(s["details"]["engine"]["pid"]), 30, "vLLM's processes ended")


def test_both_workers_registered(stack):
    workers = post(stack["controller"] + "/list_workers").json()
    assert {workers[stack["llava_nb"]]["model_names"][0], workers[stack["vllm"]]["model_names"][0]} == {"llava-tiny", "llava-tiny-vllm"}
    engine = stack["details"]["engine"]
    assert engine["name"] == "vllm" and engine["image_gap"] == " " and engine["pid"] > 0, engine
    assert stack["details"]["context_length"] == 512
    assert post(stack["vllm"] + "/worker_get_status").json() == {"model_names": ["llava-tiny-vllm"], "speed": 1, "queue_length": 0}


def test_prompt_tokens_equal_llava_nb(stack):
    "The tokens vLLM's processor gives the vLLM worker's prompt are llava_nb's (`tokenizer_image_token`, each image its 16 features)."
    from llava_nb.core import IMAGE_TOKEN_INDEX
    from llava_nb.mm_utils import tokenizer_image_token
    from llava_nb.serve.vllm_worker import chat_body
    from llava_nb.serve.engine import GenerationRequest
    from llava_nb.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(stack["ckpt"])
    for prompt in PROMPTS:
        n = prompt.count("<image>")
        images = [example_image(), example_image(40, 30).rotate(90)][:n]
        body = {**chat_body(GenerationRequest(prompt, images, max_new_tokens=1), "llava-tiny-vllm", gap=" "), "stream": False,
                "return_token_ids": True}
        body.pop("stream_options")
        r = post(stack["vllm_url"] + "/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        ours = [t for i in tokenizer_image_token(prompt, tokenizer) for t in ([512] * 16 if i == IMAGE_TOKEN_INDEX else [i])]
        assert r.json()["prompt_token_ids"] == ours, prompt


def test_greedy_answers_equal(stack):
    "Greedy answers (text, finish reason, token counts) of the vLLM worker are llava_nb's worker's, asked directly and through the controller."
    for prompt in PROMPTS:
        ours = answer(stack["llava_nb"], "llava-tiny", prompt)
        theirs = answer(stack["vllm"], "llava-tiny-vllm", prompt)
        print(f"\n{prompt!r}\n  llava_nb: {ours['text'][len(prompt):]!r}\n  vLLM:     {theirs['text'][len(prompt):]!r}")
        assert len(ours["text"]) > len(prompt) + 20
        assert theirs["text"] == ours["text"]
        counts = lambda usage: [usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")]  # llava_nb's adds its cached tokens
        assert (theirs["finish_reason"], counts(theirs["usage"])) == (ours["finish_reason"], counts(ours["usage"]))
        assert theirs["finish_reason"] == "length"
        via_controller = answer(stack["controller"], "llava-tiny-vllm", prompt)
        assert via_controller["text"] == ours["text"]
    words = ours["text"][len(prompt):].split()
    stop = words[len(words) // 2]  # a word from the middle of the answer: both cut there
    cut = [answer(url, model, prompt, stop=[stop]) for url, model in [(stack["llava_nb"], "llava-tiny"), (stack["vllm"], "llava-tiny-vllm")]]
    assert cut[0]["text"] == cut[1]["text"] and stop not in cut[1]["text"][len(prompt):] and cut[1]["finish_reason"] == "stop", cut
    sampled = answer(stack["vllm"], "llava-tiny-vllm", PROMPTS[0], temperature=0.8, top_p=0.9)
    assert sampled["text"].startswith(PROMPTS[0]) and sampled["usage"]["completion_tokens"] == 24


def test_errors_carry_their_cause(stack):
    too_long = "USER: " + "a b c d " * 400 + "ASSISTANT:"
    chunks = stream(stack["vllm"], "llava-tiny-vllm", too_long)
    assert chunks[-1]["error_code"] == 1 and "maximum context length is 512" in chunks[-1]["text"], chunks[-1]
    assert chunks[-1]["error_type"] == "context_length"
    chunks = stream(stack["controller"], "llava-tiny-vllm", PROMPT_LATEST, images=[])
    assert "the prompt has 1 <image> placeholder(s) but 0 image(s)" in chunks[-1]["text"], chunks
    r = post(stack["vllm"] + "/worker_generate_stream", json={"prompt": PROMPT_LATEST, "images": ["%%%"]})
    assert r.status_code == 400 and "image #0" in r.json()["text"], r.text


def test_openai_api(stack):
    "The official client against llava_nb's controller: the vLLM worker's greedy answer is llava_nb's worker's, streamed or not."
    from openai import OpenAI
    client = OpenAI(base_url=stack["controller"] + "/v1", api_key="none", timeout=120)
    message = {"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                           {"type": "image_url", "image_url": {"url": "data:image/png;base64," + IMAGES[0]}}]}
    got = {}
    for model in ("llava-tiny", "llava-tiny-vllm"):
        r = client.chat.completions.create(model=model, messages=[message], temperature=0, max_tokens=16)
        got[model] = r.choices[0].message.content
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    print(got)
    assert got["llava-tiny-vllm"] == got["llava-tiny"] and got["llava-tiny"].strip()
    pieces = client.chat.completions.create(model="llava-tiny-vllm", messages=[message], temperature=0, max_tokens=16, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == got["llava-tiny"]
    assert "llava-tiny-vllm" in [m.id for m in client.models.list().data]


def test_web_ui_client(stack):
    "What the web UI's Send button runs (`stream_answer`), through the controller to each worker: the same answer."
    from llava_nb.serve.gradio_web_server import add_text, new_conversation, stream_answer
    got = {}
    for model in ("llava-tiny", "llava-tiny-vllm"):
        state = add_text(new_conversation(model), "What colour is the circle?", example_image(), "Pad")
        answers = list(stream_answer(stack["controller"], state, model, temperature=0, top_p=0.7, max_new_tokens=12))
        assert answers and not any(failed for _, failed in answers), answers
        got[model] = answers[-1][0]
    assert got["llava-tiny-vllm"] == got["llava-tiny"] and got["llava-tiny"].strip(), got


def run_test_message(controller, cwd):
    proc = subprocess.run([str(REFERENCE_PYTHON), "-m", "llava.serve.test_message", "--controller-address", controller,
                           "--model-name", "llava-tiny-vllm", "--max-new-tokens", "8"], env=reference_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def test_reference_cli_through_both_controllers(stack, tmp_path):
    "The reference's CLI client (`test_message`) reaches the vLLM worker through llava_nb's controller, and through the reference's "
    "controller with which a second vLLM worker (on the same vLLM server, `--vllm-url`) registers."
    out = run_test_message(stack["controller"], tmp_path)
    assert f"worker_addr: {stack['vllm']}" in out and "Models: ['llava-tiny', 'llava-tiny-vllm']" in out, out
    assert "vLLM worker" not in out and "error" not in out.lower(), out
    cport, wport = free_port(), free_port()
    controller, worker = f"http://{HOST}:{cport}", f"http://{HOST}:{wport}"
    procs = [start_server(["-m", "llava.serve.controller", "--host", HOST, "--port", cport], controller + "/list_models",
                          env=reference_env(), log_path=tmp_path / "ref_controller.log", python=REFERENCE_PYTHON, cwd=tmp_path)]
    try:
        procs.append(start_server(["-m", "llava_nb.serve.vllm_worker", "--host", HOST, "--port", wport, "--worker", worker,
                                   "--controller", controller, "--vllm-url", stack["vllm_url"], "--model-name", "llava-tiny-vllm"],
                                  worker + "/worker_get_status", log_path=tmp_path / "worker.log"))
        out = run_test_message(controller, tmp_path)
        assert f"worker_addr: {worker}" in out and "Models: ['llava-tiny-vllm']" in out, out
        assert "vLLM worker" not in out and "error" not in out.lower(), out
    finally:
        for proc in reversed(procs): stop_server(proc)


def start_vllm_url_worker(stack, name):
    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start_server(["-m", "llava_nb.serve.vllm_worker", "--host", HOST, "--port", port, "--worker", url, "--controller",
                         stack["controller"], "--vllm-url", stack["vllm_url"], "--model-name", name, "--heart-beat-interval", "1"],
                        url + "/worker_get_status", log_path=stack["root"] / f"worker_{port}.log")
    stack["procs"][url] = proc
    return url, proc


def first_chunk_then(url, model, action, max_new_tokens=440):
    "Stream a long answer; run `action` when its first chunk arrives; return all the chunks."
    body = {"model": model, "prompt": PROMPTS[0], "images": IMAGES[:1], "temperature": 0, "max_new_tokens": max_new_tokens}
    chunks, acted = [], False
    with httpx.stream("POST", url + "/worker_generate_stream", json=body, timeout=120) as r:
        for chunk in iter_chunks(r.iter_bytes()):
            chunks.append(chunk)
            if not acted:
                action()
                acted = True
    return chunks


def test_one_model_name_two_engines_and_a_vllm_worker_killed_mid_stream(stack):
    "A second vLLM worker (`--vllm-url`, the same vLLM) joins under llava_nb's worker's name: the controller dispatches to both and the "
    "answers are one. Then, the llava_nb worker stopped, the vLLM worker is killed (SIGKILL) mid-stream: the stream ends with an error "
    "naming it, the controller drops it, and the vLLM server, which it did not own, goes on serving."
    url, proc = start_vllm_url_worker(stack, "llava-tiny")
    wait_until(lambda: url in post(stack["controller"] + "/list_workers").json(), 30, "the second vLLM worker registered")
    expected = answer(stack["llava_nb"], "llava-tiny", PROMPTS[1])["text"]
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, answer(stack["controller"], "llava-tiny", PROMPTS[1])["text"]))
               for i in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert results == [expected] * 4
    assert post(url + "/model_details").json()["engine"]["requests"] >= 1  # the controller dispatched to both engines

    stop_server(stack["procs"].pop("llava_nb"))
    chunks = first_chunk_then(stack["controller"], "llava-tiny", lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.wait(10)
    print(chunks[-1])
    assert chunks[-1]["error_code"] == 3 and f"the connection to worker {url} broke during generation" in chunks[-1]["text"], chunks[-1]
    assert len(chunks) < 400  # it ended early
    wait_until(lambda: url not in post(stack["controller"] + "/list_workers").json(), 30, "the killed worker dropped")
    wait_until(lambda: stack["llava_nb"] not in post(stack["controller"] + "/list_workers").json(), 30, "the stopped worker dropped")
    assert post(stack["controller"] + "/list_models").json()["models"] == ["llava-tiny-vllm"]
    assert answer(stack["controller"], "llava-tiny-vllm", PROMPTS[0])["text"].startswith(PROMPTS[0])


def test_vllm_server_killed_mid_stream(stack):
    "vLLM dies (SIGKILL) in the middle of an answer: the stream ends with an error naming vLLM, the worker that started it exits "
    "with the cause, and the controller drops it."
    pid = stack["details"]["engine"]["pid"]
    # A lone 440-token answer takes vLLM about 0.15 s, and on two cores its busy engine starves its own API server, the worker and
    # the controller: the first chunk can reach us after the whole answer was written, and a kill then comes too late. So when our
    # first chunk arrives, vLLM's engine processes (all but the API server) are stopped (SIGSTOP); if the answer still ends within
    # 0.5 s, the engine had finished it: it is let go on (SIGCONT) and a new request tried. Otherwise the engine is frozen in the
    # middle of the answer, and the server is killed there. Four streams kept going share the engine's batch, so it is slower.
    engine = [p for p in group_members(pid) if p != pid]
    assert engine, "vLLM's engine process was not found"
    busy = threading.Event()

    def keep_busy():
        while not busy.is_set():
            try: first_chunk_then(stack["controller"], "llava-tiny-vllm", lambda: None)
            except httpx.HTTPError: pass

    for t in [threading.Thread(target=keep_busy, daemon=True) for _ in range(4)]: t.start()
    time.sleep(1.0)
    for attempt in range(40):
        first, chunks = threading.Event(), []
        stream = threading.Thread(target=lambda: chunks.extend(first_chunk_then(stack["controller"], "llava-tiny-vllm", first.set)))
        stream.start()
        assert first.wait(60), "no first chunk"
        for p in engine: os.kill(p, signal.SIGSTOP)
        stream.join(0.5)
        if stream.is_alive(): break  # the answer is not over, and the engine is frozen: kill the server mid-answer
        for p in engine: os.kill(p, signal.SIGCONT)
    else: raise AssertionError("in 40 tries, the engine always had the whole answer when its first chunk arrived")
    busy.set()
    os.kill(pid, signal.SIGKILL)
    for p in engine: os.kill(p, signal.SIGCONT)  # the worker ends them (SIGTERM, then SIGKILL): a stopped process would hold a SIGTERM
    stream.join(60)
    print(f"killed at try {attempt + 1}")
    print(chunks[-1])
    assert chunks[0]["error_code"] == 0 and chunks[-1]["error_code"] != 0 and len(chunks) < 400, chunks[-1]  # text, then the error
    assert f"vLLM at {stack['vllm_url']}" in chunks[-1]["text"] or f"worker {stack['vllm']}" in chunks[-1]["text"], chunks[-1]
    worker = stack["procs"].pop("vllm")
    assert worker.wait(60) == 1  # the worker exits with an error
    log = (stack["root"] / "vllm_worker.log").read_text()
    assert f"the vLLM server this worker started (pid {pid}) exited" in log, log[-3000:]
    assert not group_alive(pid)  # its engine processes, which outlive a killed server, were ended too
    wait_until(lambda: not post(stack["controller"] + "/list_models").json()["models"], 30, "the worker dropped")
