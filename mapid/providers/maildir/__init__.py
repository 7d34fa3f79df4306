"""The `maildir` message service: a message store over a Maildir++ tree (docs/design.md 4).

- store.py: `MaildirStore`, the provider proper (logon, status row, folders, messages),
  and `MaildirService`, the entry point's service.
- objects.py: the MAPI objects (store object, folders, messages) as thin facades, and the
  folders' properties.
- messages.py: message files of one folder <-> their properties: read, save, add, delete,
  copy and move (blocking).
- outbox.py: `Outbox`, the spooler's queue, and its durability order.
- watch.py: `TreeWatch`, outside changes on disk -> notifications (advise).
- index.py: the folder index (contents-table rows without parsing files), one per folder
  per process, shared through `MaildirHub`.
- flush.py: group commit: the fsyncs of many writes share one disk flush.
- disk.py: the tree on disk: opening it, its `mapid.uid`, Maildir keys, writing files.
- tree.py: which dot directories of a root are folders.
- names.py: Maildir++ folder names <-> MAPI display names (pure).
- flags.py: the `:2,` flags <-> the MAPI flag properties (pure).
- entryids.py: the bytes of the store's entry IDs, built and parsed (pure).

RFC 5322 <-> MAPI properties is the shared `mapid.providers.rfc5322`.

May import: `mapid`'s shared modules (constants, proptags, errors, entryid, codec,
atomic_files), `mapid.providers.base` and the shared provider helpers (rfc5322,
grouped_calls, row_pacer). Never `mapid.daemon` or `mapid.cli` (tests/test_layout.py
checks). The modules here import one another without cycles, and none imports a name
from this `__init__`, which only re-exports.
"""

from mapid.providers.maildir.names import mutf7_decode, mutf7_encode
from mapid.providers.maildir.objects import MaildirFolder, MaildirMessage, MaildirStoreObject
from mapid.providers.maildir.store import MAILDIR_STORE_TYPE, MaildirService, MaildirStore

__all__ = [
    "MAILDIR_STORE_TYPE",
    "MaildirFolder",
    "MaildirMessage",
    "MaildirService",
    "MaildirStore",
    "MaildirStoreObject",
    "mutf7_decode",
    "mutf7_encode",
]
