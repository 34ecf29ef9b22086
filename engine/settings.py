"""Decoding settings recorded with every generation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class GenerationSettings:
    # Defaults follow the paper: temperature 0.5, repetition penalty 1.1, no top-p/top-k.
    temperature: float = 0.5
    repetition_penalty: float = 1.1
    max_new_tokens: int = 256
    samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy decoding)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition penalty must be > 0")
        if self.max_new_tokens < 1:
            raise ValueError("max new tokens must be at least 1")
        if self.samples < 1:
            raise ValueError("samples must be at least 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def seed_for(self, sample_index: int) -> int:
        """Each sample gets its own recorded seed so any one can be reproduced alone."""
        return self.seed + sample_index

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "GenerationSettings":
        return replace(self, **changes)
