"""Fetch a web page for ingestion, guarded against reaching into the host's own network.

Only http(s). Every hop's host is resolved and refused if any address is loopback, private,
link-local (cloud metadata lives there), multicast or reserved, unless the config allows private
addresses; an IPv6 address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible
::a.b.c.d, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo) is judged by the IPv4
address too. Redirects are followed by hand so that each hop is checked; the body is read in pieces
and cut off at the size limit.

The address that was checked is the one connected to (_PinnedTransport): each hop's host is looked
up once, and the request goes to that IP with the original Host header and TLS server name, so a
name that answers a public address to the check and loopback to the connection (DNS rebinding)
reaches nothing it should not.

The size limit holds for what arrives and for what it expands to: the request asks for plain
(identity) bytes, the raw bytes are counted as they arrive, and a server that compresses anyway
(gzip, deflate) is decompressed here, never more than the limit at a time, so a 100 KB gzip bomb
cannot become 100 MB in memory. Other encodings (br, zstd) are refused: they were not asked for.
"""
from __future__ import annotations

import ipaddress
import socket
import zlib
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from common.errors import SourceError

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Page:
    url: str               # final URL after redirects
    content: bytes
    kind: str              # "html", "pdf", "text", "md", "docx"


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through (mapped, compatible, NAT64, 6to4, Teredo)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        found.extend(ip.teredo)
    if int(ip) >> 32 == 0 or any(ip in net for net in _NAT64):     # ::a.b.c.d, 64:ff9b::a.b.c.d
        found.append(low32)
    return found


def _address_is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if ip.ipv4_mapped:
            return _address_is_public(str(ip.ipv4_mapped))
        if embedded and not all(_address_is_public(str(v4)) for v4 in embedded):
            return False
    # is_global excludes private, loopback, link-local, reserved, documentation and shared (CGNAT,
    # 100.64/10 — where some clouds put their metadata service) ranges; multicast is never a web page.
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private: bool = False) -> str:
    """The address to connect to for `url`: raise SourceError unless `url` is http(s) and its host
    resolves (one lookup) only to allowed addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url}: only http:// and https:// URLs can be added")
    if not parts.hostname:
        raise SourceError(f"{url}: the URL has no host name")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        raise SourceError(f"{url}: the host name '{parts.hostname}' does not resolve") from None
    if not infos:
        raise SourceError(f"{url}: the host name '{parts.hostname}' does not resolve")
    for info in infos if not allow_private else ():
        if not _address_is_public(str(info[4][0])):
            raise SourceError(f"{url}: refused, it points to a local or private address ({info[4][0]}); "
                              "set documents.allow_private_urls to allow it")
    return str(infos[0][4][0]).split("%")[0]


class _PinnedTransport(httpx.HTTPTransport):
    """Connects each request to the address check_url approved for its host, never to what a second
    DNS lookup says; the Host header (set when the request was built) and the TLS server name (SNI,
    and the name the certificate is checked against) stay the URL's own."""

    def __init__(self, allow_private: bool, **kwargs):
        super().__init__(**kwargs)
        self.allow_private = allow_private

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = check_url(str(request.url), self.allow_private)
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": request.url.host}
        request.url = request.url.copy_with(host=address)
        return super().handle_request(request)


def _kind(content_type: str, url: str) -> str:
    ctype = content_type.split(";")[0].strip().lower()
    path = urlsplit(url).path.lower()
    if ctype == "application/pdf" or path.endswith(".pdf"):
        return "pdf"
    if "html" in ctype or path.endswith((".html", ".htm")):
        return "html"
    if path.endswith((".md", ".markdown")):
        return "md"
    if ctype.startswith("text/") or ctype in ("", "application/json"):
        return "text"
    if path.endswith(".docx"):
        return "docx"
    raise SourceError(f"{url}: unsupported content type '{ctype}'")


def _decompressor(encoding: str, url: str):
    """A bounded decoder for the body's Content-Encoding; None for plain bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise SourceError(f"{url}: the server sent '{encoding[:40]}'-compressed data though plain was asked for; "
                      "not downloaded")


def _read_body(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    """The body, decoded, counting bytes as they arrive and as they expand; stops past `max_bytes`."""
    def over() -> SourceError:
        return SourceError(f"{url}: more than {max_bytes / 1e6:.0f} MB; download stopped")

    decoder = _decompressor(response.headers.get("content-encoding", ""), url)
    body, wire = bytearray(), 0
    try:
        for raw in response.iter_raw():          # raw: as sent, never expanded by httpx
            wire += len(raw)
            if wire > max_bytes:
                raise over()
            if decoder is None:
                body += raw
                continue
            while raw:                           # at most what is left of the limit, plus one byte
                body += decoder.decompress(raw, max_bytes - len(body) + 1)
                if len(body) > max_bytes:
                    raise over()
                raw = decoder.unconsumed_tail
        if decoder is not None:
            body += decoder.flush(max_bytes - len(body) + 1)
    except zlib.error:
        raise SourceError(f"{url}: the compressed download is corrupt") from None
    if len(body) > max_bytes:
        raise over()
    return bytes(body)


def fetch(url: str, timeout_s: float, max_bytes: int, allow_private: bool = False) -> Page:
    headers = {"User-Agent": "voice-rag/0.1 (+self-hosted document assistant)", "Accept-Encoding": "identity"}
    with httpx.Client(timeout=timeout_s, follow_redirects=False, headers=headers,
                      transport=_PinnedTransport(allow_private)) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:                                 # the transport checks and pins each hop's address
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code >= 400:
                        raise SourceError(f"{url}: the server answered HTTP {response.status_code}")
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > max_bytes:
                        raise SourceError(f"{url}: {declared / 1e6:.1f} MB is over the "
                                          f"{max_bytes / 1e6:.0f} MB download limit")
                    body = _read_body(response, url, max_bytes)
                    # `url`, not response.url: the transport sent the request to the pinned IP
                    return Page(url, body, _kind(response.headers.get("content-type", ""), url))
            except httpx.TimeoutException:
                raise SourceError(f"{url}: no answer within {timeout_s:.0f} s") from None
            except httpx.HTTPError as err:
                raise SourceError(f"{url}: could not download ({type(err).__name__})") from None
    raise SourceError(f"{url}: more than {MAX_REDIRECTS} redirects")
