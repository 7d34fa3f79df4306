"""The AUTH password: asked of `support.password` at the first connection that needs it,
then kept for the next ones until forgotten (a failed AUTH, a new configuration, logoff).
No message ever holds it.
"""

from __future__ import annotations

from mapid.errors import MapiError
from mapid.providers.base import ProviderSupport, TransportFailure

__all__ = ["Credentials"]


class Credentials:
    """The password of one transport's AUTH user, asked once and kept."""

    def __init__(self, support: ProviderSupport) -> None:
        self._support = support
        self._secret: str | None = None

    async def password(self, username: str | None) -> str | None:
        """The password for `username`; None without a username (no AUTH)."""
        if username is None:
            return None
        if self._secret is None:
            try:
                self._secret = await self._support.password()
            except MapiError as exc:  # its message says where and why, never the secret
                raise TransportFailure(f"no password: {exc.message}") from None
            if self._secret is None:
                raise TransportFailure(
                    f"username {username} is set but no password: "
                    "give password_command, keyring or password"
                )
        return self._secret

    def forget(self) -> None:
        """Ask `support.password` again next time."""
        self._secret = None
