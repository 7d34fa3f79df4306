"""The `vcard` message service: an address book over a vdir, a folder of `.vcf` files.

- `cards.py`: one `.vcf` file's cards as `Contact`s (parsing only).
- `entryids.py`: the folder's entry IDs and a contact's mail user properties (pure).
- `matching.py`: `AddressBook`, one scan's entries, contents rows and resolve_names index.
- `folder.py`: reading the whole folder (`read_vdir`, `VdirScan`), cached by file stamp.
- `config.py`: the section's schema, its check and the identity it configures.
- `objects.py`: the MAPI objects, a read-only `MailUser` and the `VCardContainer`.
- `edit.py`: the properties a card takes; creating, editing and deleting card files.
- `write.py`: the MAPI side of writing (`WritableMailUser`, create/modify/delete entries).
- `provider.py`: `VCardAddressBook`, the provider (logon, the watch, the status row).
- `service.py`: `VCardService`, the entry point `mapid.providers.vcard:VCardService`.

Each module imports only modules listed above it, never this package. `write.py` reaches
the provider through its `WritableBook` protocol, `objects.py` through `ContainerSource`.

May import: `mapid`'s shared modules (constants, proptags, errors, entryid, atomic_files),
`mapid.providers.base` and the shared provider helpers (row_pacer.py, grouped_calls.py,
rfc5322.py). Never `mapid.daemon` or `mapid.cli` (tests/test_layout.py checks).
"""

from mapid.providers.vcard.cards import Contact
from mapid.providers.vcard.folder import VdirScan, read_vdir
from mapid.providers.vcard.matching import AddressBook
from mapid.providers.vcard.objects import MailUser, VCardContainer
from mapid.providers.vcard.provider import VCardAddressBook
from mapid.providers.vcard.service import VCardService

__all__ = [
    "AddressBook",
    "Contact",
    "MailUser",
    "VCardAddressBook",
    "VCardContainer",
    "VCardService",
    "VdirScan",
    "read_vdir",
]
