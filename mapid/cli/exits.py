"""mapictl's exit codes and the one place that turns a failure into a message and a code.

Scripts depend on the codes, so they are stable and documented in `mapictl --help`. Telling
"no daemon" (4) apart from "a daemon that did not answer" (5) is the point of having them
(docs/design.md A.2).
"""

from __future__ import annotations

import enum
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
import zmq

from mapid.cli.output import emit_json
from mapid.errors import DaemonUnreachable, ErrorCode, MapidError, MapiError, RequestTimedOut


def usage_when_bare(ctx: typer.Context) -> None:
    """A command group called with no command prints its help and exits 2, a usage error.

    Groups say so themselves rather than by `no_args_is_help`, whose exit code changed from
    0 to 2 between click 8.1 and 8.2 (and typer's copy of it): a script must see the same code
    whatever typer and click the machine has.
    """
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        typer.echo(ctx.get_help(), err=True)
        raise typer.Exit(ExitCode.USAGE)


class ExitCode(enum.IntEnum):
    OK = 0
    MAPI_ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    UNREACHABLE = 4
    TIMED_OUT = 5


EXIT_CODES_HELP = """Exit codes:

\b
  0  ok
  1  MAPI error (its code and message go to stderr)
  2  usage error
  3  not found: MAPI_E_NOT_FOUND, MAPI_E_UNKNOWN_ENTRYID, or a logon
     whose profile does not exist
  4  daemon unreachable (not running, a wrong --runtime-dir or
     --endpoint, or a remote daemon that refused this CURVE key)
  5  timed out: no answer within --timeout, or MAPI_E_TIMEOUT

With --json an error also goes to stdout as one JSON object {"error": ERROR},
ERROR being the wire's error map (code, hresult, message, retryable, details)."""

NOT_FOUND_CODES = frozenset({ErrorCode.MAPI_E_NOT_FOUND, ErrorCode.MAPI_E_UNKNOWN_ENTRYID})


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code for a failure."""
    if isinstance(exc, MapiError):
        if exc.code in NOT_FOUND_CODES:
            return ExitCode.NOT_FOUND
        if exc.code is ErrorCode.MAPI_E_LOGON_FAILED and exc.details.get("reason") == "not_found":
            return ExitCode.NOT_FOUND
        if exc.code is ErrorCode.MAPI_E_TIMEOUT:
            return ExitCode.TIMED_OUT
        return ExitCode.MAPI_ERROR
    if isinstance(exc, DaemonUnreachable | zmq.ZMQError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, RequestTimedOut):
        return ExitCode.TIMED_OUT
    return ExitCode.MAPI_ERROR


def error_object(exc: BaseException) -> dict[str, Any]:
    """The ERROR map for `--json`: the wire's for a MAPI error, the same shape otherwise."""
    if isinstance(exc, MapiError):
        return exc.to_wire()
    code = {
        ExitCode.UNREACHABLE: "DAEMON_UNREACHABLE",
        ExitCode.TIMED_OUT: "TIMED_OUT",
    }.get(exit_code(exc), "CLIENT_ERROR")
    details: dict[str, Any] = {}
    if isinstance(exc, DaemonUnreachable) and exc.endpoint:
        details["endpoint"] = exc.endpoint
    if isinstance(exc, RequestTimedOut):
        if exc.op:
            details["op"] = exc.op
        if exc.timeout is not None:
            details["timeout"] = exc.timeout
    return {
        "code": code,
        "message": str(exc),
        "retryable": isinstance(exc, RequestTimedOut),
        "details": details,
    }


def describe(exc: BaseException) -> str:
    """The one-line message for stderr."""
    if isinstance(exc, MapiError):
        return f"{exc.code.name}: {exc.message}"
    if isinstance(exc, DaemonUnreachable):
        return f"daemon unreachable: {exc}"
    if isinstance(exc, RequestTimedOut):
        return f"timed out: {exc}"
    if isinstance(exc, zmq.ZMQError):
        return f"daemon unreachable: {exc}"
    return str(exc)


def report(exc: BaseException, json_output: bool) -> ExitCode:
    """Print the failure (stderr always, stdout too with --json) and return its exit code."""
    code = exit_code(exc)
    print(f"mapictl: {describe(exc)}", file=sys.stderr, flush=True)
    if json_output:
        emit_json({"error": error_object(exc)})
    return code


@contextmanager
def handled(json_output: bool) -> Iterator[None]:
    """Turn the library's expected failures into a message and an exit code, never a
    traceback; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (MapidError, zmq.ZMQError) as exc:
        raise typer.Exit(int(report(exc, json_output))) from None


@contextmanager
def until_interrupted() -> Iterator[None]:
    """For the follow commands (`events`, `status --watch`): Ctrl-C or SIGTERM is the normal
    way to stop them, so both end the command quietly with exit code 0."""
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
