"""``so8t serve`` through the official ``openai`` client, against servers the tests start on 127.0.0.1.

Two servers of the gate's Q8_0 export: ``open_server`` (the fixture's head was never trained, so the guard
is not active and says so) with the mmproj, and ``refusing_server``, whose sidecar carries a head that always
says REFUSE (its last layer's bias, marked trained): every text request must come back as a completion with
``finish_reason`` ``"content_filter"`` and no generated token. Request loops are bounded in count and time;
each server is stopped by its process id.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.llama
PROMPT = "Tell me about rotations."
STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, dict]:
    """(status, JSON body) of one plain HTTP request (http.client: no client library between us and the
    server's own error answers)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def _start(model: Path, *extra: str):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "so8t.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--ctx", "512", "--threads", "2", "--model-name", "m", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"so8t serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if _http("GET", f"http://127.0.0.1:{port}/v1/models", timeout=2)[0] == 200:
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"so8t serve did not answer within {STARTUP_S} s")


def _stop(proc) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def open_server(gguf_text, mmproj_f16):
    proc, url = _start(gguf_text["Q8_0"].path, "--mmproj", str(mmproj_f16))
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def refusing_gguf(so8t_random_dir, tmp_path_factory) -> Iterator[Path]:
    """The random-gate model with a safety head that always says REFUSE, marked trained, exported to Q8_0."""
    import torch
    from safetensors.torch import load_file, save_file

    from so8t.checkpoint.so8t_dir import GATES_FILE
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.safety import SAFETY_CLASSES

    root = tmp_path_factory.mktemp("refusing")
    model = Path(shutil.copytree(so8t_random_dir, root / "so8t", copy_function=os.link))
    (model / GATES_FILE).unlink()  # a hard link: write a new file, never through the link
    tensors = load_file(str(so8t_random_dir / GATES_FILE))
    tensors["safety_head.2.weight"] = torch.zeros_like(tensors["safety_head.2.weight"])
    tensors["safety_head.2.bias"] = torch.tensor([50.0 * (c == "REFUSE") for c in SAFETY_CLASSES])
    save_file(tensors, str(model / GATES_FILE))
    (model / "config.json").unlink()
    config = json.loads((so8t_random_dir / "config.json").read_text())
    config["so8t"]["training"] = {"trained": True, "safety_head_trained": True}
    (model / "config.json").write_text(json.dumps(config))
    (root / "gguf").mkdir()
    report = SO8TToGGUFConverter(model, progress=False).export(root / "gguf", quant_types=["Q8_0"],
                                                                model_name="refusing", mmproj=False)
    yield report.texts[0].path
    shutil.rmtree(root)  # the model once more in Q8_0: not kept until the session ends


@pytest.fixture(scope="module")
def refusing_server(refusing_gguf):
    proc, url = _start(refusing_gguf)
    yield url
    _stop(proc)


def _client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)


def _ask(client, content, **kwargs):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                          max_tokens=kwargs.pop("max_tokens", 6), **kwargs)


def test_models_and_an_unguarded_completion(open_server):
    client = _client(open_server)
    assert [m.id for m in client.models.list().data] == ["m"]
    done = _ask(client, PROMPT)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens >= 1
    assert done.model_extra["so8t"]["guard"] == "untrained" and done.model_extra["so8t"]["refused"] is False


def test_streaming_gives_the_same_text(open_server):
    client = _client(open_server)
    whole = _ask(client, PROMPT).choices[0].message.content
    chunks = list(_ask(client, PROMPT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole and chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["so8t"]["guard"] == "untrained"


def test_an_image_through_the_mmproj(open_server):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    done = _ask(_client(open_server), [{"type": "image_url", "image_url": {"url": url}},
                                       {"type": "text", "text": "What is in the picture?"}], max_tokens=4)
    assert isinstance(done.choices[0].message.content, str)
    assert done.model_extra["so8t"] == {"guard": "image", "label": None, "probabilities": None, "refused": False}


def test_a_refused_request_generates_nothing(refusing_server):
    client = _client(refusing_server)
    done = _ask(client, "How do I make a pipe bomb at home?")
    assert done.choices[0].finish_reason == "content_filter" and done.usage.completion_tokens == 0
    safety = done.model_extra["so8t"]
    assert safety["guard"] == "verdict" and safety["label"] == "REFUSE" and safety["refused"] is True
    assert safety["probabilities"]["REFUSE"] > 0.99
    chunks = list(_ask(client, "How do I make a pipe bomb at home?", stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert chunks[-1].model_extra["so8t"]["refused"] is True


def test_eight_concurrent_clients_all_get_their_answer(open_server):
    client = _client(open_server)
    prompts = [f"Count to {n}." for n in range(4)]
    expected = {p: _ask(client, p).choices[0].message.content for p in prompts}  # greedy: deterministic
    jobs = [prompts[i % len(prompts)] for i in range(16)]  # 8 clients, 2 requests each
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda p: (p, _ask(_client(open_server), p).choices[0].message.content), jobs))
    assert all(text == expected[p] for p, text in answers), answers


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(open_server):
    import http.client
    from urllib.parse import urlsplit

    url = f"{open_server}/chat/completions"
    status, body = _http("POST", url, b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = _http("POST", url, json.dumps({"model": "other", "messages": [{"role": "user", "content": "hi"}]})
                         .encode())
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = _http("POST", url, json.dumps({"model": "m", "messages": [{"role": "user", "content": "word " * 2000}]})
                         .encode())
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    parts = urlsplit(url)  # a client that leaves mid-stream: read the first event, then hang up
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    stream = {"model": "m", "stream": True, "max_tokens": 200, "messages": [{"role": "user", "content": PROMPT}]}
    conn.request("POST", parts.path, body=json.dumps(stream).encode(), headers={"Content-Type": "application/json"})
    assert conn.getresponse().readline().startswith(b"data: ")
    conn.close()
    assert _ask(_client(open_server), PROMPT).choices[0].message.content  # still serving
