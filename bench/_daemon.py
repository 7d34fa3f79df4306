"""Start and stop a real mapid daemon (`python -m mapid run`) on private temp directories.

Shared by the benchmarks; independent of tests/. Each daemon gets its own config, state, data
and runtime directories through the MAPID_* variables, under one short /tmp directory (Unix
socket paths are limited to 107 bytes). The profile `alpha` is a vCard folder with two cards
(with identity) plus a Maildir, as the test suite's standard profile.

The daemon runs in its own session (a Ctrl-C in the terminal reaches the benchmark, which
then stops the daemon itself) and gets SIGTERM if the benchmark process dies
(PR_SET_PDEATHSIG), so no daemon outlives its benchmark.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from mapid.client import Client
from mapid.errors import MapidError
from mapid.paths import read_connection_file

VCARD_ADA = """BEGIN:VCARD
VERSION:3.0
UID:ada-1
FN:Ada Lovelace
N:Lovelace;Ada;;;
EMAIL;TYPE=INTERNET:ada@example.org
END:VCARD
"""

VCARD_GRACE = """BEGIN:VCARD
VERSION:4.0
UID:grace-1
FN:Grace Hopper
EMAIL:grace@example.org
END:VCARD
"""

PROFILE = "alpha"

_GC_PROBE = """\
# Written by bench/_daemon.py: log the daemon's garbage collections (gc.callbacks).
import gc, os, time
_log = open(os.environ["MAPID_BENCH_GC_LOG"], "a", buffering=1)
_start = [0.0]
def _probe(phase, info):
    if phase == "start":
        _start[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _start[0]) * 1e3
    if info["generation"] == 2 or ms >= 1.0:
        _log.write(f"{time.time():.3f} {info['generation']} {ms:.2f} {info['collected']}\\n")
gc.callbacks.append(_probe)
"""


def standard_profile(root: Path, *, identity: bool = True, extra_cards: int = 0) -> str:
    """A profile with a vCard address book (two cards, identity) and a Maildir store.

    `extra_cards` adds that many more one-card .vcf files, for a realistic address book.
    """
    contacts = root / "contacts"
    contacts.mkdir(parents=True, exist_ok=True)
    (contacts / "ada.vcf").write_text(VCARD_ADA)
    (contacts / "grace.vcf").write_text(VCARD_GRACE)
    for i in range(extra_cards):
        (contacts / f"person-{i}.vcf").write_text(
            "BEGIN:VCARD\nVERSION:3.0\n"
            f"UID:person-{i}\nFN:Person {i}\nN:Person;{i};;;\n"
            f"EMAIL;TYPE=INTERNET:person{i}@example.org\nEND:VCARD\n"
        )
    ident = 'identity = { display_name = "Ada Lovelace", email = "ada@example.org" }\n'
    return (
        "autologon = false\n"
        "[services.contacts]\n"
        'service = "vcard"\n'
        f'path = "{contacts}"\n' + (ident if identity else "") + "\n[services.mail]\n"
        'service = "maildir"\n'
        f'path = "{root / "Mail"}"\n'
        "primary_store = true\n"
    )


def _pdeathsig() -> None:
    """In the child before exec: get SIGTERM when the benchmark process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


class BenchDaemon:
    """One daemon subprocess on private temp directories; use as a context manager."""

    def __init__(
        self,
        *,
        lease_s: float | None = 0,
        log_level: str | None = None,
        extra_config: str = "",
        profile_cmd: Sequence[str] | None = None,
        gc_log: bool = False,
        extra_cards: int = 0,
        keep: bool = False,
        parent: str | os.PathLike[str] = "/tmp",
    ) -> None:
        """`parent`: where the temp dir goes (short, for the sockets' path limit)."""
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="mapid-bench-", dir=parent))
        self.runtime = self.base / "run"
        self.config_dir = self.base / "config"
        (self.config_dir / "profiles").mkdir(parents=True)
        lines = [f'default_profile = "{PROFILE}"']
        if lease_s is not None:
            lines.append(f"lease_s = {lease_s}")
        if log_level is not None:
            lines.append(f'log_level = "{log_level}"')
        if extra_config:
            lines.append(extra_config)
        (self.config_dir / "mapid.toml").write_text("\n".join(lines) + "\n")
        profile = standard_profile(self.base / PROFILE, extra_cards=extra_cards)
        (self.config_dir / "profiles" / f"{PROFILE}.toml").write_text(profile)
        self.env = dict(os.environ)
        self.env.update(
            {
                "MAPID_CONFIG_DIR": str(self.config_dir),
                "MAPID_STATE_DIR": str(self.base / "state"),
                "MAPID_RUNTIME_DIR": str(self.runtime),
                "XDG_DATA_HOME": str(self.base / "data"),
                "XDG_CONFIG_HOME": str(self.base / "xdg-config"),
            }
        )
        self.gc_log: Path | None = None
        if gc_log:  # a sitecustomize that logs every collection; daemon code is untouched
            probe = self.base / "gcprobe"
            probe.mkdir()
            (probe / "sitecustomize.py").write_text(_GC_PROBE)
            self.gc_log = self.base / "gc.log"
            self.env["MAPID_BENCH_GC_LOG"] = str(self.gc_log)
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(probe), self.env.get("PYTHONPATH", "")) if p
            )
        self.profile_cmd = list(profile_cmd or [])
        """A prefix such as `python -m cProfile -o out.prof` (replaces `python`)."""
        self.keep = keep
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None

    @property
    def log_path(self) -> Path:
        return self.base / "daemon.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout: float = 20.0) -> BenchDaemon:
        cmd = self.profile_cmd or [sys.executable]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "-m", "mapid", "run"],
                env=self.env,
                # Not the caller's directory: `-m` would import the mapid found there first,
                # and a PYTHONPATH=<other tree> comparison would run this tree's daemon.
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_pdeathsig,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            info = read_connection_file(self.runtime)
            if info is not None:
                try:
                    with Client(self.runtime, timeout=2.0) as probe:
                        probe.daemon_ping()
                    return self
                except MapidError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up in {timeout} s:\n{self.log_tail()}")

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("timeout", 30.0)
        return Client(self.runtime, **kwargs)

    def endpoints(self) -> tuple[str, str]:
        """(request, events) endpoints from the connection file."""
        info = read_connection_file(self.runtime)
        if info is None:
            raise RuntimeError("no connection file: is the daemon running?")
        return info.request, info.events

    def rss_kb(self) -> int:
        """The daemon's resident set (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    def open_fds(self) -> int:
        """How many file descriptors the daemon has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_limit(self) -> int | None:
        """The daemon's soft limit on open files (RLIMIT_NOFILE), None if unlimited."""
        for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
        return None

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def gc_pauses(self, since: float = 0.0) -> list[tuple[float, int, float, int]]:
        """(time, generation, ms, collected) of logged collections after `since` (gc_log)."""
        if self.gc_log is None or not self.gc_log.exists():
            return []
        found = []
        for line in self.gc_log.read_text().splitlines():
            t, gen, ms, collected = line.split()
            if float(t) >= since:
                found.append((float(t), int(gen), float(ms), int(collected)))
        return found

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait (recording how long and the exit code), SIGKILL if it hangs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                self.exit_code = proc.returncode
            return
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.exit_code = None
            print(
                f"the daemon did not stop within {timeout:g} s of SIGTERM; killed it",
                file=sys.stderr,
            )
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait any longer
            proc.kill()
            proc.wait()
            raise
        self.stop_seconds = time.monotonic() - started

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> BenchDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def handle_sigterm() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C, so `finally` blocks stop the daemons."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)


@contextlib.contextmanager
def interrupt_exit() -> Iterator[None]:
    """Turn Ctrl-C into exit code 130 after the cleanup ran, without a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        print("\ninterrupted; daemons stopped", file=sys.stderr)
        sys.exit(130)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summary_us(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50, p99, mean, min and max of nanosecond samples, in microseconds."""
    values = sorted(s / 1000 for s in samples_ns)
    return {
        "n": float(len(values)),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values) if values else float("nan"),
        "min": values[0] if values else float("nan"),
        "max": values[-1] if values else float("nan"),
    }


def verdict(ok: bool | None, target: str = "") -> str:
    """PASS or MISS beside a figure that has a target; `target` is shown with a MISS.

    None means the figure was not measured in this run ("n/a").
    """
    if ok is None:
        return "n/a"
    if ok:
        return "PASS"
    return f"MISS (target {target})" if target else "MISS"


@dataclass
class Figure:
    """One line of a benchmark's summary: a figure, its result and its target."""

    name: str
    result: str
    target: str
    ok: bool | None
    value: float | None = None
    unit: str = ""

    @property
    def verdict(self) -> str:
        """PASS, MISS, n/a (a target, not measured) or — (no target)."""
        if self.ok is None:
            return "n/a" if self.target else "—"
        return "PASS" if self.ok else "MISS"


@dataclass
class Summary:
    """A benchmark's figures against their targets: a printed table and `--json FILE`.

    The JSON holds each figure with its command and date, and the same figures as rows of
    bench/RESULTS.md's "Current figures" table (figure | target | latest result |
    PASS/MISS | command | date), so that table can be regenerated from a run.
    """

    bench: str
    command: str
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M"))
    figures: list[Figure] = field(default_factory=list)

    def add(
        self,
        name: str,
        result: str,
        target: str,
        ok: bool | None,
        value: float | None = None,
        unit: str = "",
    ) -> Figure:
        figure = Figure(name, result, target, ok, value, unit)
        self.figures.append(figure)
        return figure

    def print(self, title: str = "summary") -> None:
        """The figures as an aligned table: figure, result, target, PASS/MISS."""
        rows = [("figure", "result", "target", "PASS/MISS")]
        rows += [(f.name, f.result, f.target or "—", f.verdict) for f in self.figures]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        print(f"{title}:")
        for r in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3])

    def markdown_rows(self) -> list[str]:
        return [
            f"| {f.name} | {f.target or '—'} | {f.result} | "
            f"{'**' + f.verdict + '**' if f.ok is not None else f.verdict} | `{self.command}` | "
            f"{self.date} |"
            for f in self.figures
        ]

    def write_json(self, path: str | os.PathLike[str], **extra: Any) -> None:
        data = {
            "bench": self.bench,
            "command": self.command,
            "date": self.date,
            "machine": machine(),
            "figures": [{**asdict(f), "verdict": f.verdict} for f in self.figures],
            "markdown": self.markdown_rows(),
            **extra,
        }
        Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")


def command_line(drop: Sequence[str] = ("--json",)) -> str:
    """`python bench/NAME.py ARGS` as this process was run, without `drop` options."""
    args: list[str] = []
    skip = False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop:
            skip = "=" not in arg
            continue
        args.append(shlex.quote(arg))
    return " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *args])


def machine() -> str:
    """One line about this machine, for the printed header."""
    cpus = os.cpu_count()
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import zmq

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpus} CPU ({model or 'unknown'}), Python {sys.version.split()[0]}, "
        f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, load {load}"
    )


@contextlib.contextmanager
def py_spy(pid: int, out: str | None, *, rate: int = 500) -> Iterator[None]:
    """Sample `pid` with `py-spy record` while the block runs (nothing when `out` is None).

    `out` ending in .svg gives a flame graph, .json speedscope, anything else the collapsed
    stacks (`--format raw`), one stack a line with its sample count.
    """
    if out is None:
        yield
        return
    fmt = "flamegraph" if out.endswith(".svg") else "speedscope" if out.endswith(".json") else "raw"
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        yield
        return
    spy = subprocess.Popen(
        [
            *(exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", fmt, "-o", out),
            *os.environ.get("MAPID_PY_SPY_ARGS", "").split(),  # e.g. "--gil" or "--threads"
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    time.sleep(0.5)  # let it attach
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if spy.returncode not in (0, None):
            print(f"py-spy: {err.decode(errors='replace').strip()}", file=sys.stderr)
        else:
            print(f"py-spy profile of the daemon written to {out}", file=sys.stderr)
