"""CurveZMQ on the control and info sockets, with a ZAP allow-list mapping client keys to identities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from stationd.protocol.errors import ConfigError

from .config import SecurityConfig

__all__ = [
    "QSERVER_CLIENT_PUBLIC_KEY",
    "QSERVER_CLIENT_SECRET_KEY",
    "CurveServer",
    "Identity",
    "curve_server",
    "generate_keys",
]

# bluesky-queueserver's clients always use this key pair (published in its comms.py), so it authenticates
# nobody: admitting it is an explicit, off-by-default option.
QSERVER_CLIENT_PUBLIC_KEY = "wt8[6a8eoXFRVL<l2JBbOzs(hcI%kRBIr0Do/eLC"
QSERVER_CLIENT_SECRET_KEY = "=@e7WwVuz{*eGcnv{AL@x2hmX!z^)wP3vKsQ{S7s"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a client is, as established by its CurveZMQ key (never taken from the request)."""

    user: str
    user_group: str


@dataclass(frozen=True, slots=True)
class CurveServer:
    """Server key pair and the clients allowed to connect."""

    public_key: bytes
    secret_key: bytes
    identities: dict[str, Identity]
    """z85 client public key -> identity."""

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` a CurveZMQ server (call before bind)."""
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def identity(self, user_id: str | None) -> Identity | None:
        return self.identities.get(user_id) if user_id else None

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP credentials provider: admit only allow-listed keys."""
        return client_key.decode("ascii") in self.identities

    async def start_authenticator(self, zctx: zmq.asyncio.Context) -> AsyncioAuthenticator:
        auth = AsyncioAuthenticator(zctx)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=self)
        return auth


def _check_key(key: str, what: str) -> bytes:
    raw = key.strip().encode("ascii")
    try:
        zmq.curve_public(raw) if "secret" in what else zmq.utils.z85.decode(raw)
    except (ValueError, zmq.ZMQError) as exc:
        raise ConfigError(f"invalid {what} {key!r}: a key is a 40-character z85 string") from exc
    if len(raw) != 40:
        raise ConfigError(f"invalid {what} {key!r}: a key is a 40-character z85 string")
    return raw


def curve_server(config: SecurityConfig) -> CurveServer | None:
    """The CurveZMQ settings of the config, or None when no server secret key is configured."""
    if config.server_secret_key_file:
        try:
            public, secret = zmq.auth.load_certificate(config.server_secret_key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load server key file {config.server_secret_key_file}: {exc}") from exc
        if secret is None:
            raise ConfigError(
                f"{config.server_secret_key_file} holds no secret key (use the *.key_secret file)"
            )
    elif config.server_secret_key:
        secret = _check_key(config.server_secret_key, "server secret key")
        public = zmq.curve_public(secret)
    else:
        return None
    identities: dict[str, Identity] = {}
    for client in config.clients:
        key = _check_key(client.public_key, "client public key").decode()
        identities[key] = Identity(client.user, client.user_group)
    if config.admit_qserver_client_key:
        identities[QSERVER_CLIENT_PUBLIC_KEY] = Identity(config.qserver_user, config.qserver_user_group)
    return CurveServer(public, secret, identities)


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write `<name>.key` (public) and `<name>.key_secret` (both keys, mode 0600) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(str(directory), name)
    Path(secret_file).chmod(0o600)
    return Path(public_file), Path(secret_file)
