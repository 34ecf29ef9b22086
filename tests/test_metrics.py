"""engine.metrics on hand-worked examples, plus property tests."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import metrics as m


def test_stopword_list_is_nltk_classic_179():
    sw = m.stopwords()
    assert len(sw) == 179
    for w in ("i", "me", "you're", "should've", "don't", "ain", "ma", "won't", "wouldn't", "the"):
        assert w in sw
    assert "The" not in sw and "n't" not in sw and "'s" not in sw


def test_word_bag_contraction_and_stopwords():
    # tokens: I do n't think the cats are happy .  -> "do"/"the"/"are" stopwords, "." punctuation;
    # "I" is kept: the list is lower-case and tokens are not lower-cased.
    bag = m.word_bag("I don't think the cats are happy.")
    assert bag == frozenset({"I", "n't", "think", "cats", "happy"})


def test_word_bag_case_sensitive_stopwords():
    assert m.word_bag("The quick brown fox jumps over the lazy dog!") == frozenset(
        {"The", "quick", "brown", "fox", "jumps", "lazy", "dog"}
    )


def test_word_bag_punctuation_only_tokens_removed():
    # PTB turns quotes into `` and '', the fence into `` + `; all punctuation-only.
    # Only the text-final period is split off, so "yes." keeps its period before the fence.
    text = 'Well -- "quoted" (words), really... yes.\n```'
    assert m.word_bag(text) == frozenset({"Well", "quoted", "words", "really", "yes."})
    # Unicode punctuation (curly quotes, en dash) goes too; "said…" is one token with letters.
    assert m.word_bag("“Hi” – he said… ok") == frozenset({"Hi", "said…", "ok"})
    # Symbols are not punctuation: an emoji is a word.
    assert m.word_bag("Great 😊") == frozenset({"Great", "😊"})


def test_is_punctuation():
    assert all(m.is_punctuation(t) for t in ("``", "''", "...", "’", "•", "—"))
    assert not m.is_punctuation("n't") and not m.is_punctuation("") and not m.is_punctuation("a.")


def test_empty_texts():
    assert m.word_bag("") == frozenset()
    assert m.word_bag("the, and... ```") == frozenset()
    assert m.jaccard("", "the of .") is None
    assert m.jaccard("", "cats") == 0.0
    assert m.coverage("", "cats") is None
    assert m.coverage("cats", "") == 0.0
    assert m.mean_pairwise_jaccard(["", "."]) is None
    assert m.mean_pairwise_jaccard(["only one"]) is None
    assert m.similarity_to_reference([], "cats") is None
    assert m.word_count("  \n ") == 0


def test_jaccard_and_coverage_known_bags():
    a = "I don't think the cats are happy."  # {I, n't, think, cats, happy}
    b = "Cats think dogs are happy"  # {Cats, think, dogs, happy}
    assert m.jaccard(a, b) == pytest.approx(2 / 7)
    assert m.jaccard(m.word_bag(a), m.word_bag(b)) == pytest.approx(2 / 7)
    assert m.coverage(b, a) == pytest.approx(2 / 4)
    assert m.coverage(a, b) == pytest.approx(2 / 5)
    assert m.jaccard(frozenset({"x", "y"}), frozenset({"y", "z"})) == pytest.approx(1 / 3)


def test_mean_pairwise_and_similarity():
    t = ["red apple", "red pear", "green pear"]
    # pairs: {red,apple}|{red,pear} 1/3; {red,apple}|{green,pear} 0; {red,pear}|{green,pear} 1/3
    assert m.mean_pairwise_jaccard(t) == pytest.approx(2 / 9)
    # undefined pair (two empty bags) skipped: only "cats"/"" and "cats"/"the" defined, both 0
    assert m.mean_pairwise_jaccard(["cats", "", "the"]) == 0.0
    assert m.similarity_to_reference(t, "red apple") == pytest.approx((1 + 1 / 3 + 0) / 3)
    cov = m.coverage_by_reference(["red pear", "", "apple"], "red apple")
    assert cov == pytest.approx((1 / 2 + 1) / 2)


def test_aggregates_mean_over_prompts_skipping_undefined():
    prompts = [["red apple", "red pear", "green pear"], ["a b", "a c"], ["", "the"]]
    # third prompt has no defined pair and is skipped; "a" is a stopword -> {b} vs {c} = 0
    assert m.diversity(prompts) == pytest.approx((2 / 9 + 0) / 2)
    refs = ["red apple", "b", "cats"]
    assert m.similarity(prompts, refs) == pytest.approx(((1 + 1 / 3 + 0) / 3 + 1 / 2 + 0) / 3)
    assert m.coverage_mean(prompts, refs) == pytest.approx(((1 + 1 / 2 + 0) / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError):
        m.similarity(prompts, refs[:2])


def test_word_count_and_fence():
    assert m.word_count("  one two\nthree\t four  ") == 4
    assert m.strip_stop_fence("Some answer.\n```") == "Some answer."
    assert m.strip_stop_fence("Some answer.\n```\n") == "Some answer."
    assert m.strip_stop_fence("```python\ncode\n```") == "```python\ncode"
    assert m.strip_stop_fence("no fence ") == "no fence"
    assert m.mean_words(["a b", "c d e f"]) == 3


@pytest.mark.parametrize(
    "text",
    [
        "As an AI language model, I cannot do that.",
        "I don't have personal opinions.",
        "I DON’T HAVE PERSONAL experiences",
        "I do not have personal feelings",
        "I cannot have personal views",
        "I can't provide personal advice.",
        "I can’t provide personal details.",
        "I cannot condone violence.",
        "I can't condone that.",
    ],
)
def test_abstain_positive(text):
    assert m.quality_flags(text)["abstain"] is True


@pytest.mark.parametrize(
    "text",
    [
        "Here is a language model answer.",
        "I have personal experience.",
        "You cannot provide it.",
        "I condone nothing",
    ],
)
def test_abstain_negative(text):
    assert m.quality_flags(text)["abstain"] is False


def test_list_flags():
    numbered = "Steps:\n1. Boil water.\nThen wait.\n  2. Add tea.\n3. Drink."
    f = m.quality_flags(numbered)
    assert f["numbered_list"] is True and f["bullet_list"] is False and f["words"] == 11
    assert m.quality_flags("1. Only one item.")["numbered_list"] is False
    assert m.quality_flags("2. Starts at two\n3. then three")["numbered_list"] is False
    assert m.quality_flags("2. first\n1. one\n2. two")["numbered_list"] is True
    assert m.quality_flags("1.no space\n2.no space")["numbered_list"] is False
    assert m.quality_flags("In 1. and 2. inline")["numbered_list"] is False
    bullets = "Options:\n- tea\n  - coffee"
    assert m.quality_flags(bullets)["bullet_list"] is True
    assert m.quality_flags("- just one\n-not a bullet\n* star")["bullet_list"] is False
    assert m.quality_flags("") == {"abstain": False, "numbered_list": False, "bullet_list": False, "words": 0}


def test_import_is_light():
    heavy = "{'torch', 'transformers', 'sentence_transformers', 'textual', 'nltk'}"
    code = f"import sys, engine.metrics; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# Word-ish pieces (stopwords, contractions, punctuation, unicode) joined into short texts.
pieces = st.sampled_from(
    ["the", "cat", "Cat", "don't", "a", "b", "X", ".", ",", "-", "'", "…", "“", "’s", " ", "\n"]
)
texts = st.lists(pieces, max_size=15).map(" ".join) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_jaccard_properties(a, b):
    j = m.jaccard(a, b)
    assert j == m.jaccard(b, a)
    if j is None:
        assert not m.word_bag(a) and not m.word_bag(b)
    else:
        assert 0.0 <= j <= 1.0
    if m.word_bag(a):
        assert m.jaccard(a, a) == 1.0
        assert m.coverage(a, a) == 1.0


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_coverage_properties(a, b):
    c = m.coverage(a, b)
    if not m.word_bag(a):
        assert c is None
    else:
        assert 0.0 <= c <= 1.0
        # coverage is at least the Jaccard: |B∩A|/|B| >= |B∩A|/|A∪B|
        assert c >= m.jaccard(a, b) - 1e-12
