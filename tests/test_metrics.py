"""/metrics through the real daemon: real requests over mapid.Client, a real HTTP scrape,
parsed by prometheus_client's own parser (docs/monitoring.md).

Each test starts a daemon with `metrics_listen` on a free loopback port, does real work
(pings, logons, a failed logon, an op that does not exist, mail through a real aiosmtpd),
scrapes, and checks the families, their types and HELP, and how far the counters moved.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from test_spooler import GRACE, Mail

from mapid.constants import ResourceType, StatusCode
from mapid.errors import ErrorCode, MapiError

from conftest import DEFAULT_CONFIG, DaemonFactory, DaemonProc, standard_profile
from smtp_server import SmtpServer, free_port, smtp_section

NEW = ["MAPI_NEW_SESSION"]
Families = dict[str, Metric]

FAMILIES = {
    "mapid_sessions": "gauge",
    "mapid_requests": "counter",
    "mapid_request_duration_seconds": "histogram",
    "mapid_events_published": "counter",
    "mapid_event_drops": "counter",
    "mapid_spooler_queued_messages": "gauge",
    "mapid_spooler_oldest_queued_seconds": "gauge",
    "mapid_spooler_sent": "counter",
    "mapid_spooler_failed": "counter",
    "mapid_provider_available": "gauge",
    "mapid_config_generation": "gauge",
    "mapid_reload_failures": "counter",
}
"""Every family of the issue, by the name prometheus_client's parser gives it (a counter's
without `_total`), and its type."""


def listen_config(port: int, extra: str = "") -> str:
    return DEFAULT_CONFIG + f'metrics_listen = "127.0.0.1:{port}"\n' + extra


def scrape(port: int) -> Families:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def refused(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).close()
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def listening_ports(daemon: DaemonProc) -> list[int]:
    """The TCP ports the daemon's process listens on (its socket fds in /proc/net/tcp*)."""
    assert daemon.proc is not None
    inodes = set()
    for fd in Path(f"/proc/{daemon.proc.pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # TCP_LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of `family` named `sample` (default: the family's own name, or
    `_total` for a counter) with exactly these labels; 0 when there is none."""
    metric = families[family]
    name = sample or (family + "_total" if metric.type == "counter" else family)
    found = [s.value for s in metric.samples if s.name == name and s.labels == labels]
    assert len(found) <= 1
    return found[0] if found else 0.0


def labels_of(families: Families, family: str, key: str) -> set[str]:
    return {s.labels[key] for s in families[family].samples if key in s.labels}


def wait_scrape(port: int, check: Callable[[Families], bool], what: str) -> Families:
    deadline = time.monotonic() + 15
    while True:
        families = scrape(port)
        if check(families):
            return families
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def metrics_daemon(make_daemon: DaemonFactory, port: int) -> DaemonProc:
    return make_daemon(config=listen_config(port))


def test_every_family_is_there_with_its_type_and_help(
    metrics_daemon: DaemonProc, port: int
) -> None:
    families = scrape(port)
    for name, kind in FAMILIES.items():
        assert name in families, f"{name} missing"
        assert families[name].type == kind, name
        assert len(families[name].documentation) > 20, f"{name} has no real HELP"
    # prometheus_client's process collector, of the daemon's own process
    assert families["process_cpu_seconds"].type == "counter"
    assert value(families, "process_resident_memory_bytes") > 1_000_000
    assert value(families, "process_open_fds") > 3
    assert abs(value(families, "process_start_time_seconds") - time.time()) < 120
    assert "python_info" in families
    assert value(families, "mapid_config_generation") == 1
    # Every failure reason is there from the start, so rate() and alerts see a 0.
    assert labels_of(families, "mapid_spooler_failed", "reason") == {
        "temporary",
        "refused",
        "no_transport",
        "no_sender",
        "no_recipient",
    }
    assert not any(name.endswith("_created") for name in families)


def test_requests_are_counted_by_op_and_mapi_error_name(
    metrics_daemon: DaemonProc, port: int
) -> None:
    client = metrics_daemon.client()
    before = scrape(port)
    for _ in range(3):
        client.daemon_ping()
    with pytest.raises(MapiError) as failed:
        client.session_logon("nosuch", NEW)
    assert failed.value.code == ErrorCode.MAPI_E_LOGON_FAILED
    with pytest.raises(MapiError) as unknown:
        client.call("no.such.op-4f2a", {})
    assert unknown.value.code == ErrorCode.MAPI_E_NO_SUPPORT
    with pytest.raises(MapiError) as ended:
        client.session_status_table(b"not a token")
    assert ended.value.code == ErrorCode.MAPI_E_END_OF_SESSION
    after = scrape(port)

    def moved(**labels: str) -> float:
        return value(after, "mapid_requests", **labels) - value(before, "mapid_requests", **labels)

    assert moved(op="daemon.ping", result="ok") == 3
    assert moved(op="session.logon", result="MAPI_E_LOGON_FAILED") == 1
    assert moved(op="unknown", result="MAPI_E_NO_SUPPORT") == 1
    assert moved(op="session.status_table", result="MAPI_E_END_OF_SESSION") == 1
    ops = labels_of(after, "mapid_requests", "op")
    assert "no.such.op-4f2a" not in ops and "no.such.op-4f2a" not in str(after)
    results = labels_of(after, "mapid_requests", "result")
    assert results <= {"ok"} | {code.name for code in ErrorCode}
    # The histogram has one observation a request, in its buckets and its count.
    hist = "mapid_request_duration_seconds"
    count = "mapid_request_duration_seconds_count"
    assert (
        value(after, hist, count, op="daemon.ping") - value(before, hist, count, op="daemon.ping")
        == 3
    )
    inf = value(after, hist, "mapid_request_duration_seconds_bucket", op="daemon.ping", le="+Inf")
    assert inf == value(after, hist, count, op="daemon.ping")
    assert 0 < value(after, hist, "mapid_request_duration_seconds_sum", op="daemon.ping") < 3


def test_sessions_events_and_providers_follow_the_daemon(
    make_daemon: DaemonFactory, tmp_path: Path, port: int
) -> None:
    extra = '\n[services.extra]\nservice = "providers_for_tests:FailOne"\n'
    broken = standard_profile(tmp_path / "broken") + extra
    daemon = make_daemon(
        config=listen_config(port),
        profiles={"alpha": standard_profile(tmp_path / "alpha"), "broken": broken},
    )
    client = daemon.client()
    before = scrape(port)
    assert value(before, "mapid_sessions") == 0
    assert before["mapid_provider_available"].samples == []
    alpha = client.session_logon("alpha", NEW)
    second = client.session_logon("broken", NEW)
    families = scrape(port)
    assert value(families, "mapid_sessions") == 2
    assert value(families, "mapid_events_published") > value(before, "mapid_events_published")
    available = {
        (s.labels["profile"], s.labels["service"]): s.value
        for s in families["mapid_provider_available"].samples
    }
    # FailOne's book logs on, its store fails alone: the service is not available.
    assert available == {
        ("alpha", "contacts"): 1,
        ("alpha", "mail"): 1,
        ("broken", "contacts"): 1,
        ("broken", "mail"): 1,
        ("broken", "extra"): 0,
    }
    for label in ("session", "token", "id"):
        assert all(label not in s.labels for f in families.values() for s in f.samples)
    text = str(families)
    assert alpha["session"] not in text and second["session"] not in text
    client.session_logoff(second["token"])
    families = scrape(port)
    assert value(families, "mapid_sessions") == 1
    assert labels_of(families, "mapid_provider_available", "profile") == {"alpha"}
    assert value(families, "mapid_event_drops") == 0


def test_reload_moves_the_endpoint_counts_failures_and_turns_it_off(
    metrics_daemon: DaemonProc, port: int
) -> None:
    client = metrics_daemon.client()
    first = scrape(port)
    assert value(first, "mapid_reload_failures") == 0
    other = free_port()
    toml = metrics_daemon.config_dir / "mapid.toml"
    toml.write_text(listen_config(other))
    report = client.daemon_reload()
    assert report["ok"] is True
    assert refused(port)
    assert listening_ports(metrics_daemon) == [other]
    moved = scrape(other)
    assert value(moved, "mapid_config_generation") == report["gen"] == 2
    # A broken key: the reload fails, is counted, and the endpoint stays where it was.
    toml.write_text(listen_config(other, "lease_s = -5\n"))
    assert client.daemon_reload()["ok"] is False
    failed = scrape(other)
    assert value(failed, "mapid_reload_failures") == 1
    assert value(failed, "mapid_config_generation") == 3
    toml.write_text(listen_config(other).replace(f"127.0.0.1:{other}", "nonsense"))
    assert client.daemon_reload()["ok"] is False
    assert value(scrape(other), "mapid_reload_failures") == 2  # the last good value stands
    toml.write_text(DEFAULT_CONFIG)  # absent: off
    assert client.daemon_reload()["ok"] is True
    assert refused(other) and refused(port)
    assert listening_ports(metrics_daemon) == []
    assert "not serving /metrics" in metrics_daemon.log()
    toml.write_text(listen_config(port))  # and on again
    client.daemon_reload()
    assert value(scrape(port), "mapid_config_generation") == 6


def test_a_port_in_use_is_logged_and_the_daemon_serves_on(
    make_daemon: DaemonFactory, port: int
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        daemon = make_daemon(config=listen_config(port))
        client = daemon.client()
        assert client.daemon_ping() == {}
        assert f"cannot serve /metrics on 127.0.0.1:{port}" in daemon.log()
    # Freed: the next reload binds it.
    client.daemon_reload()
    assert value(scrape(port), "mapid_sessions") == 0


def test_no_metrics_listen_serves_nothing(daemon: DaemonProc) -> None:
    assert daemon.client().daemon_ping() == {}
    assert listening_ports(daemon) == []
    assert "/metrics" not in daemon.log()


def test_the_spooler_counts_sent_refused_and_stuck_mail(
    make_daemon: DaemonFactory,
    make_smtp_server: Callable[..., SmtpServer],
    tmp_path: Path,
    port: int,
) -> None:
    server = make_smtp_server()
    profile = standard_profile(tmp_path / "alpha") + smtp_section(server)
    daemon = make_daemon(
        config=listen_config(port, "spooler_retry_s = 600\n"), profiles={"alpha": profile}
    )
    mail = Mail.logon(daemon.client())
    mail.send("Engines", to=[GRACE])
    server.wait_for(1)
    families = wait_scrape(
        port, lambda f: value(f, "mapid_spooler_sent") == 1, "the sent message counted"
    )
    assert value(families, "mapid_spooler_queued_messages") == 0
    assert value(families, "mapid_spooler_oldest_queued_seconds") == 0
    assert value(families, "mapid_provider_available", profile="alpha", service="outgoing") == 1

    server.refuse("nobody@example.org")
    mail.send("Refused", cc=["nobody@example.org"])
    families = wait_scrape(
        port,
        lambda f: value(f, "mapid_spooler_failed", reason="refused") == 1,
        "the refused message counted",
    )
    assert value(families, "mapid_spooler_sent") == 1  # nobody reached: not sent

    server.stop()
    mail.send("Stuck", to=[GRACE])
    families = wait_scrape(
        port,
        lambda f: value(f, "mapid_spooler_queued_messages") == 1,
        "the stuck message queued",
    )
    assert value(families, "mapid_spooler_failed", reason="temporary") == 1
    # STATUS_OFFLINE in the transport's row (validate_state FORCE_XP_DISCONNECT) makes it 0.
    outgoing = {"profile": "alpha", "service": "outgoing"}
    assert value(families, "mapid_provider_available", **outgoing) == 1
    transport = mail.status(ResourceType.MAPI_TRANSPORT_PROVIDER)
    mail.client.status_validate_state(mail.token, transport, ["FORCE_XP_DISCONNECT"])
    assert mail.row(ResourceType.MAPI_TRANSPORT_PROVIDER)["PR_STATUS_CODE"] & int(
        StatusCode.STATUS_OFFLINE
    )
    assert value(scrape(port), "mapid_provider_available", **outgoing) == 0
    waited = value(families, "mapid_spooler_oldest_queued_seconds")
    time.sleep(1.1)
    later = value(scrape(port), "mapid_spooler_oldest_queued_seconds")
    assert 0 < waited < later < waited + 30  # it grows while the message waits
    mail.client.session_logoff(mail.token)  # its spooler stops: no queue is counted
    families = wait_scrape(port, lambda f: value(f, "mapid_sessions") == 0, "the logoff")
    assert value(families, "mapid_spooler_queued_messages") == 0
