from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _fresh_limits() -> None:
    """A model's limits are shared by the whole process (``tts_graph.limits.shared``): each
    test starts without the windows and permits an earlier test's graphs left, and as the
    only process calling its models (``--share-limits`` run in-process sets a share)."""
    from tts_graph.limits import forget_shared, set_share

    forget_shared()
    set_share(1)


# ---------------------------------------------------------------- real servers on loopback
# (started on first use, once per test session; see tests/servers.py)


@pytest.fixture(scope="session")
def llama_server():  # type: ignore[no-untyped-def]
    """llama.cpp's OpenAI-compatible server with SmolLM2, no API key."""
    from servers import llama_server as start

    with start() as server:
        yield server


@pytest.fixture(scope="session")
def llama_server_keyed():  # type: ignore[no-untyped-def]
    """The same server, but every request needs ``Authorization: Bearer <server.api_key>``."""
    import secrets

    from servers import llama_server as start

    with start(api_key="sk-tts-" + secrets.token_hex(16)) as server:
        yield server
