"""The garbage collector set up for a process that makes many calls (``eval``, ``search``,
``serve``): a command's choice for its own process, never made by the library for its
caller."""

from __future__ import annotations

import gc

#: allocations between young collections in such a process (CPython's default: 700)
YOUNG_THRESHOLD = 10_000


def freeze_setup() -> None:
    """Set the garbage collector up for many calls. Every object alive after set-up
    (modules, graphs, scorer, tasks) is moved out of its reach (``gc.freeze``): a full
    collection otherwise walks them all again every few thousand calls, and with a large
    module graph in the process (litellm, sympy for math-verify, a web server) each such walk
    costs 0.1–0.2 s of the one core that runs the client. Young collections run every
    ``YOUNG_THRESHOLD`` allocations, not 700: each walks every object of the calls in flight
    (most were made since the last one), so at a high concurrency their cost goes with how
    often they run, not with what they free (BENCHMARKS.md, issue 11). What the calls
    allocate is still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
