"""Errors users see. Each renders as one line: ``FILE:LINE: path.to.field: message``."""

from __future__ import annotations


class TTSGraphError(Exception):
    """Base of every error tts-graph raises on purpose."""


class GraphError(TTSGraphError):
    """A graph file (or dict) is malformed or inconsistent.

    ``path`` is the dotted location in the document (``nodes.solve.samples``), ``line`` the
    1-based line in ``source`` where it is, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.source = source
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or "<graph>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def lines(self) -> list[str]:
        """One line per problem (``GraphErrors`` has several)."""
        return [str(self)]


class GraphErrors(GraphError):
    """Several problems found at once; ``str()`` is the first, ``errors`` has them all."""

    def __init__(self, errors: list[GraphError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line or 0, e.path))
        first = self.errors[0]
        super().__init__(first.message, path=first.path, source=first.source, line=first.line)

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


class BackendError(TTSGraphError):
    """A backend could not produce completions (infrastructure, not a wrong answer)."""


class TransientBackendError(BackendError):
    """A failure worth retrying: rate limit (429), server error (5xx), timeout, dropped
    connection, malformed response. ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, *, kind: str = "server",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


class BudgetExhausted(TTSGraphError):
    """A call was not sent because the query's budget could not cover it."""


class ArgumentError(TTSGraphError, TypeError, ValueError):
    """A call of the Python API got an argument it cannot use: a question that is not a
    ``str``, ``concurrency`` below 1, YAML text where a path is expected... Also a
    ``TypeError`` and a ``ValueError``: code that caught what was raised before still does."""


class ClosedError(TTSGraphError, RuntimeError):
    """A ``Graph`` was used after ``close()`` / ``aclose()``."""
