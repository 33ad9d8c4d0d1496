"""Prompt tokens of a budgeted query's calls, as the server will count them, estimated from
what the query has drawn so far.

A backend's ``count_tokens`` errs high (the default: about 3 characters a token), and a
budget that reserves by it leaves much of itself unspent. Two things are known better once
replies come back with the server's usage:

- a reply quoted in a later prompt (a judge's candidates, a fuser's drafts) costs there what
  the server reported for it as a completion plus one token (a real tokenizer re-splits its
  edges); only where the server has counted every prompt exactly as the counter does (the
  simulated backend, whose completion tokens are not its text's) the counter's figure for its
  text when that is less. An unseen reply: its ``max_tokens``, which the planner's synthetic
  replies say in their text;
- the rest of a prompt (instructions, question, labels) costs the counter's figure times the
  ratio of reported to estimated tokens seen on this model's earlier prompts in the query
  (those that quote no reply), taken conservatively: the largest ratio seen, with a margin
  when it is below 1; on a prompt that quotes replies never below 1, plus ``QUOTE_LABEL``
  tokens a quote (the ratio was measured where chat framing, which the counter over-counts,
  weighs most; labels like "[Solution 3]" a real tokenizer counts denser than the counter);
- a prompt already sent costs exactly what the server reported for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from .roles.base import clip
from .types import Message

Counter = Callable[[str, tuple[Message, ...]], int]  # (model, messages) -> prompt tokens

#: a ratio below 1 (the counter errs high) is used with this margin, for prompts whose text
#: differs from those it was measured on; never above 1 (the counter's own figure)
CALIBRATION_MARGIN = 0.1

#: tokens a quoting prompt is charged per quote beyond the counter's figure for its text: the
#: label around it, which a real tokenizer counts denser than the counter does
QUOTE_LABEL = 2

#: the planner's worst-case reply: its index, then ``~<max_tokens>`` (see ``synthetic_text``)
_SYNTHETIC = re.compile(r"(?<!\S)w\d+_\d+~(\d+)(?!\S)")


def synthetic_text(tag: int, index: int, max_tokens: int) -> str:
    """A worst-case reply of ``max_tokens`` tokens as the planner puts it in later prompts:
    short (no role clips it), distinct per step ``tag`` and sample ``index`` (a judge shows
    each distinct text once), and counted as exactly ``max_tokens`` wherever it is quoted."""
    return f"w{tag}_{index}~{max_tokens}"


class PromptEstimate:
    """One query's prompt-token estimates (see the module's docstring)."""

    def __init__(self, count: Counter) -> None:
        self.count = count
        #: a drawn reply's text (stripped) → the completion tokens the server reported for it
        self.replies: dict[str, int] = {}
        #: how each reply is found where a prompt quotes it: a plain prefix to look for
        #: first (cheap), then the pattern of its quoted forms (whole, clipped), by text
        self._found: dict[str, tuple[str, re.Pattern[str]]] = {}
        self._patterns: list[tuple[str, re.Pattern[str], str]] = []
        self._quoted: dict[tuple[str, str], int] = {}
        #: (model, messages) → prompt tokens the server reported for exactly that prompt
        self.exact: dict[tuple[str, tuple[Message, ...]], int] = {}
        #: model → the largest reported / counted ratio seen on a prompt quoting no reply
        self.ratio: dict[str, float] = {}
        #: model → whether the server has counted every prompt seen exactly as the counter
        #: does (the simulated backend: its completion tokens are not its text's)
        self.counter_exact: dict[str, bool] = {}
        self._memo: dict[tuple[str, tuple[Message, ...]], int] = {}
        self._quotes = 0  # how many quotes the last ``split`` took out
        #: bumped whenever an estimate may have changed (dry runs are cached by it)
        self.version = 0

    def quoted_cost(self, model: str, text: str) -> int:
        """What a drawn reply costs where a prompt to ``model`` quotes it: its completion
        tokens + 1, or, where the counter is the server's count, the counter's figure for its
        text when less (a simulated model's completion tokens are not its text's)."""
        key = (model, text)
        cost = self._quoted.get(key)
        if cost is None:
            # a real tokenizer counts a reply's text at its own density (digits, symbols: a
            # token for less than 3 characters), so the counter can fall short of it; only
            # where the counter has been the server's own count is its figure the bound
            edge = self.replies[text] + 1  # the reply re-tokenized, one split at its edges
            if self.counter_exact.get(model, False):
                empty = self.count(model, (Message("user", ""),))
                by_counter = self.count(model, (Message("user", text),)) - empty + 1
                edge = min(edge, by_counter)
            self._quoted[key] = cost = edge
        return cost

    def quote_size(self, model: str, text: str) -> int:
        """What a drawn reply costs quoted in a prompt to ``model`` (``quoted_cost``); 1 for
        one with no text (a label alone: those are charged apart)."""
        key = text.strip()
        return self.quoted_cost(model, key) if key in self.replies else 1

    def split(self, model: str, messages: tuple[Message, ...]
              ) -> tuple[tuple[Message, ...], int]:
        """The messages without the replies they quote, and what those replies cost."""
        quoted = 0
        self._quotes = 0
        rest = []
        for m in messages:
            content = m.content
            if "~" in content:
                def synth(match: re.Match[str]) -> str:
                    nonlocal quoted
                    # as a drawn reply of max_tokens would cost (its edge re-split: + 1)
                    quoted += int(match.group(1)) + 1
                    self._quotes += 1
                    return ""
                content = _SYNTHETIC.sub(synth, content)
            for prefix, pattern, text in self._patterns:
                if prefix not in content:
                    continue
                content, k = pattern.subn("", content)
                if k:
                    quoted += k * self.quoted_cost(model, text)
                    self._quotes += k
            rest.append(Message(m.role, content))
        return tuple(rest), quoted

    def __call__(self, model: str, messages: tuple[Message, ...]) -> int:
        key = (model, messages)
        if key in self.exact:
            return self.exact[key]
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        rest, quoted = self.split(model, messages)
        raw = self.count(model, rest)
        r = self.ratio.get(model)
        if quoted:
            # the ratio was measured on reply-free prompts, where the chat framing the counter
            # over-counts weighs most; what a quoting prompt adds, labels like "[Solution 3]",
            # a real tokenizer counts denser than the counter (8 tokens, the counter's 5)
            raw = math.ceil(raw * max(1.0, r or 1.0))
            if not self.counter_exact.get(model, False):
                raw += QUOTE_LABEL * self._quotes
        elif r is not None:
            r = r if r >= 1 else min(1.0, r * (1 + CALIBRATION_MARGIN))
            raw = math.ceil(raw * r)
        self._memo[key] = est = raw + quoted
        return est

    def reply(self, text: str, completion_tokens: int) -> None:
        """A drawn reply, and the completion tokens the server reported for it."""
        key = text.strip()
        if not key or completion_tokens <= 0 or self.replies.get(key, -1) >= completion_tokens:
            return
        self.replies[key] = completion_tokens
        if key not in self._found:
            forms = sorted({clip(key), clip(key, 800), key}, key=len, reverse=True)
            alts = "|".join(re.escape(f) for f in forms)
            self._found[key] = (forms[-1][:797], re.compile(rf"(?<!\S)(?:{alts})(?!\S)"))
        # longest first, so a reply that is part of another is found in its own place only
        self._patterns = [(*self._found[t], t)
                          for t in sorted(self.replies, key=len, reverse=True)]
        self._quoted = {k: v for k, v in self._quoted.items() if k[1] != key}
        self._memo.clear()
        self.version += 1

    def observed(self, model: str, messages: tuple[Message, ...], prompt_tokens: int) -> None:
        """The server reported ``prompt_tokens`` for one sample of this prompt."""
        if prompt_tokens <= 0:
            return
        key = (model, messages)
        if self.exact.get(key, 0) < prompt_tokens:
            self.exact[key] = prompt_tokens
            self.version += 1
        rest, quoted = self.split(model, messages)
        raw = self.count(model, rest)
        # only prompts that quote no reply calibrate: what the server makes of a quoted
        # reply need not be its completion tokens (a simulated model's are not)
        if raw > 0 and quoted == 0:
            exact = self.counter_exact.get(model, True) and prompt_tokens == raw
            if self.counter_exact.get(model) != exact:
                self.counter_exact[model] = exact
                self._quoted = {k: v for k, v in self._quoted.items() if k[0] != model}
                self._memo.clear()
                self.version += 1
            r = prompt_tokens / raw
            if r > self.ratio.get(model, -1.0):
                self.ratio[model] = r
                self._memo.clear()
                self.version += 1
