"""Which hosts an endpoint's base URL may point at, so that a URL field cannot
be used to reach inside the network (the cloud's metadata service above all).

The policy is RATCHET_ENDPOINT_ALLOWED_HOSTS, a comma-separated list of:
- host names (`vllm.internal`; `*.example.com` for its subdomains): allowed
  whatever they resolve to, except link-local and metadata addresses;
- IP addresses and CIDR blocks (`10.1.2.3`, `10.0.0.0/8`, `fd00::/8`): the
  addresses allowed, link-local and metadata ones too when listed here,
  since that is an operator's explicit choice;
- `*`: any public address; `private`: private networks (10/8, 172.16/12,
  192.168/16, 100.64/10, fc00::/7); `loopback`: 127/8 and ::1.

The default is `*,private,loopback`: model servers usually live on the same
private network as Ratchet (on-prem, a cluster), and the tests and `make
run` serve one on loopback; refusing those by default would make the
feature unusable where it is most needed. Only ML engineers and staff may
save an endpoint. A deployment whose private network holds services that
must not be reachable narrows the list (e.g. `*` or `vllm.internal`).

Always refused, whatever the list (unless an IP/CIDR entry names them):
link-local addresses (169.254.0.0/16, fe80::/10), the metadata services'
addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...),
unspecified, multicast and reserved addresses; metadata host names
(metadata.google.internal, ...) unless listed by name. Every address a name
resolves to is checked: one bad address refuses the URL. The check runs
when the endpoint is saved and again at request time (client.py resolves
through `addresses_check`, so a connection only ever goes to an address that
passed: DNS may have changed since the save).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_ALLOWED = "*,private,loopback"

# The cloud metadata services, by address and by name (AWS, GCP, Azure,
# Oracle, DigitalOcean, OpenStack: 169.254.169.254; AWS IPv6; Alibaba; Oracle's older one;
# ECS task metadata). Most are link-local already; listed so that a narrowed
# policy (a CIDR covering them) still names them in its refusal.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200", "192.0.0.192")
)
METADATA_NAMES = frozenset(
    ("metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
     "metadata.azure.internal", "metadata.platformequinix.com")
)
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class HostRefused(ValueError):
    """The URL or one of its host's addresses is not allowed; the message
    says which and why, and how to allow it."""


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str] = frozenset()  # exact host names, lower case
    suffixes: tuple[str, ...] = ()  # from `*.example.com`: ".example.com"
    networks: tuple[IPNetwork, ...] = ()  # explicit IPs and CIDRs
    public: bool = False  # `*`
    private: bool = False
    loopback: bool = False
    text: str = field(default="", compare=False)  # the setting, for messages


def host_policy_parse(text: str | None) -> HostPolicy:
    """The policy from the setting's text (None or blank: the default);
    ValueError naming a bad entry."""
    text = DEFAULT_ALLOWED if text is None or not text.strip() else text
    names, suffixes, networks = set(), [], []
    flags = {"*": False, "private": False, "loopback": False}
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry in flags:
            flags[entry] = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        elif _looks_like_host_name(entry):
            names.add(entry.rstrip("."))
        else:
            raise ValueError(
                f"RATCHET_ENDPOINT_ALLOWED_HOSTS: {raw.strip()!r} is not a host name, an IP address, a CIDR block, "
                "'*', 'private' or 'loopback'"
            )
    return HostPolicy(names=frozenset(names), suffixes=tuple(suffixes), networks=tuple(networks),
                      public=flags["*"], private=flags["private"], loopback=flags["loopback"], text=text)


def _looks_like_host_name(entry: str) -> bool:
    labels = entry.rstrip(".").split(".")
    return all(label and len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) for label in labels)


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped or -compatible IPv6 address as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.packed[:12] == bytes(12) and int(address) > 1:  # ::a.b.c.d (deprecated, still routed by some)
            return ipaddress.IPv4Address(address.packed[12:])
    return address


def _in(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def address_refusal(address: IPAddress | str, *, policy: HostPolicy, host_listed: bool = False) -> str | None:
    """Why `address` may not be connected to, or None if it may.
    `host_listed`: the URL's host name is in the policy by name."""
    address = _plain(ipaddress.ip_address(address))
    if _in(address, policy.networks):
        return None  # named by the operator: allowed, even link-local
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if _in(address, LINK_LOCAL):
        return f"{address} is link-local"
    if address.is_unspecified or address.is_multicast:
        return f"{address} is not a unicast address"
    if _in(address, LOOPBACK):  # before is_reserved, which holds ::1 (in ::/8)
        return None if policy.loopback or host_listed else f"{address} is a loopback address"
    if address.is_reserved:
        return f"{address} is a reserved address"
    if host_listed:
        return None
    if _in(address, PRIVATE) or address.is_private:
        return None if policy.private else f"{address} is a private address"
    if address.is_global:
        return None if policy.public else f"{address} is a public address"
    return f"{address} is a special-purpose address"


def host_is_listed(host: str, policy: HostPolicy) -> bool:
    host = host.lower().rstrip(".")
    return host in policy.names or any(host.endswith(suffix) for suffix in policy.suffixes)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (getaddrinfo, both families)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def addresses_check(host: str, addresses: Iterable[str], *, policy: HostPolicy) -> None:
    """HostRefused unless every one of `host`'s addresses is allowed."""
    listed = host_is_listed(host, policy)
    addresses = list(addresses)
    if not addresses:
        raise HostRefused(f"{host} resolves to no address")
    refusals = [reason for a in addresses if (reason := address_refusal(a, policy=policy, host_listed=listed))]
    if refusals:
        raise HostRefused(
            f"{host} is not an allowed endpoint host: {'; '.join(refusals)}. "
            f"RATCHET_ENDPOINT_ALLOWED_HOSTS ({policy.text!r}) decides which hosts are allowed (docs/configuration.md)."
        )


def url_check(url: str, *, policy: HostPolicy, resolver: Callable[[str, int], list[str]] = resolve) -> str:
    """Check a base URL: http or https, a host and no credentials in it, and
    every address its host resolves to allowed now. Returns the URL without
    a trailing slash; HostRefused saying what is wrong otherwise."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HostRefused(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise HostRefused(f"base_url must start with http:// or https://, not {parts.scheme or 'nothing'}://")
    if parts.username is not None or parts.password is not None:
        raise HostRefused("base_url must not carry credentials (user:password@); put the key in api_key")
    if parts.query or parts.fragment:
        raise HostRefused("base_url must have no query or fragment: e.g. http://host:8000/v1")
    host = (parts.hostname or "").lower()
    if not host:
        raise HostRefused("base_url has no host: e.g. http://host:8000/v1")
    if host.rstrip(".") in METADATA_NAMES and host.rstrip(".") not in policy.names:
        raise HostRefused(f"{host} is a cloud metadata service's name, refused by default")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise HostRefused(f"{host} does not resolve ({exc})") from None
    addresses_check(host, addresses, policy=policy)
    return url.rstrip("/")
