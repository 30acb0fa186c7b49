"""What every command shares: settings, one JSON object on stdout with --json, errors on stderr."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console

from shared.settings import Settings, SettingsError, load_settings

stderr = Console(stderr=True)

# A store or service that is down for now (sysexits' EX_TEMPFAIL): nothing was written; try again.
EXIT_UNAVAILABLE = 75


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        fail(str(error), code=2)


def emit_json(payload: Any) -> None:
    sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def unreachable(service: str, url: str, error: Exception, *, as_json: bool = False) -> NoReturn:
    """A service did not answer. Refused connections exit 75 (nothing reached it, run again);
    a connection lost mid-request exits 1, since the service may have acted on it."""
    import httpx

    code = EXIT_UNAVAILABLE if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)) else 1
    fail(
        f"cannot reach {service} at {url} ({type(error).__name__}); is the stack running (`relief up`)?",
        code=code,
        as_json=as_json,
    )


def fail(message: str, *, code: int = 1, as_json: bool = False, **extra: Any) -> NoReturn:
    if as_json:
        emit_json({"error": message, **extra})
    else:
        stderr.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
