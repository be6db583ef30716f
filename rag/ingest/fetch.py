"""Fetch a web page for ingestion, guarded against reaching into the host's own network.

Only http(s). Every hop's host is resolved and refused if any address is loopback, private,
link-local (cloud metadata lives there), multicast or reserved, unless the config allows private
addresses. Redirects are followed by hand so that each hop is checked; the body is read in pieces
and cut off at the size limit.
"""
from __future__ import annotations

import ipaddress
import socket
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


def _address_is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # is_global excludes private, loopback, link-local, reserved, documentation and shared (CGNAT,
    # 100.64/10 — where some clouds put their metadata service) ranges; multicast is never a web page.
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise SourceError unless `url` is http(s) and its host resolves only to allowed addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SourceError(f"{url}: only http:// and https:// URLs can be added")
    if not parts.hostname:
        raise SourceError(f"{url}: the URL has no host name")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise SourceError(f"{url}: the host name '{parts.hostname}' does not resolve") from None
    for info in infos:
        if not _address_is_public(str(info[4][0])):
            raise SourceError(f"{url}: refused, it points to a local or private address ({info[4][0]}); "
                              "set documents.allow_private_urls to allow it")


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


def fetch(url: str, timeout_s: float, max_bytes: int, allow_private: bool = False) -> Page:
    headers = {"User-Agent": "voice-rag/0.1 (+self-hosted document assistant)"}
    with httpx.Client(timeout=timeout_s, follow_redirects=False, headers=headers) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allow_private)
            try:
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
                    body = bytearray()
                    for piece in response.iter_bytes():
                        body.extend(piece)
                        if len(body) > max_bytes:
                            raise SourceError(f"{url}: more than {max_bytes / 1e6:.0f} MB; download stopped")
                    return Page(str(response.url), bytes(body),
                                _kind(response.headers.get("content-type", ""), str(response.url)))
            except httpx.TimeoutException:
                raise SourceError(f"{url}: no answer within {timeout_s:.0f} s") from None
            except httpx.HTTPError as err:
                raise SourceError(f"{url}: could not download ({type(err).__name__})") from None
    raise SourceError(f"{url}: more than {MAX_REDIRECTS} redirects")
