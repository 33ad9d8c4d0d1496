"""Task files the eval tests write: ``n`` sums with their gold answers."""

from __future__ import annotations

import json
from pathlib import Path


def write_sums(path: Path, n: int) -> Path:
    """``path`` (JSONL): questions ``q0``… "What is i + i?", answer ``2i``."""
    path.write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)})
        + "\n" for i in range(n)))
    return path
