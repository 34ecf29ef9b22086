"""Sentence embeddings for the embedding-similarity metric (sentence-transformers)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

from engine.models import ModelSpec, ModelUnavailable, source_path


@dataclass
class Embedder:
    spec: ModelSpec
    model: object
    lock: threading.Lock

    def embed(self, texts: Sequence[str]):
        """Unit-normalised embeddings (numpy array, one row per text)."""
        with self.lock:
            return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


_embedders: dict[str, Embedder] = {}
_loading = threading.Lock()


def load_embedder(spec: ModelSpec, progress=None) -> Embedder:
    progress = progress or (lambda msg, frac: None)
    with _loading:
        if spec.id not in _embedders:
            folder = source_path(spec)
            progress(f"loading {spec.name}", None)
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # tqdm would write over the TUI

            try:
                model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"could not load embedder {spec.name} from {folder}: {exc}") from exc
            _embedders[spec.id] = Embedder(spec, model, threading.Lock())
            progress(f"{spec.name} ready", 1.0)
        return _embedders[spec.id]
