"""What the daemon is told: mapid.toml and the profile files (docs/design.md 3, 7, 8).

daemon_config.py and remote_config.py read mapid.toml; profiles.py reads profile files;
writer.py edits TOML keeping people's comments; profile_admin.py and service_admin.py
create, change and delete profiles and their services; profile_sections.py serves the
sections a session opens; service_registry.py finds message services by entry point;
default_profile.py writes the example profile of a first start; credentials.py resolves
passwords without reading secrets from files others can read; watcher.py reloads what
changed on disk, over file_watch.py's directory watches (also used by providers).

May import: `mapid`'s shared modules, `mapid.providers` and `system`. Never the sessions,
the spooler, the bus or the ops (tests/test_layout.py).
"""
