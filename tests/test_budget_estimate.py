"""Prompt-token estimates of a budgeted query, learnt from the server's usage."""

from __future__ import annotations

import math

from tts_graph.backends.base import Backend
from tts_graph.prompt_estimate import QUOTE_LABEL, PromptEstimate, synthetic_text
from tts_graph.types import Message


def default_count(_model: str, messages: tuple[Message, ...]) -> int:
    return Backend.count_tokens(None, messages)  # type: ignore[arg-type]


def words(messages: tuple[Message, ...]) -> int:
    """What a word-count server (the loopback fault server's rule) reports."""
    return sum(len(m.content.split()) + 3 for m in messages) + 3


def msgs(user: str) -> tuple[Message, ...]:
    return (Message("system", "You are a careful solver of arithmetic problems."),
            Message("user", user))


def test_a_quoted_worst_case_reply_counts_as_a_drawn_reply_of_max_tokens() -> None:
    est = PromptEstimate(default_count)
    bare = est("m", msgs("Problem: 2+2?\n\n[Solution 1]\n\n\n[Solution 2]\n"))
    quoted = msgs(f"Problem: 2+2?\n\n[Solution 1]\n{synthetic_text(1, 0, 40)}\n\n"
                  f"[Solution 2]\n{synthetic_text(1, 1, 40)}")
    # each quote: max_tokens + 1, as a drawn reply that used all of them costs (its edges
    # re-split), and its label
    assert est("m", quoted) == bare + 2 * (40 + 1) + 2 * QUOTE_LABEL
    # never less than the same replies once drawn: a plan made before they came back holds
    # enough for the prompt that quotes them (it held 1 token a quote too little)
    drawn = [f"Answer: {i} " + " ".join(["w"] * 38) for i in range(2)]
    for text in drawn:
        est.reply(text, 40)
    real = msgs(f"Problem: 2+2?\n\n[Solution 1]\n{drawn[0]}\n\n[Solution 2]\n{drawn[1]}")
    assert est("m", real) <= est("m", quoted)


def test_a_drawn_reply_counts_as_its_reported_completion_tokens() -> None:
    est = PromptEstimate(default_count)
    reply = "Working 1a2b3c4d out, the result is 7.\nAnswer: 7"  # 9 words, 16 by the counter
    judge = msgs(f"Problem: 2+2?\n\n[Solution 1]\n{reply}\n\n[Solution 2]\n{reply}x")
    before = est("m", judge)
    est.reply(reply, 9)
    after = est("m", judge)
    # the first quote is the reply (9 tokens, +1 for a split at its edges); the second, run
    # into "x", is other text
    rest = msgs("Problem: 2+2?\n\n[Solution 1]\n\n\n[Solution 2]\n" + reply + "x")
    assert after == default_count("m", rest) + 10 + QUOTE_LABEL < before
    # a reply only part of a word is not taken for a quote
    est.reply("7", 1)
    assert est("m", judge) == after


def test_calibrated_from_usage_never_below_what_the_server_reported() -> None:
    est = PromptEstimate(default_count)
    solve = msgs("Problem: What is 3 times 5, plus 10? Give the answer last.")
    first = est("m", solve)
    assert first == default_count("m", solve)
    est.observed("m", solve, words(solve))
    assert est("m", solve) == words(solve)  # exact for a prompt already sent
    other = msgs("Problem: What is 7 times 12, plus 4? Show the working, then the answer.")
    guess = est("m", other)
    # the counter errs high (about 1.7× here): the calibrated figure is lower, yet with its
    # margin still above what the server will report
    assert words(other) <= guess < default_count("m", other)
    # another model keeps the counter's figure
    assert est("n", other) == default_count("n", other)


def test_a_ratio_above_one_is_used_as_is() -> None:
    est = PromptEstimate(lambda _m, ms: sum(len(m.content.split()) for m in ms))
    p = msgs("one two three four")
    est.observed("m", p, 2 * est("m", p))
    q = msgs("five six seven eight nine ten")
    assert est("m", q) == 2 * sum(len(m.content.split()) for m in q)


def test_a_reply_whose_completion_tokens_exceed_its_text_counts_as_its_text() -> None:
    """A simulated model reports hundreds of completion tokens for a short text; quoted, the
    text costs what the counter makes of it (+1 for the split at its edge), not those."""
    est = PromptEstimate(default_count)
    solve = msgs("Problem: 2+2?")
    est.observed("m", solve, default_count("m", solve))  # the server counts as the counter
    reply = "Simulated solver output. Answer: 7"
    prompt = msgs(f"Problem: 2+2?\n\n[Solution 1]\n{reply}\n\n[Solution 2]\nAnswer: 8")
    est.reply(reply, 300)
    empty = default_count("m", (Message("user", ""),))
    by_text = default_count("m", (Message("user", reply),)) - empty + 1
    rest = msgs("Problem: 2+2?\n\n[Solution 1]\n\n\n[Solution 2]\nAnswer: 8")
    assert est("m", prompt) == default_count("m", rest) + by_text


def test_a_dense_reply_counts_as_its_completion_tokens_where_the_counter_falls_short() -> None:
    """A real tokenizer spends a token on less than 3 characters of digits and symbols: the
    counter's figure for such a reply falls short of what the server counts where it is
    quoted (llama.cpp's server with SmolLM2: 24 tokens for 51 characters, the counter's 18),
    so once the server has counted a prompt otherwise than the counter, a quoted reply costs
    its completion tokens and one for a split at its edge."""
    est = PromptEstimate(default_count)
    reply = "To find half of 90, we'll divide 90 by 2. \n\n90 / 2"
    empty = default_count("m", (Message("user", ""),))
    by_text = default_count("m", (Message("user", reply),)) - empty + 1
    assert by_text < 24
    solve = msgs("Problem: What is half of 90?")
    est.observed("m", solve, 51)
    est.reply(reply, 24)
    prompt = msgs(f"Problem: What is half of 90?\n\n[Solution 1]\n{reply}\n\nBest?")
    rest = msgs("Problem: What is half of 90?\n\n[Solution 1]\n\n\nBest?")
    assert est.quoted_cost("m", reply) == 25
    # the rest of a quoting prompt: the counter's figure scaled by the ratio seen (never
    # below 1: it was measured on prompts mostly of chat framing), and each quote's label
    assert est.split("m", prompt)[1] == 25
    r = max(1.0, 51 / default_count("m", solve))
    assert est("m", prompt) == math.ceil(default_count("m", rest) * r) + 25 + QUOTE_LABEL
    low = PromptEstimate(default_count)
    low.observed("m", solve, 20)  # a ratio below 1 is not used on a quoting prompt
    low.reply(reply, 24)
    assert low("m", prompt) == default_count("m", rest) + 25 + QUOTE_LABEL
    # a server exact on one prompt and not on the next is not the counter's
    est.observed("n", solve, default_count("n", solve))
    assert est.quoted_cost("n", reply) == by_text
    assert est("n", prompt) == default_count("n", rest) + by_text
    other = msgs("Problem: What is a third of 90?")
    est.observed("n", other, default_count("n", other) - 1)
    assert est.quoted_cost("n", reply) == 25
