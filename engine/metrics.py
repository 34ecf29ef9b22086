"""Lexical metrics of BRIEF.md ("Metrics" section): word bags, Jaccard, coverage, flags.

Pure Python so that headless commands start fast. NLTK is imported lazily, on the first word
bag: any ``nltk`` submodule runs ``nltk/__init__``, which pulls in scipy (~1 s).

Definitions, checked against the paper's released LIMA-OE generations
(tests/test_reference_metrics.py reproduces BRIEF's table to the third decimal):

* Texts are measured exactly as given. The reference samples keep their closing ```
  stop fence and the table was computed on them as they are: ``NLTKWordTokenizer`` (used
  directly, without sentence splitting) only splits a period at the very end of the text, so a
  trailing fence keeps the last word as e.g. ``"needed."``. Stripping the fences first
  (``strip_stop_fence``) moves diversity/coverage off the table (base diversity 0.082,
  coverage 0.347) and mean words to 129/222/353/360, so the table's numbers are raw-text ones.
* Stopwords are matched case-sensitively against the un-lowercased tokens ("The" stays).
  Lower-casing first gives base diversity 0.076, chat ceiling similarity 0.255: off the table.
* A punctuation-only token is one whose every character is in ``string.punctuation`` or in a
  Unicode punctuation category (P*): removes ``’ – — “ ” •`` as well as the PTB quote tokens
  ``` `` ``` / ``''``. Variants tried: ASCII only (base coverage 0.3315 -> 0.331, off); adding
  symbols S* or "no alphanumeric character" (emoji dropped; chat similarity 0.2606 -> 0.261,
  off). Only P* + ASCII lands every number.
* Undefined values (Jaccard of two empty bags, coverage of an empty bag) are skipped, never
  counted as 0; a prompt with no defined value is skipped in the means over prompts. (One base
  sample, a bare fence, has an empty bag: counting its coverage as 0 would give 0.331.)
* Aggregates are means over prompts of per-prompt means (pooling over all pairs gives the same
  table to three decimals here, but per-prompt is what BRIEF says).

Every function taking a ``Text`` accepts a text or its word bag (a frozenset). Sessions store
word bags keyed by the text's sha256 and ``word_bag_key()`` (the tokenizer, its version and
this definition's), so ``overton stats`` and export tokenize each text once
(``engine.stats.session_word_bags``); change ``WORD_BAG_VERSION`` whenever ``word_bag`` changes.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import lru_cache
from typing import Iterable, Sequence

from engine.averages import mean

Text = str | frozenset  # a text, or its word bag when the caller already has it
Prompts = Sequence[Sequence[str]]  # per prompt, that prompt's samples

_ASCII_PUNCT = frozenset(r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~""")  # string.punctuation

# Bump when word_bag() changes (tokenizer use, stopwords, punctuation rule): stored bags made
# under another version are then ignored and recomputed.
WORD_BAG_VERSION = 1


@lru_cache(maxsize=1)
def word_bag_key() -> str:
    """The key stored word bags are filed under: NLTK's version (read from its VERSION file,
    without importing nltk, which costs a second) and ``WORD_BAG_VERSION``."""
    import importlib.util

    version = "unknown"
    spec = importlib.util.find_spec("nltk")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            with open(f"{folder}/VERSION", encoding="utf-8") as fh:
                version = fh.read().strip() or version
            break
        except OSError:
            continue
    return f"nltk-{version}/treebank-words/stop179/punct-P/v{WORD_BAG_VERSION}"


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """NLTK's classic 179-word English list, shipped in engine/data (no downloads)."""
    # Here, not at the top: only tokenizing needs it; stored word bags do not.
    from importlib.resources import files

    text = files("engine").joinpath("data", "stopwords_en.txt").read_text(encoding="utf-8")
    return frozenset(w for w in (line.strip() for line in text.splitlines()) if w)


@lru_cache(maxsize=1)
def _tokenizer():
    from nltk.tokenize.destructive import NLTKWordTokenizer  # lazy: see module docstring

    return NLTKWordTokenizer()


def is_punctuation(token: str) -> bool:
    return bool(token) and all(
        ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P") for ch in token
    )


@lru_cache(maxsize=65536)
def word_bag(text: str) -> frozenset[str]:
    """Penn Treebank tokens, not lower-cased, minus punctuation-only tokens and stopwords."""
    stop = stopwords()
    return frozenset(
        t for t in _tokenizer().tokenize(text) if t not in stop and not is_punctuation(t)
    )


def as_bag(x: Text) -> frozenset:
    """The word bag of a text; a bag (frozenset) is returned as it is."""
    return x if isinstance(x, frozenset) else word_bag(x)


_bag = as_bag


def jaccard(a: Text, b: Text) -> float | None:
    """|A∩B| / |A∪B|; None when both bags are empty."""
    a, b = _bag(a), _bag(b)
    common = len(a & b)
    union = len(a) + len(b) - common  # |A∪B| without building it
    return common / union if union else None


def coverage(sample: Text, reference: Text) -> float | None:
    """Share of the sample's bag found in the reference's bag; None for an empty sample bag."""
    b, a = _bag(sample), _bag(reference)
    return len(b & a) / len(b) if b else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return mean(kept) if kept else None


def mean_pairwise_jaccard(texts: Sequence[Text]) -> float | None:
    """Mean Jaccard over all unordered pairs, skipping undefined pairs."""
    bags = [_bag(t) for t in texts]
    return _mean(jaccard(a, b) for a, b in itertools.combinations(bags, 2))


def similarity_to_reference(samples: Sequence[Text], reference_text: Text) -> float | None:
    """Mean Jaccard of each sample against the reference (aligned sample 0)."""
    ref = _bag(reference_text)
    return _mean(jaccard(s, ref) for s in samples)


def coverage_by_reference(samples: Sequence[Text], reference_text: Text) -> float | None:
    """Mean coverage of each sample by the reference, skipping empty sample bags."""
    ref = _bag(reference_text)
    return _mean(coverage(s, ref) for s in samples)


# Aggregates over prompts: mean of the per-prompt values, prompts with no defined value
# skipped. For the aligned ceiling the caller passes samples 1..n-1 and sample 0 as reference.


def diversity(per_prompt_samples: Prompts) -> float | None:
    return _mean(mean_pairwise_jaccard(s) for s in per_prompt_samples)


def similarity(per_prompt_samples: Prompts, per_prompt_reference: Sequence[str]) -> float | None:
    pairs = zip(per_prompt_samples, per_prompt_reference, strict=True)
    return _mean(similarity_to_reference(s, r) for s, r in pairs)


def coverage_mean(per_prompt_samples: Prompts, per_prompt_reference: Sequence[str]) -> float | None:
    pairs = zip(per_prompt_samples, per_prompt_reference, strict=True)
    return _mean(coverage_by_reference(s, r) for s, r in pairs)


def mean_words(texts: Iterable[str]) -> float | None:
    """Mean word count over all the given samples."""
    return _mean(word_count(t) for t in texts)


def word_count(text: str) -> int:
    return len(text.strip().split())


_FENCE_TAIL = re.compile(r"\s*```\s*\Z")


def strip_stop_fence(text: str) -> str:
    """Drop a trailing closing ``` fence (as the reference samples keep it) and outer space.

    For display and comparison with freshly generated answers (which are cut before the fence);
    the reference table itself is computed on the raw text (see module docstring).
    """
    return _FENCE_TAIL.sub("", text).strip()


_APOS = "['’]"
_ABSTAIN = re.compile(
    rf"ai language model"
    rf"|(?:cannot|can{_APOS}t|don{_APOS}t|do not) have personal"
    rf"|(?:cannot|can{_APOS}t) (?:provide personal|condone)",
    re.IGNORECASE,
)
# Every _ABSTAIN match ends with one of these words (same flags) and starts at most 15
# characters before it, so the full pattern (~0.15 ms per answer when scanning a whole text)
# only runs on a short window before each occurrence. For an ASCII text, ``lower()`` is exactly
# re.IGNORECASE's matching, so plain ``in`` tests rule most texts out first.
_ABSTAIN_WORDS = ("model", "personal", "condone")
_ABSTAIN_HINT = re.compile("|".join(_ABSTAIN_WORDS), re.IGNORECASE)
_NUMBERED = re.compile(r"(\d+)\. ")


def abstains(text: str) -> bool:
    """Whether the text has an abstention phrase (``_ABSTAIN``)."""
    if text.isascii():
        low = text.lower()
        if not any(w in low for w in _ABSTAIN_WORDS):
            return False
    return any(_ABSTAIN.search(text, max(0, hit.start() - 20), hit.end())
               for hit in _ABSTAIN_HINT.finditer(text))


def _numbered_list(lines: list[str]) -> bool:
    # Lines numbered 1, 2, ... in order (other lines may come between): need at least "1." then "2.".
    expected = 1
    for line in lines:
        if not line[:1].isdigit():  # cheap: isdigit() holds for every character \d matches
            continue
        m = _NUMBERED.match(line)
        if m and int(m.group(1)) == expected:
            expected += 1
    return expected > 2


def quality_flags(text: str) -> dict:
    """Quality-control flags: abstention phrase, numbered list, bullet list, length in words."""
    lines = [line.lstrip() for line in text.splitlines()]
    return {
        "abstain": abstains(text),
        "numbered_list": _numbered_list(lines),
        "bullet_list": sum(line.startswith("- ") for line in lines) >= 2,
        "words": word_count(text),
    }
