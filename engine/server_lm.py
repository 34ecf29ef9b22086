"""A model on an OpenAI-compatible inference server (vLLM, TGI, llama.cpp's server...), behind
the ``engine.backend.LanguageModel`` contract.

- Base models go through ``/completions`` (the raw URIAL text), aligned models through
  ``/chat/completions`` (one user turn; the server applies the model's chat template). Both are
  streamed (server-sent events).
- Stop strings are applied here, not sent to the server: the stored answer and finish reason
  ('stop' vs 'new_query') match the local backend exactly, and text that may be the start of a
  stop string is held back from the pane until it is not. A stream is closed as soon as its
  answer hits a stop string (servers abort a request whose client went away).
- Samples run as concurrent requests (``concurrency`` per generate call), each with its own
  seed ``settings.seed_for(i)``; or, with ``use_n``, as one request with ``n`` choices (the
  request seed is that of the first sample; a server that ignores ``n`` gets the remaining
  samples as separate requests).
- Connection errors, HTTP 429 and 5xx are retried with exponential backoff (``Retry-After``
  honoured) before any text of a sample is shown; cancelling closes the open streams.
- Token counts come from the server's tokenize endpoint (vLLM ``/tokenize``, llama-cpp-python
  ``/extras/tokenize``, llama.cpp ``/tokenize``); a server without one gets a documented
  estimate (UTF-8 bytes / 3, rounded up: more than real BPE counts for English, so fitting
  in-context examples errs on the safe side). The context length comes from the config, from
  ``/models`` (vLLM's ``max_model_len``) or llama.cpp's ``/props``; failing those 2048 is
  assumed, and a context-overflow answer from the server teaches the real value.

Standard library only (http.client): no torch, no transformers, no HTTP package.
"""

from __future__ import annotations

import html
import http.client
import json
import math
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from engine.backend import (
    BackendError,
    GenerationResult,
    OnSampleText,
    PromptTooLong,
    Request,
    finish_reason,
)
from engine.models import ModelSpec
from engine.prompts import cut_at_stop, held_back
from engine.servers import ServerConfig, served_model
from engine.settings import GenerationSettings

Progress = Callable[[str, "float | None"], None]

CONNECT_TIMEOUT = 10.0
ALIVE_TIMEOUT = 3.0  # the one GET /models that tells a server that went away from one that still answers
ASSUMED_CONTEXT = 2048  # llama-cpp-python's default n_ctx; used only when the server says nothing
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
TOKEN_CACHE = 512
AFTER = "\x00after"  # where a final error message says how often it was retried


class _Transient(Exception):
    """Worth retrying: connection refused/reset, 429, 5xx. ``final`` is the user's message
    when the retries run out."""

    def __init__(self, final: str, retry_after: float | None = None):
        super().__init__(final)
        self.final = final
        self.retry_after = retry_after


class _Overflow(Exception):
    """The server said the request does not fit its context."""

    def __init__(self, context: int | None, prompt_tokens: int | None, message: str):
        super().__init__(message)
        self.context = context
        self.prompt_tokens = prompt_tokens
        self.message = message


class _Aborted(Exception):
    pass


class ServerGone(BackendError):
    """The server stopped answering in the middle of an answer (its process died or was
    stopped): the connection was lost and it no longer answers at all."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")  # as session times


EXCERPT = 200  # characters of a body that is not a JSON error (an HTML page, plain text)
_HTML = re.compile(r"\s*<(?:!doctype|html|head|body|title|h1|p|pre|center)\b|.*</(?:html|body)>",
                   re.IGNORECASE | re.DOTALL)


def _is_html(raw: bytes) -> bool:
    return bool(_HTML.match(raw[:4096].decode("utf-8", "replace")))


def _excerpt(text: str) -> str:
    """A short readable excerpt of a non-JSON body: an HTML page's text without its tags (and
    without its head, scripts and styles), whitespace collapsed, cut at EXCERPT characters."""
    if _HTML.match(text[:4096]):
        text = re.sub(r"<(head|script|style)\b.*?</\1\s*>", " ", text, flags=re.IGNORECASE | re.DOTALL)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[:EXCERPT - 1].rstrip() + "…"


def _error_text(raw: bytes) -> str:
    """The message of an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"},
    FastAPI's {"detail"}, TGI's {"error": "..."}, or a short excerpt of the text itself (an
    HTML error page loses its tags)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return _excerpt(text)
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)[:500]
        elif isinstance(err, str):
            return err[:500]
        if "detail" in data:
            return json.dumps(data["detail"])[:500]
    return _excerpt(text)


# How servers say a request does not fit: vLLM / OpenAI, llama-cpp-python (whose error handler
# rewrites llama.cpp's message into OpenAI's), llama.cpp's server, TGI.
_OVERFLOW = re.compile(r"maximum context length|context window of|exceeds the available context size|"
                       r"context_length_exceeded|must have less than \d+ (?:input )?tokens|"
                       r"longer than the maximum model length", re.IGNORECASE)
_CONTEXT = (r"maximum context length is (\d+)", r"context window of (\d+)", r"available context size \((\d+)",
            r"must have less than (\d+)", r"maximum model length (?:of |is )?(\d+)")
_PROMPT = (r"\((\d+) in (?:the messages|your prompt)", r"(\d+) input tokens", r"Requested tokens \((\d+)\)",
           r"request \((\d+) tokens\)", r"Given: (\d+)", r"prompt \(length (\d+)\)")


def _overflow(message: str) -> _Overflow | None:
    if not _OVERFLOW.search(message):
        return None

    def first(patterns) -> int | None:
        for pattern in patterns:
            m = re.search(pattern, message)
            if m:
                return int(m.group(1))
        return None

    return _Overflow(first(_CONTEXT), first(_PROMPT), message)


@dataclass
class _Sample:
    """One answer being streamed: its text so far, what was shown, and why it ended."""

    index: int
    seed: int
    stops: tuple[str, ...]
    raw: str = ""
    emitted: int = 0
    stop: str | None = None
    server_finish: str | None = None
    chunks: int = 0
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    model: str | None = None
    started: float | None = None
    started_at: str | None = None
    first: float | None = None
    ended: float | None = None
    lost: bool = False  # its server went away mid-answer: the partial answer is kept as 'cancelled'
    extra: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.stop is not None or self.server_finish is not None

    def begin(self) -> None:
        self.raw, self.emitted, self.stop, self.server_finish, self.chunks = "", 0, None, None, 0
        self.started, self.started_at, self.first = time.monotonic(), _now(), None

    def feed(self, delta: str) -> str:
        """Add streamed text; return the part that is now final (safe to show)."""
        if self.finished or not delta:
            return ""
        if self.first is None:
            self.first = time.monotonic()
        self.raw += delta
        self.chunks += 1
        kept, self.stop = cut_at_stop(self.raw, self.stops) if self.stops else (self.raw, None)
        final = len(kept) if self.stop else len(kept) - held_back(kept, self.stops)
        out = kept[self.emitted:final] if final > self.emitted else ""
        self.emitted = max(self.emitted, final)
        return out

    def flush(self) -> str:
        kept, _ = cut_at_stop(self.raw, self.stops) if self.stops else (self.raw, None)
        out = kept[self.emitted:]
        self.emitted = len(kept)
        return out


class _Streams:
    """The open streams of one generate call, so a cancel (or an error in a sibling sample)
    can close them all from the watcher thread."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self.user_cancelled = False
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def add(self, sock) -> None:
        with self._lock:
            self._socks.add(sock)
        if self.abort.is_set():
            self._shut(sock)

    def discard(self, sock) -> None:
        with self._lock:
            self._socks.discard(sock)

    def close_all(self) -> None:
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            self._shut(sock)

    @staticmethod
    def _shut(sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the reading thread sees end of stream
        except OSError:
            pass


class _Http:
    """Requests to one server: JSON in, JSON or server-sent events out."""

    def __init__(self, server: ServerConfig):
        self.server = server
        parts = urlsplit(server.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")  # e.g. /v1
        self.root = self.prefix[:-3] if self.prefix.endswith("/v1") else ""  # vLLM's /tokenize lives at the root

    def headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "User-Agent": "overton"}
        key = self.server.api_key()
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def unreachable(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(exc, socket.gaierror):
            why = f"unknown host {self.host!r}"
        elif isinstance(exc, TimeoutError):
            why = "no answer in time"
        else:
            why = str(exc) or type(exc).__name__
        return (f"no inference server answers at {self.server.url} ({why}){AFTER}; start it (e.g. `vllm serve MODEL` or "
                "`python -m llama_cpp.server`) or fix the URL (--server-url, or url in overton.toml)")

    def open(self, method: str, path: str, body: dict | None = None, *, root: bool = False,
             timeout: float | None = None, on_socket: Callable[[socket.socket], None] | None = None):
        """(connection, socket, response) — the response's headers read, its body not.
        ``on_socket`` gets the socket once connected (so a cancel can close it while waiting)."""
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        kwargs = {"context": ssl.create_default_context()} if self.https else {}
        conn = cls(self.host, self.port, timeout=min(CONNECT_TIMEOUT, timeout or CONNECT_TIMEOUT), **kwargs)
        data = json.dumps(body).encode() if body is not None else None
        try:
            conn.connect()
            conn.sock.settimeout(timeout or self.server.timeout)
            sock = conn.sock
            if on_socket is not None:
                on_socket(sock)
            conn.request(method, (self.root if root else self.prefix) + path, body=data, headers=self.headers())
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Transient(self.unreachable(exc)) from exc
        return conn, sock, resp

    def call(self, method: str, path: str, body: dict | None = None, *, root: bool = False,
             timeout: float | None = None) -> tuple[int, bytes, dict]:
        conn, _, resp = self.open(method, path, body, root=root, timeout=timeout)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(self.unreachable(exc)) from exc
        finally:
            conn.close()
        return resp.status, raw, {k.lower(): v for k, v in resp.getheaders()}


def _retry_after(headers: dict) -> float | None:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:
        return None


def retrying(server: ServerConfig, attempt: Callable[[], object], abort: threading.Event | None = None):
    """``attempt()`` again on _Transient, with exponential backoff (jittered, capped, honouring
    Retry-After); the last failure becomes a BackendError with the user's message."""
    for n in range(server.retries + 1):
        try:
            return attempt()
        except _Transient as exc:
            if n == server.retries:
                tries = (f" (after {server.retries} {'retry' if server.retries == 1 else 'retries'})"
                         if server.retries else "")
                final = exc.final.replace(AFTER, tries) if AFTER in exc.final else exc.final + tries
                raise BackendError(final) from None
            delay = exc.retry_after if exc.retry_after is not None else BACKOFF_FIRST_S * 2 ** n
            delay = min(delay, BACKOFF_MAX_S) * (1 + 0.2 * random.random())
            if abort is not None:
                if abort.wait(delay):
                    raise _Aborted() from None
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


def _status_error(http_: _Http, status: int, raw: bytes, headers: dict, model: str) -> Exception:
    """The exception for a non-200 answer (raised by the caller)."""
    message = _error_text(raw)
    url = http_.server.url
    if status == 429:
        return _Transient(f"the server at {url} is rate limiting requests (HTTP 429: {message}){AFTER}; lower "
                          "--concurrency (or concurrency in overton.toml) or try again later", _retry_after(headers))
    if status in TRANSIENT_STATUS:
        return _Transient(f"the server at {url} failed (HTTP {status}: {message}){AFTER}", _retry_after(headers))
    if status not in (401, 403) and _is_html(raw):
        return BackendError(f"the server at {url} does not look like an OpenAI-compatible API: it answered HTTP "
                            f"{status} with a web page ({message}); the base URL of the API usually ends in /v1 "
                            "(e.g. http://localhost:8000/v1)")
    over = _overflow(message)
    if over is not None:
        return over
    if status in (401, 403):
        env = http_.server.api_key_env
        fix = (f"check the key in ${env}" if env and http_.server.api_key()
               else f"${env} is empty; export the key there" if env
               else "it needs an API key: put it in an environment variable and name that with --api-key-env")
        return BackendError(f"the server at {url} refused the request (HTTP {status}: {message}); {fix}")
    if status == 404 and ("model" in message.lower() or "does not exist" in message):
        return BackendError(f"the server at {url} does not serve the model {model!r} ({message}); "
                            "`overton models` lists what it serves")
    if status == 404:
        return BackendError(f"the server at {url} has no such endpoint (HTTP 404: {message}); is the URL the base "
                            "of an OpenAI-compatible API (usually ending in /v1)?")
    return BackendError(f"the server at {url} refused the request (HTTP {status}: {message})")


def list_models(server: ServerConfig, timeout: float = CONNECT_TIMEOUT, retries: int | None = None) -> list[dict]:
    """The server's ``GET /models`` entries (each at least {"id": ...}); raises BackendError."""
    from dataclasses import replace

    http_ = _Http(server if retries is None else replace(server, retries=retries))

    def attempt():
        status, raw, headers = http_.call("GET", "/models", timeout=timeout)
        if status != 200:
            err = _status_error(http_, status, raw, headers, "")
            if isinstance(err, _Overflow):
                err = BackendError(f"the server at {server.url} answered GET /models with an error: {err.message}")
            raise err
        try:
            data = json.loads(raw)
            entries = data["data"] if isinstance(data, dict) else data
            return [e for e in entries if isinstance(e, dict) and "id" in e]
        except (ValueError, KeyError, TypeError):
            raise BackendError(f"{server.url}/models did not answer with a model list; is this the base URL of an "
                               "OpenAI-compatible API (usually ending in /v1)?") from None

    return retrying(http_.server, attempt)


def _sse(resp):
    """The data fields of a server-sent event stream, one string per event."""
    data: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):  # comment / keep-alive ping
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)


class ServerLM:
    backend = "openai"

    def __init__(self, spec: ModelSpec, server: ServerConfig, entry: dict, context: int | None,
                 tokenizer: str | None):
        self.spec = spec
        self.server = server
        self.model = served_model(spec)
        self.entry = entry  # the server's /models entry for the model
        self.http = _Http(server)
        self._context = context
        self.tokenizer = tokenizer  # 'vllm' | 'llama-cpp-python' | 'llama.cpp' | None (estimate)
        self._counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()

    # -- the contract -----------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._context or ASSUMED_CONTEXT

    @property
    def context_known(self) -> bool:
        return self._context is not None

    @property
    def has_chat_template(self) -> bool:
        return True  # the server applies it (and says so if the model has none)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as a base-model prompt (BOS included), from the server's tokenizer;
        without a tokenize endpoint, the estimate ceil(UTF-8 bytes / 3)."""
        with self._counts_lock:
            if text in self._counts:
                return self._counts[text]
        n = self._tokenize(text) if self.tokenizer else math.ceil(len(text.encode("utf-8")) / 3)
        with self._counts_lock:
            if len(self._counts) >= TOKEN_CACHE:
                self._counts.pop(next(iter(self._counts)))
            self._counts[text] = n
        return n

    def _tokenize(self, text: str) -> int:
        kind = self.tokenizer
        if kind == "llama-cpp-python":
            path, body, root = "/extras/tokenize", {"model": self.model, "input": text}, True
        elif kind == "vllm":
            path, body, root = "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": True}, True
        else:
            path, body, root = "/tokenize", {"content": text, "add_special": True}, True

        def attempt():
            status, raw, headers = self.http.call("POST", path, body, root=root)
            if status != 200:
                err = _status_error(self.http, status, raw, headers, self.model)
                raise BackendError(f"the server at {self.server.url} could not count tokens: {err}") \
                    if isinstance(err, _Overflow) else err
            data = json.loads(raw)
            return int(data["count"]) if "count" in data else len(data["tokens"])

        return retrying(self.server, attempt)

    def generate(
        self,
        request: Request,
        settings: GenerationSettings,
        indexes: Sequence[int] = (0,),
        *,
        on_text: OnSampleText | None = None,
        cancel: threading.Event | None = None,
    ) -> list[GenerationResult]:
        indexes = list(indexes)
        samples = [_Sample(i, settings.seed_for(i), tuple(request.stops)) for i in indexes]
        if not samples:
            return []
        prompt_tokens = self.count_tokens(request.text)
        exact = self.tokenizer is not None and not request.chat
        if self.context_known and self.tokenizer is not None and prompt_tokens >= self.context_length:
            raise self._too_long(prompt_tokens, self.context_length, request.chat)
        room = self.context_length - prompt_tokens
        max_new = min(settings.max_new_tokens, room) if (self.context_known and exact) else settings.max_new_tokens
        params = self._params(settings, max_new)

        streams = _Streams()
        emit_lock = threading.Lock()

        def emit(index: int, text: str) -> None:
            if text and on_text is not None:
                with emit_lock:  # callbacks never run concurrently
                    on_text(index, text)

        finished = threading.Event()

        def watch():
            while not finished.is_set():
                if cancel is not None and cancel.is_set():
                    streams.user_cancelled = True
                    streams.abort.set()
                if streams.abort.is_set():
                    streams.close_all()
                finished.wait(0.05)

        watcher = threading.Thread(target=watch, name="overton-server-cancel", daemon=True)
        watcher.start()
        errors: list[BaseException] = []
        try:
            if self.server.use_n and len(samples) > 1:
                groups = [samples]
            else:
                groups = [[s] for s in samples]

            def work(group: list[_Sample]) -> None:
                if streams.abort.is_set():
                    return
                if len(group) > 1:
                    for k, s in enumerate(group):
                        s.extra.update(n=len(group), choice=k, request_seed=group[0].seed)
                try:
                    self._run(request, group, params, streams, emit)
                    missing = [s for s in group[1:] if s.started is None or (not s.raw and not s.finished)]
                    if len(group) > 1 and missing and not streams.abort.is_set():
                        # The server ignored n (llama-cpp-python does): the rest one by one.
                        for s in missing:
                            s.extra = {"n_ignored_by_server": True}
                            self._run(request, [s], params, streams, emit)
                except _Aborted:
                    pass
                except BaseException as exc:  # noqa: BLE001 - the first error is raised to the caller
                    if not streams.user_cancelled:
                        errors.append(exc)
                    streams.abort.set()

            workers = min(self.server.concurrency, len(groups))
            if workers == 1:
                for group in groups:
                    work(group)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="overton-server") as pool:
                    list(pool.map(work, groups))
        finally:
            finished.set()
            watcher.join()
        if errors and isinstance(errors[0], ServerGone):
            for s in samples:  # every stream died with the server: keep what each had (it was shown)
                if s.raw and not s.finished:
                    s.lost = True
                    s.extra["connection_lost"] = True
        results = [self._result(request, s, settings, params, max_new, prompt_tokens, streams.user_cancelled)
                   for s in samples]
        if errors:
            exc = errors[0]
            if isinstance(exc, _Overflow):
                exc = self._too_long(exc.prompt_tokens or prompt_tokens, exc.context or self.context_length,
                                     request.chat, exc.message)
            # Samples that finished before the error are not lost: the caller may store them (and
            # the partial answers, as 'cancelled', when the server went away).
            exc.results = [r for r, s in zip(results, samples) if s.finished or s.lost]
            raise exc
        return results

    # -- internals --------------------------------------------------------------------------
    def _too_long(self, prompt_tokens: int, context: int, chat: bool, server_message: str = "") -> PromptTooLong:
        what = "the chat prompt" if chat else "the prompt"
        said = f" (the server: {server_message})" if server_message else ""
        return PromptTooLong(f"{what} is {prompt_tokens} tokens; {self.model} on {self.server.url} holds {context}, "
                             f"which leaves no room for an answer{said}")

    def _params(self, settings: GenerationSettings, max_new: int) -> dict:
        """Sampling parameters sent with every request (recorded with each generation)."""
        params: dict = {"max_tokens": max_new, "temperature": settings.temperature, "top_p": 1.0}
        if self.server.params == "paper":
            # No top-k / min-p (llama.cpp samples with top_k 40 and min_p 0.05 by default; 0 turns
            # top-k off in llama.cpp and in vLLM >= 0.8, which older vLLM refuses: use "standard");
            # the paper's repetition penalty under the names vLLM/TGI (repetition_penalty) and
            # llama.cpp (repeat_penalty) read, each server ignoring the other name.
            params.update(top_k=0, min_p=0.0, repetition_penalty=settings.repetition_penalty,
                          repeat_penalty=settings.repetition_penalty)
        return params

    def _body(self, request: Request, params: dict, seed: int, n: int) -> tuple[str, dict]:
        body = {"model": self.model, **params, "seed": seed, "stream": True,
                "stream_options": {"include_usage": True}}
        if n > 1:
            body["n"] = n
        if request.chat:
            return "/chat/completions", {**body, "messages": [{"role": "user", "content": request.text}]}
        return "/completions", {**body, "prompt": request.text}

    def _run(self, request: Request, group: list[_Sample], params: dict, streams: _Streams, emit) -> None:
        """Stream one request (n = len(group) choices) into ``group``, retrying transient
        failures while no text of it has been shown, and shortening max_tokens once if the
        server says prompt + max_tokens overflow its context."""
        params = dict(params)
        for _ in range(2):
            path, body = self._body(request, params, group[0].seed, len(group))

            def attempt(path=path, body=body):
                if streams.abort.is_set():
                    raise _Aborted()
                for s in group:
                    s.begin()
                self._stream(path, body, group, streams, emit, request.chat)

            try:
                retrying(self.server, attempt, streams.abort)
                return
            except _Overflow as over:
                if over.context:
                    self._context = over.context  # the server told us its real context
                if over.prompt_tokens and over.context and over.prompt_tokens < over.context \
                        and params["max_tokens"] > over.context - over.prompt_tokens:
                    params["max_tokens"] = over.context - over.prompt_tokens
                    for s in group:
                        s.extra["max_tokens_shortened_to"] = params["max_tokens"]
                    continue
                raise
        raise AssertionError("unreachable")

    def _stream(self, path: str, body: dict, group: list[_Sample], streams: _Streams, emit, chat: bool) -> None:
        socks: list = []

        def register(sock) -> None:
            socks.append(sock)
            streams.add(sock)

        try:
            conn, sock, resp = self.http.open("POST", path, body, on_socket=register)
        except _Transient:
            for sock in socks:
                streams.discard(sock)
            if streams.abort.is_set():
                return
            raise
        try:
            if resp.status != 200:
                raw = resp.read()
                raise _status_error(self.http, resp.status, raw, {k.lower(): v for k, v in resp.getheaders()},
                                    self.model)
            got_data = done = False
            try:
                for data in _sse(resp):
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    if "error" in chunk:  # an error event mid-stream (llama.cpp, vLLM)
                        message = _error_text(data.encode())
                        over = _overflow(message)
                        raise over if over else BackendError(f"the server at {self.server.url} stopped with an "
                                                             f"error: {message}")
                    got_data = True
                    self._take(chunk, group, emit, chat)
                    if all(s.finished for s in group) and any(s.stop for s in group):
                        break  # a stop string ended it: close the stream, the server stops generating
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if streams.abort.is_set():
                    return  # we closed it (cancel, or a sibling's error)
                if not any(s.emitted for s in group):
                    raise _Transient(f"the server at {self.server.url} dropped the connection ({exc})") from exc
                if not self._answers():
                    raise self._gone() from exc
                raise BackendError(f"the server at {self.server.url} dropped the connection in the middle of an "
                                   f"answer ({exc}); run again to redo it") from exc
            if streams.abort.is_set():
                return
            for s in group:
                emit(s.index, s.flush())
                s.ended = time.monotonic()
            if not got_data and not done:
                self._diagnose(path, body)
            unfinished = [s for s in group if not s.finished and (s.raw or len(group) == 1)]
            if unfinished and not self._answers():
                if not any(s.emitted for s in group):  # nothing shown yet: retry (and say it is down)
                    raise _Transient(f"the server at {self.server.url} went away in the middle of an answer "
                                     "(connection lost)")
                raise self._gone()
            if unfinished:
                raise BackendError(
                    f"the server at {self.server.url} ended an answer without saying why (no finish reason). "
                    "llama-cpp-python does this to a stream when another request arrives: start it with "
                    "--interrupt_requests False, or use --concurrency 1")
        finally:
            streams.discard(sock)
            conn.close()

    def _answers(self) -> bool:
        """Whether the server still answers (any HTTP answer to one quick GET /models)."""
        try:
            self.http.call("GET", "/models", timeout=ALIVE_TIMEOUT)
        except _Transient:
            return False
        return True

    def _gone(self) -> ServerGone:
        return ServerGone(f"the server at {self.server.url} went away in the middle of an answer (connection "
                          "lost); the partial answers are kept as 'cancelled'. Start the server again and run "
                          "again to redo them")

    def _take(self, chunk: dict, group: list[_Sample], emit, chat: bool) -> None:
        model = chunk.get("model")
        usage = chunk.get("usage") or None
        for choice in chunk.get("choices") or []:
            k = choice.get("index", 0) or 0
            if not 0 <= k < len(group):
                continue
            s = group[k]
            if model:
                s.model = model
            delta = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if s.finished:
                continue
            emit(s.index, s.feed(delta or ""))
            if choice.get("finish_reason") and not s.finished:
                s.server_finish = choice["finish_reason"]
        if usage and len(group) == 1:
            group[0].completion_tokens = usage.get("completion_tokens")
            group[0].prompt_tokens = usage.get("prompt_tokens")

    def _diagnose(self, path: str, body: dict) -> None:
        """A stream that closed before sending anything: ask again without streaming (one token)
        to get the server's error message (llama-cpp-python reports context overflow so)."""
        probe = {k: v for k, v in body.items() if k not in ("stream", "stream_options", "n")}
        probe["max_tokens"] = 1
        status, raw, headers = self.http.call("POST", path, probe)
        if status != 200:
            raise _status_error(self.http, status, raw, headers, self.model)
        raise _Transient(f"the server at {self.server.url} closed the stream before sending anything")

    def _result(self, request: Request, s: _Sample, settings: GenerationSettings, params: dict, max_new: int,
                prompt_tokens: int, cancelled: bool) -> GenerationResult:
        text, _ = cut_at_stop(s.raw, request.stops) if request.stops else (s.raw, None)
        end = s.ended or time.monotonic()
        duration = end - s.started if s.started is not None else 0.0
        extra = {
            "server_url": self.server.url,
            "server_model": s.model or self.model,
            "endpoint": "chat/completions" if request.chat else "completions",
            "token_counts": ("server" if s.completion_tokens is not None else "stream chunks"),
            **({"server_model_root": self.entry["root"]} if self.entry.get("root") not in (None, self.model) else {}),
            **({"server_finish_reason": s.server_finish} if s.server_finish else {}),
            **s.extra,
        }
        if request.chat:
            extra["prompt_text"] = "the user turn; the server applied the model's chat template"
        if not self.tokenizer:
            extra["prompt_tokens_estimated"] = True
        used_prompt = s.prompt_tokens if s.prompt_tokens is not None else prompt_tokens
        return GenerationResult(
            model_id=self.spec.id, model_name=self.spec.name, model_family=self.spec.family,
            prompt_text=request.text, text=text.strip(), raw_text=s.raw,
            finish_reason=finish_reason(s.stop, (cancelled or s.lost) and not s.finished, s.server_finish == "stop"),
            settings={**settings.to_dict(), "max_new_tokens_effective": max_new, "top_k": None, "top_p": None,
                      "server_params": params},
            seed=s.seed, prompt_tokens=int(used_prompt),
            completion_tokens=int(s.completion_tokens if s.completion_tokens is not None else s.chunks),
            duration_s=round(duration, 4),
            first_token_s=round(s.first - s.started, 4) if s.first and s.started else None,
            started_at=s.started_at or _now(), backend="openai", extra=extra,
        )


def _probe_tokenizer(http_: _Http, model: str) -> tuple[str | None, int | None]:
    """Which tokenize endpoint the server has (and vLLM's max_model_len from it)."""
    probes = (
        ("llama-cpp-python", "/extras/tokenize", {"model": model, "input": "Hi"}),
        ("vllm", "/tokenize", {"model": model, "prompt": "Hi", "add_special_tokens": True}),
        ("llama.cpp", "/tokenize", {"content": "Hi", "add_special": True}),
    )
    for kind, path, body in probes:
        try:
            status, raw, _ = http_.call("POST", path, body, root=True)
        except _Transient:
            return None, None
        if status != 200:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("tokens"), list):
            return kind, data.get("max_model_len")
    return None, None


def _probe_context(http_: _Http, entry: dict) -> int | None:
    for key in ("max_model_len", "context_length", "n_ctx"):
        if isinstance(entry.get(key), int):
            return entry[key]
    try:  # llama.cpp's server
        status, raw, _ = http_.call("GET", "/props", root=True)
        if status == 200:
            data = json.loads(raw)
            n = data.get("n_ctx") or (data.get("default_generation_settings") or {}).get("n_ctx")
            return int(n) if n else None
    except (_Transient, ValueError, TypeError, AttributeError):
        pass
    return None


def connect(spec: ModelSpec, progress: Progress | None = None) -> ServerLM:
    """The model ``spec`` names on its server: checks that the server answers and serves the
    model (else BackendError listing what it serves), and learns its context length and
    tokenizer endpoint."""
    progress = progress or (lambda msg, frac: None)
    server: ServerConfig = spec.server
    if server is None:
        raise BackendError(f"{spec.name}: no server given for this model")
    if server.api_key_env and not server.api_key():
        raise BackendError(f"${server.api_key_env} is not set; export the API key of {server.url} there "
                           "(overton reads it from the environment and never stores it)")
    model = served_model(spec)
    progress(f"connecting to {server.url}", None)
    entries = list_models(server, retries=min(server.retries, 2))
    entry = next((e for e in entries if e.get("id") == model), None)
    if entry is None:
        offered = ", ".join(str(e.get("id")) for e in entries) or "nothing"
        raise BackendError(f"the server at {server.url} does not serve {model!r}; it serves: {offered}. "
                           f"Name one of those in --models (openai:NAME@{server.url})")
    http_ = _Http(server)
    tokenizer, tokenize_ctx = _probe_tokenizer(http_, model)
    context = server.context_length or _probe_context(http_, entry) or tokenize_ctx
    lm = ServerLM(spec, server, entry, context, tokenizer)
    ctx = f"context {context}" if context else f"context not reported, {ASSUMED_CONTEXT} assumed"
    counts = f"tokens counted by its {tokenizer} tokenizer" if tokenizer else "no tokenize endpoint: token counts estimated"
    progress(f"{model} on {server.url} ready ({ctx}; {counts})", 1.0)
    return lm
