"""The `imap` message service: a message store over an IMAP account (docs/design.md 4): reading,
push, the offline cache, and the write side (flags, folders, messages, the local Outbox).

- store.py: `ImapStore`, the provider of one session (logon, status row, folders,
  messages), and `ImapService`, the entry point's service.
- account.py: `Account`, one account's shared state, its threads (the command connection
  on a single-thread executor) and its online/offline life with backoff; shared by every
  session per cache directory.
- idle.py: `IdleWatch`, the Inbox's IDLE connection on its own thread.
- writes.py: what changes the server (UID STORE, COPY/MOVE, EXPUNGE, APPEND, CREATE,
  DELETE on the command connection) and the local Outbox as the spooler's queue.
- sync.py: what the command connection does (LIST, a mailbox's sync with UIDVALIDITY and
  CONDSTORE, fetching a body), blocking.
- connection.py: opening one connection (TLS, STARTTLS, login) and naming its failures.
- cache.py: the SQLite cache, the store's MAPIUID file and the Outbox's files, blocking.
- objects.py: the MAPI objects (store object, folders, messages) as thin facades.
- rows.py: cached messages -> contents rows and opened messages' properties (pure).
- names.py: the server's mailboxes -> MAPI's folder tree, special-use included (pure).
- entryids.py: the bytes of the store's entry IDs (UIDVALIDITY + UID), built and parsed.
- config.py: the schema, the TLS rule, the settings and where the cache lives.

RFC 5322 <-> MAPI properties is the shared `mapid.providers.rfc5322`.

May import: `mapid`'s shared modules (constants, proptags, errors, entryid, paths),
`mapid.providers.base` and the shared provider helpers (rfc5322, row_pacer, network,
and smtp/sasl.py's OAuth2 messages), and IMAPClient. Never
`mapid.daemon` or `mapid.cli` (tests/test_layout.py checks). The modules here import one
another without cycles, and none imports a name from this `__init__`, which only
re-exports.
"""

from mapid.providers.imap.store import IMAP_STORE_TYPE, ImapService, ImapStore

__all__ = ["IMAP_STORE_TYPE", "ImapService", "ImapStore"]
