from mapid.client import Client

from conftest import DaemonProc


def test_daemon_answers_hello(daemon: DaemonProc, client: Client) -> None:
    hello = client.daemon_hello()
    assert hello["protocol"] == 1
    assert hello["pid"] == daemon.proc.pid
