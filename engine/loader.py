"""Loads language models once per process and shares them between conditions."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from engine.convert import Progress, ensure_converted
from engine.models import ModelSpec, ModelUnavailable, source_path


@dataclass
class LoadedLM:
    spec: ModelSpec
    model: object
    tokenizer: object
    path: Path
    load_seconds: float
    # One generation at a time per model: the weights are shared and seeds must be reproducible.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def context_length(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 2048)
        return int(min(n, 1_000_000))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


# overton reports its own progress; transformers' tqdm bars would write over the TUI.
hf_logging.disable_progress_bar()

_loaded: dict[str, LoadedLM] = {}
_loading = threading.Lock()


def model_folder(spec: ModelSpec, progress: Progress | None = None) -> Path:
    if spec.kind == "gguf-package":
        return ensure_converted(spec, progress)
    return source_path(spec)


def load_lm(spec: ModelSpec, progress: Progress | None = None, dtype: torch.dtype = torch.bfloat16) -> LoadedLM:
    """The model for ``spec``, loaded on first call and shared afterwards."""
    progress = progress or (lambda msg, frac: None)
    with _loading:
        if spec.id in _loaded:
            return _loaded[spec.id]
        folder = model_folder(spec, progress)
        progress(f"loading {spec.name}", None)
        started = time.monotonic()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"could not load {spec.name} from {folder}: {exc}") from exc
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm = LoadedLM(spec, model, tokenizer, Path(folder), time.monotonic() - started)
        _loaded[spec.id] = lm
        progress(f"{spec.name} ready ({lm.load_seconds:.1f} s)", 1.0)
        return lm
