"""`overton run` as a user drives it: Ctrl-C keeps the partial answer, resume is exact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from engine.session import Session
from tui.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _models(trio) -> str:
    return f"base={trio.base.ref},aligned={trio.aligned.ref}"


def test_ctrl_c_keeps_partial_answer_and_exits_cleanly(tiny_trio, tmp_path):
    env = {**os.environ, "OVERTON_SESSIONS_DIR": str(tmp_path), "COLUMNS": "100"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "run", "Tell me everything.", "--models", _models(tiny_trio),
         "--session", "int", "--max-new-tokens", "4000", "--temperature", "1.0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen = ""
    deadline = time.monotonic() + 120
    while "sample 1/1" not in seen and time.monotonic() < deadline:  # base has started streaming
        seen += proc.stdout.read(1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    out = seen + out
    assert proc.returncode == 130, out[-2000:]
    assert "Traceback" not in out and "terminate called" not in out
    assert "interrupted: keeping the partial answer" in out
    with Session.open(tmp_path / "int.db", create=False) as s:
        rows = sorted(s.generations(), key=lambda r: (r["created_at"], r["id"]))
        # The answer being written when Ctrl-C came is kept, marked cancelled, and is the last
        # one: nothing ran after it. (A tiny random model may finish base before the signal.)
        assert rows and rows[-1]["finish_reason"] == "cancelled"
        assert all(r["finish_reason"] != "cancelled" for r in rows[:-1])
        # (It may hold no token yet: a signal during a prefill cancels before the first one.)
        assert rows[-1]["completion_tokens"] < 4000


def test_batch_resume_only_reuses_the_same_recipe(tiny_trio, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("First question?\nSecond question?\n", encoding="utf-8")
    base = ["run", "--prompts", str(prompts), "--models", _models(tiny_trio), "--sessions-dir", str(tmp_path),
            "--session", "b", "--conditions", "base", "--max-new-tokens", "4"]
    runner = CliRunner()
    r = runner.invoke(app, base + ["--samples", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, base + ["--samples", "3"])  # resume: only sample 2 is new
    assert r.exit_code == 0, r.output
    with Session.open(tmp_path / "b.db", create=False) as s:
        assert sorted(r["sample_index"] for r in s.generations()) == [0, 0, 1, 1, 2, 2]
    r = runner.invoke(app, base + ["--samples", "3", "--temperature", "0"])  # other settings: a new batch
    assert r.exit_code == 0, r.output
    with Session.open(tmp_path / "b.db", create=False) as s:
        rows = s.generations()
        assert len(rows) == 12
        newest = s.latest_batches()
        assert len(newest) == 2
        for batch in newest.values():
            assert sorted(batch) == [0, 1, 2]
            assert all(json.loads(row["settings_json"])["temperature"] == 0.0 for row in batch.values())


def test_batch_refuses_an_edited_prompt_with_a_known_id(tiny_trio, tmp_path):
    f = tmp_path / "p.jsonl"
    args = ["run", "--prompts", str(f), "--models", _models(tiny_trio), "--sessions-dir", str(tmp_path),
            "--session", "c", "--conditions", "base", "--samples", "1", "--max-new-tokens", "3"]
    f.write_text('{"id": "q1", "prompt": "What is love?"}\n', encoding="utf-8")
    assert CliRunner().invoke(app, args).exit_code == 0
    f.write_text('{"id": "q1", "prompt": "What is hate?"}\n', encoding="utf-8")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1
    assert "prompt id 'q1' is already in this session with different text" in r.output


def test_bad_model_path_fails_before_a_session_file_exists(tmp_path):
    r = CliRunner().invoke(app, ["run", "hi", "--models", "base=/nonexistent/model", "--sessions-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "no model folder at /nonexistent/model" in r.output
    assert list(tmp_path.iterdir()) == []


def test_hint_needs_a_single_prompt_and_text(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Q?\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["run", "--prompts", str(f), "--hint", "x", "--sessions-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--hint goes with a single PROMPT" in r.output
    r = CliRunner().invoke(app, ["run", "Q?", "--hint", "  ", "--sessions-dir", str(tmp_path)])
    assert r.exit_code == 2 and "the hint is empty" in r.output


def test_app_refuses_an_empty_annotator_before_opening_anything(tmp_path):
    r = CliRunner().invoke(app, ["--annotator", "  ", "--sessions-dir", str(tmp_path)])
    assert r.exit_code == 2 and "annotator name is empty" in r.output
    assert list(tmp_path.iterdir()) == []


def test_errors_never_print_raw_escape_sequences(tmp_path):
    r = CliRunner().invoke(app, ["run", "hi", "--models", "base=/no\x1b[31mpe", "--sessions-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "\x1b[31m" not in r.output and "␛[31m" in r.output


def test_samples_of_a_batch_print_one_after_another(tiny_trio, tmp_path):
    """The samples decode together, their text interleaved; the output shows each whole,
    under its own header, in order."""
    from engine.sanitize import printable

    r = CliRunner().invoke(app, ["run", "Tell me.", "--models", _models(tiny_trio), "--sessions-dir", str(tmp_path),
                                 "--session", "n", "--conditions", "base", "--samples", "3",
                                 "--max-new-tokens", "10"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    with Session.open(tmp_path / "n.db", create=False) as s:
        texts = {g["sample_index"]: g["text"] for g in s.generations()}
    assert len(set(texts.values())) > 1
    at = [r.output.index(f"sample {i + 1}/3") for i in range(3)]
    assert at == sorted(at)
    for i in range(3):
        end = at[i + 1] if i < 2 else len(r.output)
        assert printable(texts[i]) in r.output[at[i]:end]  # whole, between its header and the next


def test_batch_skips_a_prompt_too_long_names_it_and_runs_the_rest(tiny_trio, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "small", "prompt": "Short?"}) + "\n"
                 + json.dumps({"id": "huge", "prompt": "word " * 9000}) + "\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["run", "--prompts", str(f), "--models", _models(tiny_trio), "--sessions-dir",
                                 str(tmp_path), "--session", "h", "--conditions", "base", "--samples", "1",
                                 "--max-new-tokens", "3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "prompt 'huge' (line 2) skipped: the prompt alone is" in r.output
    assert "1 skipped: 'huge'" in r.output
    with Session.open(tmp_path / "h.db", create=False) as s:
        assert [p["external_id"] for p in s.prompts()] == ["small"]
        assert len(s.generations()) == 1


def test_a_single_prompt_refused_leaves_no_session_file(tiny_trio, tmp_path):
    r = CliRunner().invoke(app, ["run", "word " * 9000, "--models", _models(tiny_trio), "--sessions-dir",
                                 str(tmp_path), "--session", "gone", "--max-new-tokens", "3"])
    assert r.exit_code == 1 and "the prompt alone is" in r.output
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept.db").touch()  # an existing (empty) file is never removed
    CliRunner().invoke(app, ["run", "word " * 9000, "--models", _models(tiny_trio), "--sessions-dir",
                             str(tmp_path), "--session", "kept", "--max-new-tokens", "3"])
    assert (tmp_path / "kept.db").exists()


def test_the_same_prompt_run_again_is_a_new_batch_of_one_prompt(tiny_trio, tmp_path):
    args = ["run", "Why is the sea salty?", "--models", _models(tiny_trio), "--sessions-dir", str(tmp_path),
            "--session", "again", "--conditions", "base", "--max-new-tokens", "3"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert CliRunner().invoke(app, args + ["--seed", "5"]).exit_code == 0
    with Session.open(tmp_path / "again.db", create=False) as s:
        (prompt,) = s.prompts()
        assert sorted(g["seed"] for g in s.generations(prompt["id"])) == [0, 5]
