"""Metrics for one prompt: every condition against the aligned model's sample 0.

Embedding figures take precomputed unit vectors (``{text: vector}``), so metrics can be
recomputed headless from the vectors stored in the session, without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from engine import metrics as m
from engine.conditions import REFERENCE


@dataclass
class ConditionFigures:
    condition: str
    samples: int
    words: float  # mean words per sample
    similarity: float | None  # mean Jaccard to aligned s0 (aligned: s1..n-1, the ceiling)
    coverage: float | None  # mean share of a sample's word bag found in aligned s0
    embedding: float | None  # mean embedding cosine to aligned s0
    diversity: float | None  # mean pairwise Jaccard between samples (needs >= 2)
    flags: dict = field(default_factory=dict)  # share of samples with each quality flag


@dataclass
class PromptMetrics:
    conditions: list[str]
    figures: dict[str, ConditionFigures]
    jaccard_s0: dict[tuple[str, str], float | None]  # sample 0 against sample 0
    cosine_s0: dict[tuple[str, str], float | None]

    def rows(self) -> list[dict]:
        """Rows for the session's metrics table."""
        out = []
        for f in self.figures.values():
            for name in ("words", "similarity", "coverage", "embedding", "diversity"):
                out.append({"name": name, "condition": f.condition, "value": getattr(f, name)})
            for flag, share in f.flags.items():
                out.append({"name": f"flag_{flag}", "condition": f.condition, "value": share})
        for matrix, name in ((self.jaccard_s0, "jaccard_s0"), (self.cosine_s0, "cosine_s0")):
            for (a, b), value in matrix.items():
                out.append({"name": name, "condition": a, "other_condition": b, "value": value})
        return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def compute(samples: dict[str, list[str]], vectors: dict | None = None) -> PromptMetrics:
    """``samples`` maps condition -> answer texts in sample order (sample 0 first);
    ``vectors`` maps text -> unit embedding (embedding figures are None without it)."""
    conditions = [c for c, texts in samples.items() if texts]
    ref_samples = samples.get(REFERENCE) or []
    ref = ref_samples[0] if ref_samples else None

    def cosine(a: str, b: str) -> float | None:
        if not vectors or a not in vectors or b not in vectors:
            return None
        return float(vectors[a] @ vectors[b])

    sim_vs_ref = {(c, i): cosine(t, ref) for c in conditions for i, t in enumerate(samples[c])} if ref else {}
    cos = {(a, b): cosine(samples[a][0], samples[b][0]) for a in conditions for b in conditions}

    figures = {}
    for c in conditions:
        texts = samples[c]
        # The aligned ceiling compares sample 0 with the other samples, never with itself.
        compared = list(enumerate(texts))[1:] if c == REFERENCE else list(enumerate(texts))
        flags = [m.quality_flags(t) for t in texts]
        figures[c] = ConditionFigures(
            condition=c,
            samples=len(texts),
            words=mean(m.word_count(t) for t in texts),
            similarity=_mean(m.jaccard(t, ref) for _, t in compared) if ref is not None else None,
            coverage=_mean(m.coverage(t, ref) for _, t in compared) if ref is not None else None,
            embedding=_mean(sim_vs_ref.get((c, i)) for i, _ in compared),
            diversity=m.mean_pairwise_jaccard(texts) if len(texts) > 1 else None,
            flags={k: mean(1.0 if f[k] else 0.0 for f in flags) for k in ("abstain", "numbered_list", "bullet_list")},
        )
    jac = {(a, b): m.jaccard(samples[a][0], samples[b][0]) for a in conditions for b in conditions}
    return PromptMetrics(conditions, figures, jac, cos)
