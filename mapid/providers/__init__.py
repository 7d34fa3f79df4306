"""Message services and their providers: the provider API (base.py) and the built-in
services, `maildir` and `imap` (message stores), `vcard` (an address book), `smtp` and
`sendmail` (transports), one package each (docs/providers.md: writing one).

What the services share sits here beside the API: rfc5322.py (messages <-> MAPI
properties, recipient checks), row_pacer.py (status rows kept true without flooding),
grouped_calls.py (batched calls), network.py (credential keys and where they may travel),
store_uid.py (a store's MAPIUID file).

A provider sees the daemon only through the `ProviderSupport` it is given (base.py), as
an aiosmtpd handler sees its server, so a third-party service needs nothing else.

May import: `mapid`'s shared modules (constants, proptags, errors, entryid, atomic_files,
paths). Never `mapid.daemon` or `mapid.cli` (tests/test_layout.py checks).
"""
