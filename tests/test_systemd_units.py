"""The systemd units (docs/design.md 10): one text, verified and rated by systemd's own tools.

`mapid units` renders mapid.daemon.system.units with this install's paths; systemd/ holds the
same text with the usual install paths. `systemd-analyze verify` must accept both units
(it also checks that ExecStart and ExecReload exist, hence the rendered copies), and
`systemd-analyze security --offline=true` must rate the system unit 2.5 or lower. Debian's
`systemd` package provides the tool; .ci/run installs it, so under CI it must be there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mapid.cli import manpages
from mapid.daemon.system import units

from conftest import DaemonFactory, standard_profile
from smtp_server import SmtpServer, smtp_section

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {
    ROOT / "systemd" / "user" / "mapid.service": (False, units.SHIPPED_USER),
    ROOT / "systemd" / "system" / "mapid.service": (True, units.SHIPPED_SYSTEM),
}
MAX_EXPOSURE = 2.5


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; .ci/run installs Debian's systemd")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return tool


def mapid_units(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapid", "units", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


HOMES = ("/home/", "/root/", "/run/user/")


def python_under_home() -> bool:
    """This venv was made from a Python in a home directory (pyenv, say)."""
    return os.path.realpath(sys.executable).startswith(HOMES)


def rendered(tmp_path: Path, kind: str) -> Path:
    """`mapid units --KIND` written where systemd would take it.

    Where this venv's Python lives under a home directory, `mapid units --system` rightly
    refuses (ProtectHome=yes would hide it); the system unit is then rendered for this
    install without that check, so that systemd can still verify and rate the text.
    """
    result = mapid_units(f"--{kind}")
    if kind == "system" and python_under_home():
        assert result.returncode == 1 and "ProtectHome=yes" in result.stderr, result
        text = units.render(True, units.installed_programs())
    else:
        assert result.returncode == 0, result.stderr
        text = result.stdout
    folder = tmp_path / kind
    folder.mkdir()
    unit = folder / "mapid.service"
    unit.write_text(text)
    return unit


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("path", list(SHIPPED), ids=lambda p: p.parent.name)
def test_the_shipped_units_are_the_generated_text(path: Path) -> None:
    system, programs = SHIPPED[path]
    assert path.read_text() == units.render(system, programs)


def test_mapid_units_names_this_install_and_the_settings_systemd_needs(tmp_path: Path) -> None:
    mapid = Path(sys.executable).parent / "mapid"
    for kind in ("user", "system"):
        unit = directives(rendered(tmp_path, kind).read_text())
        start = unit["ExecStart"][0].split()
        assert start[0] == str(mapid) and os.access(start[0], os.X_OK)
        assert start[1:] == (["run", "--system"] if kind == "system" else ["run"])
        reload = unit["ExecReload"][0].split()
        assert reload[0] == str(mapid.parent / "mapictl") and reload[-1] == "reload"
        assert "--runtime-dir=%t/mapid" in reload
        assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
        for key in ("RuntimeDirectory", "ConfigurationDirectory", "StateDirectory"):
            assert unit[key] == ["mapid"]
        mode = "0750" if kind == "system" else "0700"
        assert unit["RuntimeDirectoryMode"] == [mode]
        assert unit["Restart"] == ["on-failure"] and unit["WatchdogSec"]
        assert "AF_INET" in unit["RestrictAddressFamilies"][0].split()  # SMTP over TCP


def test_the_system_unit_runs_as_mapid_under_hardening(tmp_path: Path) -> None:
    unit = directives(rendered(tmp_path, "system").read_text())
    assert unit["User"] == ["mapid"] and unit["Group"] == ["mapid"]
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert unit[key] == [value], key


def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    tool = analyze()
    # verify runs `man` for each Documentation=man:... entry: the pages ./install.sh builds
    # (without man-db there is nothing to run; .ci/run installs it).
    manpages.write_pages(tmp_path / "man" / "man1")
    with_pages = {**os.environ, "MANPATH": str(tmp_path / "man")}
    man = [] if shutil.which("man") or os.environ.get("CI") else ["--man=no"]
    system = rendered(tmp_path, "system")
    result = subprocess.run(
        [tool, "verify", *man, str(system)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=with_pages,
    )
    assert result.returncode == 0 and str(system) not in result.stderr, result.stderr
    user = rendered(tmp_path, "user")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = {**with_pages, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [tool, "--user", "verify", *man, str(user)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0 and str(user) not in result.stderr, result.stderr


def test_systemd_analyze_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit naming a missing program or a bad key does."""
    tool = analyze()
    broken = tmp_path / "mapid.service"
    text = units.render(True, units.Programs("/nonexistent/mapid", "/nonexistent/mapictl"))
    broken.write_text(text.replace("UMask=0077", "UMask=0077\nProtectEverything=yes"))
    result = subprocess.run(
        [tool, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "/nonexistent/mapid" in result.stderr and "ProtectEverything" in result.stderr


def test_systemd_analyze_security_rates_the_system_unit_low(tmp_path: Path) -> None:
    tool = analyze()
    system = rendered(tmp_path, "system")
    result = subprocess.run(
        [tool, "security", "--offline=true", "--threshold=25", str(system)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for mapid\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0  # --threshold=25 is the same bound, in tenths


def test_the_system_unit_resolves_links_and_refuses_an_install_under_home(
    tmp_path: Path,
) -> None:
    with pytest.raises(units.UnitError, match="ProtectHome=yes"):
        units.system_programs(
            units.Programs("/home/ada/.local/bin/mapid", "/home/ada/.local/bin/mapictl")
        )
    # ~/.local/bin/mapid -> a venv elsewhere (./install.sh, pipx): the unit names the venv.
    venv = Path(sys.executable).parent
    links = tmp_path / "bin"
    links.mkdir()
    for name in ("mapid", "mapictl"):
        (links / name).symlink_to(venv / name)
    given = units.Programs(str(links / "mapid"), str(links / "mapictl"))
    if python_under_home():
        with pytest.raises(units.UnitError, match=r"python.* is under /"):
            units.system_programs(given)
    else:
        assert units.system_programs(given) == units.Programs(
            os.path.realpath(venv / "mapid"), os.path.realpath(venv / "mapictl")
        )
    # A console script whose interpreter is under a home cannot run there either.
    scripts = tmp_path / "opt"
    scripts.mkdir()
    for name in ("mapid", "mapictl"):
        (scripts / name).write_text("#!/home/ada/.pyenv/versions/3.11/bin/python3.11\n")
        (scripts / name).chmod(0o755)
    with pytest.raises(units.UnitError, match=re.escape("/home/ada/.pyenv/versions/3.11/")):
        units.system_programs(units.Programs(str(scripts / "mapid"), str(scripts / "mapictl")))


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns to the mapid user need root")
def test_sysusers_and_tmpfiles_make_the_user_and_directories(tmp_path: Path) -> None:
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            if os.environ.get("CI"):
                pytest.fail(f"{tool} is missing; .ci/run installs Debian's systemd")
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    sysusers = ROOT / "systemd" / "sysusers.d" / "mapid.conf"
    tmpfiles = ROOT / "systemd" / "tmpfiles.d" / "mapid.conf"
    for command in (
        ["systemd-sysusers", f"--root={root}", str(sysusers)],
        ["systemd-tmpfiles", f"--root={root}", "--create", str(tmpfiles)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").open()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").open()}
    uid, gid = int(users["mapid"][2]), int(groups["mapid"][2])
    assert users["mapid"][5] == "/var/lib/mapid" and users["mapid"][6].strip().endswith("nologin")
    for path, mode, owner in (
        ("run/mapid", 0o750, uid),
        ("var/lib/mapid", 0o700, uid),
        ("etc/mapid", 0o750, 0),
        ("etc/mapid/profiles", 0o750, 0),
    ):
        info = (root / path).stat()
        assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (mode, owner, gid), path


MDWE_SITECUSTOMIZE = """
import ctypes, sys
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.stderr.write("MDWE unsupported\\n")
elif libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) & PR_MDWE_REFUSE_EXEC_GAIN:
    sys.stderr.write("MDWE on\\n")
"""


def test_the_daemon_works_under_memory_deny_write_execute(
    make_daemon: DaemonFactory, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """MemoryDenyWriteExecute=yes (system unit): the daemon, pyzmq, msgpack, watchdog's
    inotify, vobject, the Maildir and smtplib all run without writable executable memory.
    The kernel's prctl(PR_SET_MDWE), which newer systemd uses for the option, stands in for
    systemd here and binds the daemon from Python's start (sitecustomize) on. systemd 252
    applies a seccomp filter instead that also refuses mprotect(PROT_EXEC) on memory that
    is executable already; nothing in the daemon calls it (ld.so maps code with mmap)."""
    modules = tmp_path / "mdwe"
    modules.mkdir()
    (modules / "sitecustomize.py").write_text(MDWE_SITECUSTOMIZE)
    tests_dir = Path(__file__).resolve().parent
    profile = standard_profile(tmp_path / "alpha", autologon=True) + smtp_section(smtp_server)
    proc = make_daemon(
        profiles={"alpha": profile},
        config='default_profile = "alpha"\n',  # the watcher on: inotify under MDWE too
        env={"PYTHONPATH": os.pathsep.join([str(modules), str(tests_dir)])},
    )
    if "MDWE unsupported" in proc.log():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert "MDWE on" in proc.log()
    command = [sys.executable, "-m", "mapid.cli.app", "--runtime-dir", str(proc.runtime)]
    command += ["send", "--to", "grace@example.org", "-s", "Under MDWE", "--body", "x", "--wait"]
    sent = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, (sent.stdout, sent.stderr, proc.log()[-2000:])
    [got] = smtp_server.wait_for(1)
    assert b"Subject: Under MDWE" in got.content
    assert proc.stop() == 0
