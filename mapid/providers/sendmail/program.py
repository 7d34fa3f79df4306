"""Running the sendmail program: without a shell, without blocking the loop, within a time.

`run_program` starts it with the loop's own subprocess support (no thread), writes the
message to its standard input and waits for it to exit. Its output (stdout and stderr
together) is kept up to `OUTPUT_LIMIT` bytes; the rest is read and dropped, so a program
that prints without end costs no memory.

The wait is for the program's exit, not for the end of its output: a sendmail that
delivers in the background (Exim's -odb) leaves a child holding the pipe, and waiting for
that child would hold the spooler for the whole delivery. After the exit, the output that
is already on its way gets `OUTPUT_GRACE_S` to arrive.

A program that outlives its time, or whose send is cancelled (the spooler's own time-out,
a logoff), is killed with its whole process group: it runs in a session of its own
(`start_new_session`), so what it started goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from subprocess import PIPE, STDOUT

from mapid.providers.sendmail.exits import OUTPUT_LIMIT

__all__ = ["OUTPUT_GRACE_S", "Finished", "run_program"]

OUTPUT_GRACE_S = 1.0
"""How long the output may take to arrive once the program has exited."""


@dataclass(frozen=True)
class Finished:
    """How the program ended."""

    status: int
    """Its exit status; negative: the number of the signal that killed it."""
    output: bytes
    """The first OUTPUT_LIMIT bytes it printed (stdout and stderr together)."""
    truncated: bool
    """Whether it printed more than that."""


class _Child(asyncio.SubprocessProtocol):
    """The loop's view of the running program: its output, the end of it, its exit."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()
        self.output = bytearray()
        self.truncated = False

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        room = max(0, OUTPUT_LIMIT - len(self.output))
        self.output += data[:room]
        self.truncated = self.truncated or len(data) > room

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        # fd 0 is lost with an error when the program exits without reading all of its
        # input (a usage error): its exit status says why, so that is no failure here.
        if fd == 1 and not self.output_closed.done():
            self.output_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _kill_group(transport: asyncio.SubprocessTransport) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(transport.get_pid(), signal.SIGKILL)


async def run_program(argv: Sequence[str], stdin: bytes, timeout: float) -> Finished:
    """Run `argv` (no shell) with `stdin` as its input and return how it ended.

    Raises OSError when the program cannot start (FileNotFoundError, PermissionError), and
    TimeoutError when it has not exited after `timeout` seconds: it is killed then, as it
    is when the caller is cancelled."""
    loop = asyncio.get_running_loop()
    transport, child = await loop.subprocess_exec(
        _Child, *argv, stdin=PIPE, stdout=PIPE, stderr=STDOUT, start_new_session=True
    )
    try:
        pipe = transport.get_pipe_transport(0)
        assert isinstance(pipe, asyncio.WriteTransport)
        pipe.write(stdin)  # the loop writes it as the program reads
        pipe.close()
        async with asyncio.timeout(timeout):
            await child.exited
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OUTPUT_GRACE_S):
                await child.output_closed
    except BaseException:  # a time-out, or the caller gave up: nothing of it may stay
        _kill_group(transport)
        raise
    finally:
        transport.close()
    status = transport.get_returncode()
    assert status is not None
    return Finished(status, bytes(child.output), child.truncated)
