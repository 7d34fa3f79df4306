"""`python -m mapid` runs the daemon's command (`mapid`)."""

from mapid.daemon.main import main

main()
