"""The session model: MAPI sessions and what each holds (docs/design.md 5, docs/protocol.md 4 to 7).

session.py is one session (members, handles, advises, its state machine); manager.py
creates, shares, leases and ends them; logon.py loads a profile's services and logs their
providers on in MAPI's order, and is the providers' `ProviderSupport` (`SharedSupport` for
a shared provider, whose one logon serves every session of a profile and lingers after the
last); slots.py holds what a loaded service and provider are, and the shared logons;
status_table.py and status_objects.py are the status
table and its objects; handles.py the open-object handles; identity.py the session's
primary identity; routing.py which provider owns an entry ID and how it may be opened;
address_book.py the integrated address book over the AB providers; table_query.py
restrictions, sorts and columns over table rows; queue_claims.py which session's spooler
sends each store's Outbox.

May import: `mapid`'s shared modules, `mapid.providers`, `system` and `config`. Never the
spooler (it is handed a factory, `SessionEnv.make_spooler`), the bus, the ops or the app
(tests/test_layout.py).
"""
