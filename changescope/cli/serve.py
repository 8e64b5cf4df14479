"""``changescope serve``: the local web app over finished run folders."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from changescope.errors import ParameterError

__all__ = ["register", "serve"]


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def serve(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (the --out of `changescope run`), one per AOI.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback only unless you mean otherwise.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Start the analyst's workbench: map, ranked changes, find similar, labels (offline; Ctrl-C stops it)."""
    import uvicorn

    from changescope.serve.app import check_host, create_app

    console = Console(stderr=True)
    for p in run_dirs:
        if not p.is_dir():
            raise ParameterError(f"RUN_DIR {str(p)!r} is not a folder; pass the --out of `changescope run`")
    warning = check_host(host)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if not _port_free(host, port):
        raise ParameterError(f"--port {port} is in use on {host}; pick another with --port")
    app = create_app(run_dirs, allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]", host])
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"changescope workbench on http://{shown}:{port}/ ({len(run_dirs)} run(s)); Ctrl-C stops it", highlight=False
    )
    uvicorn.run(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command("serve")(serve)
