"""The daemon's place in the operating system (docs/design.md 10).

sd_notify.py tells systemd READY, STATUS, WATCHDOG and STOPPING; units.py writes the user
and system units `mapid units` prints; logs.py sets up the log, with each record's session,
profile and op; journal.py sends records to journald with structured fields (its native
protocol), lines go to a terminal; memory.py hands freed memory back to the system after a
burst; heap.py keeps garbage-collection pauses short by freezing the long-lived heap;
metrics.py holds the Prometheus metrics the other rooms count and serves them at /metrics
(prometheus_client); desktop.py sends desktop notifications (new mail, failed sends, stuck
mail) over D-Bus.

May import: `mapid`'s shared modules only: it is the bottom room of the daemon
(tests/test_layout.py).
"""
