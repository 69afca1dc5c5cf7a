"""What every real model's tokenizer must do for the scorer: each answer letter one token after ``ANSWER:``."""

from __future__ import annotations

from pathlib import Path

from launch.questions.data import load_questions
from launch.spec.config import DataSource


def check_letters_are_one_token(model_dir: Path, questions: Path, max_len: int) -> None:
    """Each of `` A``..`` D`` is one token, and prompt + 'ANSWER: X' re-tokenised (what lm-eval and a
    generated reply see) gives exactly our ids, on every 10th question of ``questions``; asserts."""
    from launch.questions import prompting
    from train import batches

    tok = batches.load_tokenizer(str(model_dir))
    codec = prompting.AnswerCodec(tok)
    assert codec.single_token and len({v[0] for v in codec.letter_ids.values()}) == 4
    assert tok.convert_ids_to_tokens([v[0] for v in codec.letter_ids.values()]) == ["ĠA", "ĠB", "ĠC", "ĠD"]
    for q in load_questions(DataSource(path=str(questions)))[::10]:
        ctx = prompting.scoring_context(tok, codec, q, max_len)
        text = tok.decode(ctx, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert "<|im_start|>assistant\n" in text and text.endswith("ANSWER:")
        for k in "ABCD":
            assert tok(text + f" {k}", add_special_tokens=False)["input_ids"] == ctx + codec.letter_ids[k]
