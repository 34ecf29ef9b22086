from engine.prompts import FENCE, cut_at_stop, fixed_examples, held_back, summary_request, urial_prompt


def test_zero_shot_layout_ends_with_open_answer_fence():
    text = urial_prompt("Why is the sky blue?")
    assert text.startswith("# Instructions:\n")
    assert text.endswith("# Query:\n```\nWhy is the sky blue?\n```\n\n# Answer:\n```\n")
    assert "# Summary:" not in text


def test_hinted_layout_puts_summary_between_query_and_answer():
    examples = fixed_examples()
    assert len(examples) == 3 and all(e.summary for e in examples)
    text = urial_prompt("Q?", examples, with_summaries=True, hint="A short hint.")
    assert [text.count(f"\n# {b}:\n") for b in ("Query", "Summary", "Answer")] == [4, 4, 4]
    tail = text[text.rindex("# Query:"):]
    assert tail == "# Query:\n```\nQ?\n```\n\n# Summary:\n```\nA short hint.\n```\n\n# Answer:\n```\n"
    # Every example block is closed: the only open fence is the last one.
    assert text.count(FENCE) % 2 == 1


def test_hinted_layout_refuses_missing_hint():
    import pytest

    with pytest.raises(ValueError):
        urial_prompt("Q?", fixed_examples(), with_summaries=True, hint="  ")


def test_self_summary_layout_leaves_summary_open_then_continues():
    from engine.prompts import continue_after_summary

    text = urial_prompt("Q?", fixed_examples(), with_summaries=True, hint=None)
    assert text.endswith("# Query:\n```\nQ?\n```\n\n# Summary:\n```\n")
    full = continue_after_summary(text, " my own summary \n")
    assert full == urial_prompt("Q?", fixed_examples(), with_summaries=True, hint="my own summary")


def test_cut_at_earliest_stop():
    assert cut_at_stop("An answer.\n```\nmore") == ("An answer.\n", "```")
    assert cut_at_stop("An answer.\n\n# Query:\n```\nnext") == ("An answer.\n\n", "# Query:")
    assert cut_at_stop("no stop here") == ("no stop here", None)


def test_held_back_covers_partial_stops():
    assert held_back("text `") == 1
    assert held_back("text ``") == 2
    assert held_back("text # Que") == 5
    assert held_back("text #") == 1
    assert held_back("plain") == 0


def test_summary_request_keeps_braces_literal():
    text = summary_request("What is {x}?", "Use {braces} and {query}.")
    assert "What is {x}?" in text and "Use {braces} and {query}." in text
