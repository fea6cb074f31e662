"""Serving across the two implementations, as processes on loopback: llava_nb's controller, OpenAI API and web UI client in
front of the reference's own model worker (llava-torch 1.2.2.post1, `--device cpu`), and the reference's controller and `test_message.py`
in front of llava_nb's model worker; and both workers behind one controller on a LLaVA-1.6 checkpoint."""
import base64
import io
import shutil
import subprocess
import time

import httpx
import pytest

from llava_nb.reference import REFERENCE_PYTHON, reference_env

from llava_nb.serve.controller import free_port, iter_chunks, start_server, stop_server
from llava_nb.testing import example_image, make_tiny_checkpoints

HOST = "127.0.0.1"


def start_reference(args, ready_url, log_path):
    "Start a reference server with its own Python, in the log's folder (it writes logs to '.'), and wait until `ready_url` answers."
    return start_server(args, ready_url, env=reference_env(), log_path=log_path, python=REFERENCE_PYTHON, cwd=log_path.parent)


def wait_for_model(controller: str, name: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if name in httpx.post(f"{controller}/list_models", timeout=5).json()["models"]: return
        time.sleep(0.5)
    raise TimeoutError(f"{name} never registered with {controller}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    "A tiny LLaVA checkpoint written by llava_nb, in a folder whose name says 'llava' (the reference's worker reads the format from it)."
    root = tmp_path_factory.mktemp("serving")
    cks = make_tiny_checkpoints(root / "tiny", formats=("latest",))
    return shutil.copytree(cks.paths["latest"], root / "llava-tiny")


def image_url() -> str:
    buf = io.BytesIO()
    example_image().save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_llava_nb_controller_and_openai_api_in_front_of_a_reference_worker(model_dir, tmp_path):
    cport, wport = free_port(), free_port()
    controller = f"http://{HOST}:{cport}"
    servers = [start_server(["-m", "llava_nb.serve.controller", "--host", HOST, "--port", str(cport)], f"{controller}/list_models",
                            log_path=tmp_path / "controller.log")]
    try:
        servers.append(start_reference(["-m", "llava.serve.model_worker", "--host", HOST, "--port", wport, "--worker-address",
                                        f"http://{HOST}:{wport}", "--controller-address", controller, "--model-path", model_dir,
                                        "--device", "cpu"], f"http://{HOST}:{wport}/worker_get_status", tmp_path / "worker.log"))
        wait_for_model(controller, "llava-tiny")
        message = {"role": "user", "content": [{"type": "text", "text": "What colour is the circle?"},
                                               {"type": "image_url", "image_url": {"url": image_url()}}]}
        for stop in (None, "###", ["\n\n", "###", "The"]):  # a list used to reach the reference worker and fail there (502)
            body = {"model": "llava-tiny", "messages": [message], "max_tokens": 8, "temperature": 0}
            if stop is not None: body["stop"] = stop
            r = httpx.post(f"{controller}/v1/chat/completions", json=body, timeout=120)
            assert r.status_code == 200, (stop, r.text, open(tmp_path / "worker.log").read()[-2000:])
            answer = r.json()["choices"][0]
            assert isinstance(answer["message"]["content"], str) and answer["finish_reason"] in ("stop", "length")
            for s in [stop] if isinstance(stop, str) else stop or []: assert s not in answer["message"]["content"]
        streamed = httpx.post(f"{controller}/v1/chat/completions", json={**body, "stream": True}, timeout=120)
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text[-500:]
        # the web UI's own client (what its Send button runs), through the controller to the reference worker
        from llava_nb.serve.gradio_web_server import add_text, new_conversation, stream_answer
        state = add_text(new_conversation("llava-tiny"), "What colour is the circle?", example_image(), "Pad")
        answers = list(stream_answer(controller, state, "llava-tiny", temperature=0.2, top_p=0.7, max_new_tokens=8))
        assert answers and not any(failed for _, failed in answers), answers
        assert answers[-1][0].strip(), answers
    finally:
        for proc in reversed(servers): stop_server(proc)


def test_reference_controller_and_test_message_in_front_of_a_llava_nb_worker(model_dir, tmp_path):
    cport, wport = free_port(), free_port()
    controller = f"http://{HOST}:{cport}"
    servers = [start_reference(["-m", "llava.serve.controller", "--host", HOST, "--port", cport], f"{controller}/list_models",
                               tmp_path / "controller.log")]
    try:
        servers.append(start_server(["-m", "llava_nb.serve.model_worker", "--host", HOST, "--port", str(wport), "--worker-address",
                                     f"http://{HOST}:{wport}", "--controller-address", controller, "--model-path", str(model_dir),
                                     "--device", "cpu"], f"http://{HOST}:{wport}/worker_get_status", log_path=tmp_path / "worker.log"))
        wait_for_model(controller, "llava-tiny")
        proc = subprocess.run([str(REFERENCE_PYTHON), "-m", "llava.serve.test_message", "--controller-address", controller,
                               "--model-name", "llava-tiny", "--max-new-tokens", "8"], env=reference_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert f"worker_addr: http://{HOST}:{wport}" in proc.stdout and "Models: ['llava-tiny']" in proc.stdout, proc.stdout
        prompt, _, answer = proc.stdout.partition("words.\n")  # it prints the prompt a word a line (its sep is ' '), then the answer
        assert "Tell" in prompt and answer.strip(), proc.stdout
    finally:
        for proc in reversed(servers): stop_server(proc)


# The reference's worker casts pixels to torch.float16 and its builder loads the model in float16; on CPU it runs, but answers
# differ from llava_nb's float32 ones. In its process torch.float16 is read as float32 (as `reference_side.fp32_builder` does for
# the builder alone: here the worker's own casts need it too, or its CLIP tower hands half features to a float32 projector).
REFERENCE_WORKER_FP32 = ("import runpy, torch; torch.float16 = torch.float32; "
                         "runpy.run_module('llava.serve.model_worker', run_name='__main__', alter_sys=True)")


def test_reference_worker_and_llava_nb_worker_answer_alike_on_a_llava_1_6_checkpoint(tmp_path):
    "The reference's worker and llava_nb's serve one tiny LLaVA-1.6 checkpoint behind one controller: images of four shapes, the same greedy answers."
    cks = make_tiny_checkpoints(tmp_path / "tiny", formats=("v1_6",))
    model_dir = shutil.copytree(cks.paths["v1_6"], tmp_path / "llava-v1.6-tiny")  # 'llava' in the name: the reference's worker takes images
    cport, rport, nport = free_port(), free_port(), free_port()
    controller = f"http://{HOST}:{cport}"
    servers = [start_server(["-m", "llava_nb.serve.controller", "--host", HOST, "--port", str(cport)], f"{controller}/list_models",
                            log_path=tmp_path / "controller.log")]
    try:
        servers.append(start_reference(["-c", REFERENCE_WORKER_FP32, "--host", HOST, "--port", rport, "--worker-address", f"http://{HOST}:{rport}",
                                        "--controller-address", controller, "--model-path", model_dir, "--device", "cpu"],
                                       f"http://{HOST}:{rport}/worker_get_status", tmp_path / "reference_worker.log"))
        servers.append(start_server(["-m", "llava_nb.serve.model_worker", "--host", HOST, "--port", str(nport), "--controller", controller,
                                     "--model-path", str(model_dir), "--model-name", "llava-v1.6-tiny-nb", "--device", "cpu"],
                                    f"http://{HOST}:{nport}/worker_get_status", log_path=tmp_path / "worker.log"))
        wait_for_model(controller, "llava-v1.6-tiny")
        wait_for_model(controller, "llava-v1.6-tiny-nb")
        prompt = "USER: <image>\nWhat colour is the circle? ASSISTANT:"
        answers = {}
        for size in [(90, 40), (40, 90), (48, 48), (200, 30)]:  # 3 x 1, 1 x 3 and 2 x 2 tiles, and a strip cut to few rows
            buf = io.BytesIO()
            example_image(*size).save(buf, format="PNG")
            body = {"prompt": prompt, "images": [base64.b64encode(buf.getvalue()).decode()], "temperature": 0, "max_new_tokens": 8, "stop": "</s>"}
            for name in ("llava-v1.6-tiny", "llava-v1.6-tiny-nb"):
                r = httpx.post(f"{controller}/worker_generate_stream", json={**body, "model": name}, timeout=120)
                last = list(iter_chunks([r.content]))[-1]
                assert last["error_code"] == 0 and last["text"].startswith(prompt), (name, last, open(tmp_path / "reference_worker.log").read()[-2000:])
                answers[size, name] = last["text"][len(prompt):]
            assert answers[size, "llava-v1.6-tiny"] == answers[size, "llava-v1.6-tiny-nb"], (size, answers)
        assert len({a for a in answers.values()}) > 1, answers  # the image's shape changes the answer
    finally:
        for proc in reversed(servers): stop_server(proc)
