"""Metrics for one prompt: every condition against the aligned model's sample 0.

Embedding figures take precomputed unit vectors (``{text: vector}``), so metrics can be
recomputed headless from the vectors stored in the session, without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from engine import metrics as m
from engine.averages import mean
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


@dataclass(frozen=True)
class Aggregation:
    """Information aggregation of one condition's samples for one prompt (BRIEF.md, claim 1b):
    the mean over samples of the share of a sample's word bag found in aligned sample 0, in one
    other sample of the same condition (mean over the others), and in the union of the others."""

    in_reference: float | None
    in_one_other: float | None
    in_union_others: float | None


@dataclass
class PromptMetrics:
    conditions: list[str]
    figures: dict[str, ConditionFigures]
    jaccard_s0: dict[tuple[str, str], float | None]  # sample 0 against sample 0
    cosine_s0: dict[tuple[str, str], float | None]
    # every condition but the reference, with >= 2 samples
    aggregation: dict[str, Aggregation] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """Rows for the session's metrics table."""
        out = []
        for f in self.figures.values():
            for name in ("words", "similarity", "coverage", "embedding", "diversity"):
                out.append({"name": name, "condition": f.condition, "value": getattr(f, name)})
            for flag, share in f.flags.items():
                out.append({"name": f"flag_{flag}", "condition": f.condition, "value": share})
        for c, agg in self.aggregation.items():
            for name in ("in_reference", "in_one_other", "in_union_others"):
                out.append({"name": f"info_{name}", "condition": c, "value": getattr(agg, name)})
        for matrix, name in ((self.jaccard_s0, "jaccard_s0"), (self.cosine_s0, "cosine_s0")):
            for (a, b), value in matrix.items():
                out.append({"name": name, "condition": a, "other_condition": b, "value": value})
        return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def aggregation(samples: Sequence[m.Text], reference_text: m.Text | None) -> Aggregation | None:
    """Information aggregation of one prompt's samples of a condition (None with < 2 samples).

    For each sample with a non-empty word bag: the share of its bag found in ``reference_text``
    (aligned sample 0; None without one), in each other sample (mean over them), and in the
    union of the other samples; each figure is the mean over those samples. Empty bags are
    skipped, as coverage skips them (the same rule as ``overton stats``).
    """
    if len(samples) < 2:
        return None
    bags = [m.as_bag(t) for t in samples]  # texts, or their word bags
    ref_bag = m.as_bag(reference_text) if reference_text is not None else None
    in_ref, in_one, in_union = [], [], []
    for i, bag in enumerate(bags):
        if not bag:
            continue
        others = [o for j, o in enumerate(bags) if j != i]
        if ref_bag is not None:
            in_ref.append(m.coverage(bag, ref_bag))
        in_one.append(_mean(m.coverage(bag, o) for o in others))
        in_union.append(m.coverage(bag, frozenset().union(*others)))
    return Aggregation(_mean(in_ref), _mean(in_one), _mean(in_union))


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
    agg = {c: aggregation(samples[c], ref) for c in conditions if c != REFERENCE and len(samples[c]) > 1}
    return PromptMetrics(conditions, figures, jac, cos, agg)
