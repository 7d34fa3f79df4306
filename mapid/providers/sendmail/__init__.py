"""The `sendmail` message service: a transport that hands each message to the machine's
sendmail program (`/usr/sbin/sendmail`, as msmtp-mta, Postfix and Exim provide it).
docs/providers.md builds it step by step, as the example of writing a message service.

- `config.py`: the section's schema and checks (the program must exist and be executable),
  and `SendmailSettings`, what a send needs.
- `exits.py`: the program's exit status (sysexits.h) and output as a temporary or a
  permanent failure.
- `program.py`: running the program without a shell or a thread, within its time-out.
- `transport.py`: `SendmailTransport`, the provider (the command line, sends, its row).
- `service.py`: `SendmailService`, the entry point `mapid.providers.sendmail:SendmailService`.

Each module imports only modules listed above it, never this package.

May import: `mapid`'s shared modules (constants, proptags, errors) and
`mapid.providers.base`. Never `mapid.daemon` or `mapid.cli` (tests/test_layout.py checks).
"""

from mapid.providers.sendmail.config import DEFAULT_COMMAND, SendmailSettings
from mapid.providers.sendmail.service import SendmailService
from mapid.providers.sendmail.transport import SendmailTransport

__all__ = ["DEFAULT_COMMAND", "SendmailService", "SendmailSettings", "SendmailTransport"]
