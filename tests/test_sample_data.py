"""Tests of the bundled sample data and its generator (tools/sample_data.py)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from launch.questions.data import load_questions, normalize_question, split_questions
from launch.spec.config import DataSource
from support.tools import load_tool

sample_data = load_tool("sample_data")
generate, main, write = sample_data.generate, sample_data.main, sample_data.write

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "data" / "sample" / "cyber_mcq.json"


def _by_fact(questions):
    facts = defaultdict(list)
    for q in questions:
        facts[q.fact_id].append(q)
    return facts


def test_committed_file_matches_generator(tmp_path):
    write(tmp_path / "regen.json", seed=0)
    assert (tmp_path / "regen.json").read_bytes() == COMMITTED.read_bytes(), (
        "data/sample/cyber_mcq.json is stale -> python tools/sample_data.py data/sample/cyber_mcq.json"
    )


def test_committed_file_loads_and_matches_records():
    loaded = load_questions(DataSource(path=str(COMMITTED)))
    assert [q.to_record() for q in loaded] == [q.to_record() for q in generate()]


def test_generation_is_deterministic_and_seeded():
    assert generate(0) == generate(0)
    assert [q.solution for q in generate(1)] != [q.solution for q in generate(0)]


def test_size_and_four_wordings_per_fact():
    qs = generate()
    facts = _by_fact(qs)
    assert len(qs) >= 480 and len(facts) >= 120
    assert len(qs) == 4 * len(facts)
    for fact_id, group in facts.items():
        assert len(group) == 4, fact_id
        assert len({q.question for q in group}) == 4, fact_id
        assert all(q.answers == group[0].answers for q in group), fact_id
        assert all(list(q.answers) == ["A", "B", "C", "D"] for q in group), fact_id
        assert len({q.solution for q in group}) == 1, fact_id


def test_options_distinct_and_short():
    for q in generate():
        assert len(set(q.answers.values())) == 4, q
        assert len(q.question.split()) <= 25, q.question
        assert all(len(a.split()) <= 8 for a in q.answers.values()), q


def test_letters_balanced():
    qs = generate()
    counts = Counter(q.solution for q in qs)
    for letter in "ABCD":
        assert abs(counts[letter] / len(qs) - 0.25) <= 0.02, counts
    fact_letters = Counter(group[0].solution for group in _by_fact(qs).values())
    assert max(fact_letters.values()) - min(fact_letters.values()) <= 1, fact_letters


def test_no_duplicate_question_text():
    texts = [normalize_question(q.question) for q in generate()]
    assert len(set(texts)) == len(texts)


def test_known_facts_are_correct():
    # Spot checks against the tables: the right option is the one the fact states.
    right = {q.question: q.answers[q.solution] for q in generate()}
    assert right["Which port does HTTPS use by default?"] == "443"
    assert right["Which port does SSH use by default?"] == "22"
    assert right["What is the block size of AES?"] == "128 bits"
    assert right["What is the digest size of SHA-256?"] == "256 bits"
    assert right["Which risk is A01 in the OWASP Top 10 2021?"] == "Broken Access Control"
    assert right["What does ISO/IEC 27001 primarily address?"] == "Information security management systems"


def test_held_out_wordings_have_fact_seen_in_training():
    qs = generate()
    fact_of = {q.question: q.fact_id for q in qs}
    train, eval_ = split_questions([q.to_question() for q in qs], 0.2, seed=0)
    seen = {fact_of[q.question] for q in train}
    covered = sum(fact_of[q.question] in seen for q in eval_)
    assert len(eval_) == round(0.2 * len(qs))
    assert covered / len(eval_) >= 0.95


def test_main_writes_file(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main([str(out), "--seed", "0"]) == 0
    assert out.read_bytes() == COMMITTED.read_bytes()
    assert "644 questions, 161 facts" in capsys.readouterr().out
