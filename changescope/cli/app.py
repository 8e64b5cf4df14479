"""The ``changescope`` command: a Typer app assembled from one module per command group.

User errors (any :class:`~changescope.errors.ChangescopeError`) exit with code 1 and a one-line message; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from changescope import __version__
from changescope.cli import demo, embed, evaluate, inspect, multimodal, report, run, search, serve, synth, train
from changescope.errors import ChangescopeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="changescope",
    help="Find the changes that matter in satellite image time series.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"changescope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Find the changes that matter in satellite image time series."""
    _state["debug"] = debug


for _module in (synth, inspect, embed, run, demo, search, evaluate, report, train, multimodal, serve):
    _module.register(app)


def _usage_error(err: Exception, code: int) -> None:
    """A command-line mistake as one line, with where to look (click prints a usage block instead)."""
    fmt = getattr(err, "format_message", None)
    message = str(fmt() if callable(fmt) else err).replace("Value error, ", "").strip().rstrip(".")
    ctx = getattr(err, "ctx", None)
    where = getattr(ctx, "command_path", None) or "changescope"
    err_console.print(f"[bold red]error:[/] {message}; see {where} --help", highlight=False, soft_wrap=True)
    sys.exit(code)


def _interrupted() -> None:
    err_console.print("interrupted; rerun the same command to resume", highlight=False)
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning changescope errors into exit code 1 with a one-line message."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        returned = app(args=args, standalone_mode=False, prog_name="changescope")
        if returned == 130:  # typer returns Ctrl-C as 130 outside standalone mode
            _interrupted()
        if isinstance(returned, int) and returned:
            sys.exit(returned)
    except ChangescopeError as err:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
    except OSError as err:  # a path the system refuses (not a folder, read-only, disk full)
        if _state["debug"]:
            raise
        where = f" {err.filename!s}" if err.filename else ""
        err_console.print(
            f"[bold red]error:[/] cannot use{where}: {err.strerror or err}; check the path, its permissions and "
            "the free space",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except typer.Exit as ex:
        if ex.exit_code == 130:  # typer turns Ctrl-C into Exit(130) outside standalone mode
            _interrupted()
        sys.exit(ex.exit_code)
    except Exception as err:  # click usage errors come through here in non-standalone mode
        # Typer >= 0.29 raises the exceptions of its own vendored click, so match click's exception protocol
        # (``show()`` and ``exit_code``) rather than one class.
        show, code = getattr(err, "show", None), getattr(err, "exit_code", None)
        if callable(show) and isinstance(code, int):
            _usage_error(err, code)
        raise
