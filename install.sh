#!/usr/bin/env bash
# Install mapid into .venv beside this file, link `mapid` and `mapictl` into ~/.local/bin,
# then start the daemon in the foreground (`mapid run`). `--no-start` only installs.
# Every dependency comes from requirements.lock, versions and hashes, so each user and CI get
# the same set; the project itself is then installed on top without resolving anything.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: mapid needs Python 3.11 or newer ($PY is $("$PY" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        # Debian ships venv separately (python3-venv).
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv
        elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
            sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv
        else
            echo "install.sh: '$PY -m venv' failed; install Debian's python3-venv and run again" >&2
            exit 1
        fi
        "$PY" -m venv .venv
    fi
fi

# PIP_NO_WARN_SCRIPT_LOCATION: the scripts are linked into ~/.local/bin below.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1
.venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock
# The build backend is in the lock too (setuptools), so the project builds offline from it.
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/python -c 'import mapid.daemon.main, mapid.cli.app' # the install is usable

mkdir -p "$HOME/.local/bin"
ln -sf "$PWD/.venv/bin/mapid" "$HOME/.local/bin/mapid"
ln -sf "$PWD/.venv/bin/mapictl" "$HOME/.local/bin/mapictl"
# The man pages mapid(1) and mapictl(1), written from the commands' typer apps into
# ~/.local/share/man/man1: man-db looks in ../share/man beside each PATH entry, so
# `man mapictl` finds them once ~/.local/bin is on PATH.
.venv/bin/python -m mapid.cli.manpages --user >/dev/null
echo "mapid installed: $HOME/.local/bin/mapid and $HOME/.local/bin/mapictl (man mapid, man mapictl)"
echo "shell completion: mapictl --install-completion (bash, zsh or fish)"

if [ "${1:-}" = "--no-start" ]; then
    exit 0
fi
echo "starting the daemon (Ctrl-C stops it; in another terminal try: mapictl status)"
exec .venv/bin/mapid run
