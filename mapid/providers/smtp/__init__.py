"""The `smtp` message service: a transport that sends through an SMTP server.

- `config.py`: the section's schema and checks, and `SmtpSettings`, what a connection needs.
- `sasl.py`: the OAuth2 SASL messages (OAUTHBEARER, XOAUTH2); pure, no smtplib.
- `failures.py`: smtplib's replies and exceptions as temporary or permanent failures.
- `connection.py`: opening a connection (the TLS server-name context, STARTTLS, AUTH with a
  password or an OAuth2 access token, refreshed once when rejected).
- `credentials.py`: the AUTH password, asked once and kept until forgotten; the access token.
- `envelope.py`: a message's envelope (reverse-path, recipients, MAIL options).
- `transport.py`: `SmtpTransport`, the provider (the kept connection, sends, its status row).
- `service.py`: `SmtpService`, the entry point `mapid.providers.smtp:SmtpService`.

Each module imports only modules listed above it, never this package.

May import: `mapid`'s shared modules (constants, proptags, errors), `mapid.providers.base`
and the shared provider helpers (row_pacer.py, grouped_calls.py, rfc5322.py). Never
`mapid.daemon` or `mapid.cli` (tests/test_layout.py checks).
"""

from mapid.providers.smtp.config import DEFAULT_PORTS, SmtpSettings, parse_sender
from mapid.providers.smtp.service import SmtpService
from mapid.providers.smtp.transport import SmtpTransport

__all__ = ["DEFAULT_PORTS", "SmtpService", "SmtpSettings", "SmtpTransport", "parse_sender"]
