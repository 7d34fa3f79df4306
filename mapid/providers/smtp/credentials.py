"""What AUTH needs: the password, asked of `support.password` at the first connection that needs
it, then kept for the next ones until forgotten (a failed AUTH, a new configuration, logoff);
or an OAuth2 access token from `support.oauth2_token`, which keeps the token itself until the
transport asks for a fresh one (the server rejected it). No message ever holds either.
"""

from __future__ import annotations

from mapid.errors import MapiError
from mapid.providers.base import ProviderSupport, TransportFailure

__all__ = ["Credentials"]


class Credentials:
    """The password (or access token) of one transport's AUTH user."""

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

    async def token(self, *, refresh: bool = False) -> str:
        """An access token from oauth2_token_command (a fresh one with `refresh`)."""
        try:
            token = await self._support.oauth2_token(refresh=refresh)
        except MapiError as exc:  # where and why, never the token
            raise TransportFailure(f"no access token: {exc.message}") from None
        if token is None:
            raise TransportFailure("no access token: the service names no oauth2_token_command")
        return token

    def forget(self) -> None:
        """Ask `support.password` again next time."""
        self._secret = None
