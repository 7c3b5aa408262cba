"""Webhooks: which addresses they may reach (checked on the connection actually made), and
their delivery: signed, never redirected, retried only where a retry can help, recorded
as a category."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from deployserver.config import Settings
from deployserver.errors import InvalidWebhook
from deployserver.store.files import write_private

log = logging.getLogger("deployserver.serving.webhooks")
SIGNATURE_HEADER = "X-Deployserver-Signature"
MAX_URL = 2000  # the column's size
Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
# NAT64 (RFC 6052) addresses carry an IPv4 address a translator would connect to.
NAT64 = IPv6Network("64:ff9b::/96")
# What inet_aton takes for IPv4 besides dotted quads: 2130706433, 0x7f000001, 0177.1, 127.1
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}\.?$", re.IGNORECASE)


class Outcome(StrEnum):
    """What became of a webhook, as ``webhook_status`` records it: never the error's text,
    which would tell a caller what answers on the server's network."""

    DELIVERED = "delivered"
    REFUSED_DESTINATION = "refused_destination"
    CONNECT_FAILED = "connect_failed"
    TIMEOUT = "timeout"
    PROTOCOL_ERROR = "protocol_error"
    HTTP_3XX = "http_3xx"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"


# A redirect is not followed and a 4xx says the request itself is wrong: trying again
# would only repeat them. The rest may pass on a later try.
RETRIED = frozenset(
    {Outcome.CONNECT_FAILED, Outcome.TIMEOUT, Outcome.PROTOCOL_ERROR, Outcome.HTTP_5XX}
)


class RefusedDestination(Exception):
    """The webhook's host is, or resolved to, an address webhooks may not reach."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"{host} ({address}) is {why}")
        self.host, self.address, self.why = host, address, why

    def __repr__(self) -> str:
        return f"RefusedDestination({self.host!r}, {self.address!r}, {self.why!r})"


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _why_not_public(address: Address) -> str | None:
    for attribute, words in (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, attribute):
            return words
    if not address.is_global:
        return "not a public address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses only, plus the networks the operator allows."""

    allow: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(settings.webhook_networks)

    def refusal(self, text: str) -> str | None:
        """Why a webhook may not connect to the address ``text``, or None when it may."""
        try:
            address = ipaddress.ip_address(text.partition("%")[0])  # drop an IPv6 zone
        except ValueError:
            return "not an IP address"
        candidates: list[Address] = [address]
        if isinstance(address, IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
            candidates.insert(0, inner)  # judged by where it really leads
        if any(c in net for c in candidates for net in self.allow):
            return None
        for candidate in candidates:
            if (why := _why_not_public(candidate)) is not None:
                return why
        return None


def literal_address(host: str) -> Address | None:
    """The IP address ``host`` spells, in any form a resolver would take, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            return None
    return None


def check_url(raw: str, policy: AddressPolicy) -> str:
    """The webhook URL to store, or InvalidWebhook when the URL alone shows it can never be
    delivered. Host names are not resolved here: the check that holds is at connect time."""
    if len(raw) > MAX_URL:
        raise InvalidWebhook(f"a webhook URL is limited to {MAX_URL} characters")
    try:
        url = httpx.URL(raw)  # the parser of the client that will send it
    except httpx.InvalidURL as exc:
        raise InvalidWebhook(f"the webhook URL is not valid: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise InvalidWebhook("a webhook URL must start with http:// or https://")
    if not url.host:
        raise InvalidWebhook("a webhook URL must name a host")
    address = literal_address(url.host)
    if address is not None and (why := policy.refusal(str(address))) is not None:
        raise InvalidWebhook(
            f"webhooks may not go to {address}: it is {why} "
            "(DEPLOYSERVER_WEBHOOK_ALLOW names networks that may be reached)"
        )
    return str(url)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer for webhooks: resolves a host once, keeps only the addresses
    the policy allows, connects to exactly one of those (TLS still checks and names the host
    itself) and checks the peer of the connection it made. DNS rebinding has nothing left
    to change: no name is looked up again after the check."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = resolve) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        allowed = [a for a in addresses if self.policy.refusal(a) is None]
        if not allowed:
            why = self.policy.refusal(addresses[0]) or "refused"
            raise RefusedDestination(host, addresses[0], why)
        failure: Exception | None = None
        for address in allowed:
            try:
                stream = await self.inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            peer = stream.get_extra_info("server_addr")
            refused = self.policy.refusal(str(peer[0])) if peer else "of unknown address"
            if refused is not None:
                await stream.aclose()
                raise RefusedDestination(host, str(peer[0]) if peer else "?", refused)
            return stream
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination(path, path, "a local socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on the GuardedBackend; no proxies (a proxy
    would resolve and connect for us, out of the check's reach)."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = resolve) -> None:
        super().__init__(trust_env=False, limits=httpx.Limits(max_connections=50))
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            # Fail closed: an httpx that keeps its pool elsewhere would connect unguarded.
            raise RuntimeError("this httpx keeps no connection pool where expected")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=50,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(policy, resolver),
        )


def webhook_secret(settings: Settings) -> bytes:
    """The configured secret, else one kept in ``<data-dir>/webhook-secret`` (0600)."""
    if settings.webhook_secret:
        return settings.webhook_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "webhook-secret"
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode()


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _category(status: int) -> Outcome:
    if status < 300:
        return Outcome.DELIVERED
    if status < 400:
        return Outcome.HTTP_3XX
    if status < 500:
        return Outcome.HTTP_4XX
    return Outcome.HTTP_5XX


class WebhookSender:
    """Delivers signed records to webhook URLs, through the guarded transport."""

    def __init__(self, settings: Settings, secret: bytes, resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.secret = secret
        self.policy = AddressPolicy.from_settings(settings)
        self.client = httpx.AsyncClient(
            transport=GuardedTransport(self.policy, resolver),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.webhook_timeout),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post_once(self, url: str, body: bytes) -> Outcome:
        """One try; the receiver's answer body is never read (it could be any size)."""
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self.secret, body)}
        try:
            with anyio.fail_after(self.settings.webhook_timeout):
                async with self.client.stream("POST", url, content=body, headers=headers) as r:
                    return _category(r.status_code)
        except RefusedDestination as exc:
            log.warning("webhook %s refused: %s", url, exc)
            return Outcome.REFUSED_DESTINATION
        except (TimeoutError, httpx.TimeoutException):
            return Outcome.TIMEOUT
        except httpx.ConnectError as exc:
            log.info("webhook %s: cannot connect: %s", url, exc)
            return Outcome.CONNECT_FAILED
        except httpx.HTTPError as exc:
            log.info("webhook %s: %s", url, exc)
            return Outcome.PROTOCOL_ERROR

    async def deliver(self, url: str, body: bytes) -> Outcome:
        """Post ``body`` until delivered, a try that should not be repeated, or the last try."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.webhook_attempts),
            wait=wait_exponential(multiplier=self.settings.webhook_backoff, max=30),
            retry=retry_if_result(lambda outcome: outcome in RETRIED),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        outcome: Outcome = await retrying(self.post_once, url, body)
        if outcome is not Outcome.DELIVERED:
            log.warning("webhook %s not delivered: %s", url, outcome)
        return outcome
