"""The daemon's place in the operating system (DESIGN.md 9).

sd_notify.py tells systemd READY, STATUS, WATCHDOG and STOPPING; units.py writes the user
and system units `mapid units` prints; logs.py formats log lines for journald or a
terminal; memory.py hands freed memory back to the system after a burst.

May import: `mapid`'s shared modules only: it is the bottom room of the daemon
(tests/test_layout.py).
"""
