"""Message services and their providers: the provider API (base.py) and the built-in
services, `maildir` (a message store), `vcard` (an address book) and `smtp` (a transport).

A provider sees the daemon only through the `ProviderSupport` it is given (base.py), as
an aiosmtpd handler sees its server, so a third-party service needs nothing else.

May import: `mapid`'s shared modules (constants, proptags, errors, entryid, codec). Never
`mapid.daemon` or `mapid.cli` (tests/test_layout.py checks).
"""
