"""``tts-graph serve``: graphs served as OpenAI-compatible models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import GraphErrors, TTSGraphError
from .common import _fail, _open_cache, err


def serve(
    graphs: Annotated[list[Path], typer.Argument(help="graph files, or directories of *.yaml")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free port)")
                    ] = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        help="environment variable holding the API key clients must send as "
        "'Authorization: Bearer KEY'")] = None,
    max_concurrency: Annotated[int, typer.Option(
        min=1, help="graph runs at once; further requests wait")] = 8,
    max_body_mb: Annotated[float, typer.Option(
        # bounded: ``inf`` is a float Click accepts, and no byte count
        min=0.001, max=1_000_000, help="largest request body in MB (1 MB = 2**20 bytes); "
        "larger ones get 413")] = 4.0,
    cache: Annotated[Path | None, typer.Option(
        help="response cache (SQLite): seen samples are replayed, not billed")] = None,
    log_level: Annotated[str, typer.Option(help="critical | error | warning | info | debug")
                         ] = "info",
    share_limits: Annotated[int, typer.Option(
        min=1, help="this server is one of N calling the same models at once (replicas "
        "behind one balancer): it keeps to an N-th of each model's max_concurrency, rpm and "
        "tpm")] = 1,
) -> None:
    """Serve graphs as OpenAI-compatible models (model id = graph name) under /v1."""
    import logging
    import os

    from ..collector import freeze_setup
    from ..limits import set_share
    from ..server import bind_socket, create_app
    from ..server import serve as run_server

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        raise _fail(["--log-level: must be critical, error, warning, info or debug"])
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise _fail([f"--api-key-env: environment variable {api_key_env} is not set "
                         "(or empty)"])
    set_share(share_limits)  # before any model is bound
    try:
        web = create_app(graphs, api_key=api_key, max_concurrency=max_concurrency,
                         cache=_open_cache(cache),
                         max_body_bytes=max(1, int(max_body_mb * 1024 * 1024)))
    except GraphErrors as exc:
        raise _fail(exc.lines()) from None
    except TTSGraphError as exc:
        raise _fail([str(exc)]) from None
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise _fail([f"cannot listen on {host}:{port}: {exc.strerror or exc}"], code=1
                    ) from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    names = ", ".join(web.state.tts.graphs)
    err.print(f"serving {len(web.state.tts.graphs)} graph(s) at http://{shown}:{bound_port}/v1"
              f" (models: {names}; auth: {'on' if api_key else 'off'}; "
              f"max concurrency {max_concurrency})", markup=False, highlight=False,
              soft_wrap=True)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    server_log = logging.getLogger("tts_graph.server")
    server_log.addHandler(handler)
    server_log.setLevel(log_level.upper())
    freeze_setup()  # many requests, each many calls: what set-up loaded kept aside
    run_server(web, sock, log_level=log_level)
