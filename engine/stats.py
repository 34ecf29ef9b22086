"""Per-condition statistics over a whole session (``overton stats``), with engine.metrics.

For each condition, over each prompt's newest batch of that condition (``Session.
latest_batches``: the last sample 0 and the samples after it, cancelled answers left out; the
``summary`` condition is not a condition):

* ``prompts``, ``samples``: how many prompts have the condition, how many samples in all;
* ``mean_words``: mean over all samples of ``metrics.word_count``;
* ``diversity``: mean over prompts of the mean pairwise Jaccard of that prompt's samples;
* ``similarity`` / ``coverage``: mean over prompts of the mean Jaccard / coverage of each sample
  against the reference condition's sample 0. For the reference itself, samples 1..n-1 against
  sample 0: the ceiling. Only prompts where the reference has a sample 0 count;
* ``embedding_similarity``: the same with the cosine of *stored* embeddings (``overton embed``);
  None if any needed embedding is missing (``embeddings_missing`` says how many texts);
* ``gap_closed``: (sim(X) − sim(base)) ÷ (ceiling − sim(base));
* ``abstain_rate``, ``numbered_list_rate``, ``bullet_list_rate``: share of samples flagged by
  ``metrics.quality_flags``;
* information aggregation (every condition but the reference; the paper reports it for base):
  for each sample of the condition, in prompts where the reference has sample 0 and the
  condition has at least 2 samples, the share of its word bag found in reference sample 0
  (``info_in_reference``), in one other sample of the same condition (``info_in_one_other``,
  mean over the others) and in the union of the other samples (``info_in_union_others``);
  mean over the prompt's samples, then over prompts, as every aggregate here.

Hand-made annotations (``engine.annotations``), counted over every live annotation of the
condition's answers in any batch: ``ratings`` (rating rows, each annotator's counting once),
``mean_rating``, ``rating_counts`` ([n of 1, …, n of 5]), ``rated_samples``, ``label_counts``
({label: n}), ``notes`` and ``preference_wins`` (prompt preferences naming the condition). The
``Stats`` object also carries ``annotators``, ``preferences`` (ties, all-bad) and ``agreement``
between annotators (``engine.annotations.agreement``).

Undefined values (Jaccard of two empty bags, coverage of an empty bag) are skipped, as in
engine.metrics, and a prompt without a defined value is left out of the mean over prompts.
Pure Python + numpy: ``overton stats`` never imports torch.

Word bags come from the session when stored (``session_word_bags``: table ``word_bags``, keyed
by the text's sha256 and ``metrics.word_bag_key()``); the ones computed are stored for the next
run, so a second ``overton stats`` neither imports NLTK nor tokenizes. The figures are the same
either way (a stored bag is the computed one).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Iterable

from engine import metrics as m
from engine.averages import mean
from engine.prompt_metrics import aggregation
from engine.conditions import CONDITIONS, REFERENCE
from engine.session import Session

DEFAULT_BASE = "base"


class StatsError(ValueError):
    """A problem the user can fix (unknown condition ...); shown without a traceback."""


@dataclass
class ConditionStats:
    condition: str
    prompts: int
    samples: int
    mean_words: float | None
    diversity: float | None
    similarity: float | None
    coverage: float | None
    embedding_similarity: float | None
    gap_closed: float | None
    abstain_rate: float | None
    numbered_list_rate: float | None
    bullet_list_rate: float | None
    info_in_reference: float | None = None
    info_in_one_other: float | None = None
    info_in_union_others: float | None = None
    compared_prompts: int = 0  # prompts with the reference's sample 0 (similarity, coverage)
    embeddings_missing: int = 0  # texts needed for embedding_similarity without a stored vector
    is_reference: bool = False
    is_base: bool = False
    # hand-made annotations (engine.annotations.condition_summary)
    ratings: int = 0
    mean_rating: float | None = None
    rating_counts: list[int] = field(default_factory=lambda: [0] * 5)
    rated_samples: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    notes: int = 0
    preference_wins: int = 0


@dataclass
class Aggregation:
    """Information aggregation of the base condition (the paper's figure)."""

    condition: str
    in_reference: float | None
    in_one_other: float | None
    in_union_others: float | None


@dataclass
class Stats:
    reference: str
    base: str | None
    embedding_model: str | None
    rows: list[ConditionStats] = field(default_factory=list)
    prompts: int = 0  # prompts in the session
    annotators: list[str] = field(default_factory=list)
    preferences: dict[str, int] = field(default_factory=dict)  # engine.annotations.preference_totals
    agreement: dict | None = None  # engine.annotations.agreement

    def row(self, condition: str) -> ConditionStats | None:
        return next((r for r in self.rows if r.condition == condition), None)

    @property
    def aggregation(self) -> Aggregation | None:
        row = self.row(self.base) if self.base else None
        if row is None or row.is_reference:
            return None
        return Aggregation(row.condition, row.info_in_reference, row.info_in_one_other, row.info_in_union_others)

    def to_records(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def to_json(self, indent: int | None = 2) -> str:
        """A JSON list of objects, one per condition; numbers are numbers, undefined is null."""
        return json.dumps(self.to_records(), indent=indent, ensure_ascii=False)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return mean(kept) if kept else None


def session_word_bags(session: Session, texts: Iterable[str], store: bool = True) -> dict[str, frozenset]:
    """``{text: word bag}`` for every text: the bags stored in the session, the others computed
    with ``metrics.word_bag`` and (``store``) stored for next time. A session that cannot be
    written (read-only, locked) only loses the caching, never the figures."""
    wanted = set(texts)
    key = m.word_bag_key()
    bags = session.word_bags_for(key, wanted) if wanted else {}
    missing = {t: m.word_bag(t) for t in wanted if t not in bags}
    if missing:
        bags.update(missing)
        if store:
            try:
                session.store_word_bags(key, missing)
            except sqlite3.Error:
                pass
    return bags


def _order(conditions: Iterable[str], reference: str, base: str | None) -> list[str]:
    """Base first, the reference (the ceiling) last; the workbench's own conditions in their
    usual order, any other (imported) names alphabetically."""
    known = list(CONDITIONS)

    def key(c: str):
        return (0 if c == base else 2 if c == reference else 1,
                known.index(c) if c in known else len(known), c)

    return sorted(conditions, key=key)


def _pick_embedding_model(session: Session, requested: str | None) -> str | None:
    if requested:
        return requested
    stored = session.embedding_models()
    if not stored:
        return None
    from engine.models import TRIOS  # light: no torch

    default_id = TRIOS["default"].embedder.id
    if default_id in stored:
        return default_id
    return next(iter(stored)) if len(stored) == 1 else None


def compute_stats(
    session: Session,
    reference: str | None = None,
    base: str | None = None,
    embedding_model: str | None = None,
    require_reference: bool = True,
) -> Stats:
    """Statistics of every condition in ``session``; see the module docstring.

    ``reference`` defaults to 'aligned'; ``base`` to the condition named 'base' when there is one
    (without a base, gap closed is None). An explicitly named base or a reference that the
    session does not have raises StatsError. ``embedding_model`` is the embedder's model id
    (default: the default trio's embedder if stored, else the only one stored).
    ``require_reference=False``: a missing reference is no error; the figures measured against
    it (similarity, coverage, gap closed, information aggregation) are then None.
    """
    batches = session.latest_batches()
    per_condition: dict[str, dict[str, dict[int, str]]] = {}
    for (pid, cond), rows in batches.items():
        per_condition.setdefault(cond, {})[pid] = {i: r["text"] or "" for i, r in rows.items()}
    n_prompts = len(session.prompts())

    ref_name = reference or REFERENCE
    if base is not None and per_condition and base not in per_condition:
        raise StatsError(f"the base condition {base!r} is not in this session; its conditions are: "
                         f"{', '.join(sorted(per_condition))}")
    if not per_condition:
        return _with_annotations(session, Stats(ref_name, base, embedding_model, [], n_prompts))
    if ref_name not in per_condition and require_reference:
        raise StatsError(f"the reference condition {ref_name!r} is not in this session; its conditions are: "
                         f"{', '.join(sorted(per_condition))}. Choose one with --reference.")
    base_name = base if base is not None else (DEFAULT_BASE if DEFAULT_BASE in per_condition else None)
    model_id = _pick_embedding_model(session, embedding_model)

    refs = {pid: batch[0] for pid, batch in per_condition.get(ref_name, {}).items() if 0 in batch}

    # every text an embedding similarity needs, fetched once
    vectors: dict = {}
    if model_id is not None:
        needed = set(refs.values())
        for cond, prompts in per_condition.items():
            for pid, batch in prompts.items():
                if pid in refs:
                    needed.update(t for i, t in batch.items() if not (cond == ref_name and i == 0))
        vectors = session.embeddings_for(model_id, needed)

    bags = session_word_bags(session, (t for prompts in per_condition.values()
                                       for batch in prompts.values() for t in batch.values()))
    rows = []
    for cond in _order(per_condition, ref_name, base_name):
        rows.append(_condition_stats(cond, per_condition[cond], refs, ref_name, base_name, vectors, model_id, bags))

    base_row = next((r for r in rows if r.condition == base_name), None)
    ref_row = next((r for r in rows if r.condition == ref_name), None)
    for r in rows:
        r.gap_closed = gap_closed(r.similarity, base_row.similarity if base_row else None,
                                  ref_row.similarity if ref_row else None)
    return _with_annotations(session, Stats(ref_name, base_name, model_id, rows, n_prompts))


def _with_annotations(session: Session, stats: Stats) -> Stats:
    """Fill in the hand-made annotations' counts per condition, preferences and agreement."""
    from engine import annotations as ann

    collected = ann.collect(session)
    per_condition = ann.condition_summary(session, collected)
    for row in stats.rows:
        for key, value in per_condition.get(row.condition, {}).items():
            setattr(row, key, value)
    stats.annotators = list(collected.annotators)
    stats.preferences = ann.preference_totals(session, collected)
    stats.agreement = ann.agreement(session, collected)
    return stats


def gap_closed(sim: float | None, base_sim: float | None, ceiling: float | None) -> float | None:
    """(sim − sim(base)) ÷ (ceiling − sim(base)); None when undefined."""
    # Undefined unless the ceiling is above the base: there is no gap to close otherwise.
    if sim is None or base_sim is None or ceiling is None or ceiling - base_sim < 1e-12:
        return None
    return (sim - base_sim) / (ceiling - base_sim) + 0.0  # + 0.0 turns -0.0 into 0.0


def _condition_stats(cond, prompts, refs, ref_name, base_name, vectors, model_id, bags=None) -> ConditionStats:
    """One condition's row; ``bags`` ({text: word bag}, e.g. from ``session_word_bags``) saves
    tokenizing, texts missing from it are tokenized."""
    bag = (lambda t: bags[t] if t in bags else m.as_bag(t)) if bags else m.as_bag
    is_ref = cond == ref_name
    all_texts = [t for batch in prompts.values() for t in batch.values()]
    per_prompt = [list(batch.values()) for batch in prompts.values()]

    compared: list[list[str]] = []  # per prompt with reference s0: samples measured against it
    ref_texts: list[str] = []
    for pid, batch in prompts.items():
        if pid in refs:
            compared.append([t for i, t in batch.items() if not (is_ref and i == 0)])
            ref_texts.append(refs[pid])

    # embedding similarity from stored vectors only
    needed = {t for texts in compared for t in texts} | set(ref_texts)
    missing = len(needed) if model_id is None else sum(1 for t in needed if t not in vectors)
    emb = None
    if not missing and compared:
        emb = _mean(
            _mean(float(vectors[t].astype("float64") @ vectors[r].astype("float64")) for t in texts)
            for texts, r in zip(compared, ref_texts)
        )

    flags = [m.quality_flags(t) for t in all_texts]
    rate = (lambda k: mean(1.0 if f[k] else 0.0 for f in flags)) if flags else (lambda k: None)

    info = (None, None, None)
    if not is_ref:
        info = _aggregation([([bag(t) for t in batch.values()], bag(refs[pid]))
                             for pid, batch in prompts.items() if pid in refs])
    bag_per_prompt = [[bag(t) for t in texts] for texts in per_prompt]
    bag_compared = [[bag(t) for t in texts] for texts in compared]
    bag_refs = [bag(t) for t in ref_texts]

    return ConditionStats(
        condition=cond,
        prompts=len(prompts),
        samples=len(all_texts),
        mean_words=m.mean_words(all_texts),
        diversity=m.diversity(bag_per_prompt),
        similarity=m.similarity(bag_compared, bag_refs) if compared else None,
        coverage=m.coverage_mean(bag_compared, bag_refs) if compared else None,
        embedding_similarity=emb,
        gap_closed=None,
        abstain_rate=rate("abstain"),
        numbered_list_rate=rate("numbered_list"),
        bullet_list_rate=rate("bullet_list"),
        info_in_reference=info[0],
        info_in_one_other=info[1],
        info_in_union_others=info[2],
        compared_prompts=len(compared),
        embeddings_missing=missing,
        is_reference=is_ref,
        is_base=cond == base_name,
    )


def _aggregation(prompts: list[tuple[list[m.Text], m.Text]]) -> tuple[float | None, float | None, float | None]:
    """Means over prompts (with >= 2 samples) of the per-prompt figures of
    ``prompt_metrics.aggregation`` (the same rule the app shows for one prompt)."""
    per_prompt = [a for a in (aggregation(samples, ref) for samples, ref in prompts) if a is not None]
    return tuple(_mean(getattr(a, f) for a in per_prompt)  # type: ignore[return-value]
                 for f in ("in_reference", "in_one_other", "in_union_others"))
