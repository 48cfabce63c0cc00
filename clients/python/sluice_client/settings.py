"""How a client reaches the broker: its URL, TLS files and token, with the
same names and environment variables as the Rust worker (``SLUICE_BROKER``,
``SLUICE_TOKEN`` or ``SLUICE_TOKEN_FILE``, ``SLUICE_TLS_CA``,
``SLUICE_TLS_CERT``, ``SLUICE_TLS_KEY``), and the channels built from them.

``https://`` turns TLS on (the system's roots, or only ``tls_ca``);
``tls_cert`` and ``tls_key`` together present a client certificate. The
token goes as ``authorization: Bearer ...`` metadata on every call; it is
never logged, and a token sent in plaintext to a host that is not the
loopback is warned about. Settings that cannot work refuse at once, naming
the problem (:class:`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import grpc
import grpc.aio

log = logging.getLogger("sluice_client")

DEFAULT_BROKER = "http://127.0.0.1:50051"

#: HTTP/2 keepalive as the Rust worker's (docs/worker-protocol.md, L1): a
#: ping every 10 s, even without calls, and the connection dropped when one
#: is not answered within 10 s. grpc's core enforces that through its ping
#: timeout (a minute by default), not the keepalive timeout, so both are
#: set: with the keepalive's alone, a connection that died silently went
#: unnoticed for a minute (tests/tests/clients.rs,
#: a_connection_that_dies_silently_is_noticed). Messages up to 256 MiB are
#: received.
CHANNEL_OPTIONS: Sequence[Tuple[str, int]] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 256 << 20),
)


class SettingsError(ValueError):
    """Settings that cannot work: the message names the setting."""


@dataclass(frozen=True)
class Settings:
    """Where the broker is and how to authenticate to it."""

    broker: str = DEFAULT_BROKER
    token: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None

    @classmethod
    def from_env(
        cls,
        env: Optional[Mapping[str, str]] = None,
        *,
        broker: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
    ) -> "Settings":
        """Settings from ``env`` (default: ``os.environ``); arguments that
        are not ``None`` win over the environment."""
        env = os.environ if env is None else env
        token_file = token_file or env.get("SLUICE_TOKEN_FILE")
        if token is None:
            if token_file and env.get("SLUICE_TOKEN"):
                raise SettingsError("give SLUICE_TOKEN or a token file, not both")
            if token_file:
                try:
                    token = Path(token_file).read_text().strip()
                except OSError as e:
                    raise SettingsError(f"reading the token file {token_file}: {e.strerror}") from None
            else:
                token = env.get("SLUICE_TOKEN")
        settings = cls(
            broker=broker or env.get("SLUICE_BROKER", DEFAULT_BROKER),
            token=token,
            tls_ca=tls_ca or env.get("SLUICE_TLS_CA"),
            tls_cert=tls_cert or env.get("SLUICE_TLS_CERT"),
            tls_key=tls_key or env.get("SLUICE_TLS_KEY"),
        )
        settings.check()
        return settings

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker).scheme == "https"

    @property
    def target(self) -> str:
        """``host:port`` for grpc."""
        parts = urlsplit(self.broker)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"broker URL {self.broker!r}: expected http://HOST:PORT or https://HOST:PORT")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return f"{host}:{port}"

    def check(self) -> None:
        """Refuses settings that cannot work; warns about a token in plaintext."""
        target = self.target
        if not self.tls and (self.tls_ca or self.tls_cert or self.tls_key):
            raise SettingsError(f"TLS files were given but the broker URL {self.broker} is not https://")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("a client certificate needs both tls_cert and tls_key")
        if self.token is not None:
            if not self.token or any(c.isspace() or not c.isprintable() or not c.isascii() for c in self.token):
                raise SettingsError("the token must be visible ASCII without whitespace")
            host = target.rsplit(":", 1)[0].strip("[]")
            if not self.tls and not _loopback(host):
                log.warning("the token is sent in plaintext to %s: use https://", host)

    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        """Metadata for every call: the token, if any."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _credentials(self) -> grpc.ChannelCredentials:
        def read(name: str, path: Optional[str]) -> Optional[bytes]:
            if path is None:
                return None
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise SettingsError(f"reading {name} {path}: {e.strerror}") from None
            if b"-----BEGIN" not in data:
                raise SettingsError(f"{name} {path} holds no PEM data")
            return data

        return grpc.ssl_channel_credentials(
            root_certificates=read("tls_ca", self.tls_ca),
            private_key=read("tls_key", self.tls_key),
            certificate_chain=read("tls_cert", self.tls_cert),
        )

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel to the broker."""
        if self.tls:
            return grpc.aio.secure_channel(self.target, self._credentials(), options=CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def channel(self) -> grpc.Channel:
        """A blocking channel to the broker."""
        if self.tls:
            return grpc.secure_channel(self.target, self._credentials(), options=CHANNEL_OPTIONS)
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
