"""What Gradio's upload route keeps is bounded (issue 17 #11).

POST /gradio_api/upload stores every file it is sent in Gradio's cache folder, where it stays until
the cache is cleaned (`delete_cache`): 100 files of 1.3 MB in one request were accepted, while the
documents' own limits (documents.max_upload_files, max_file_mb) applied only when indexing. This
ASGI middleware answers an upload before Gradio stores anything when the cache folder already holds
server.upload_cache_mb, or the request declares more bytes than documents.max_upload_files files of
documents.max_file_mb; while the body streams in it counts bytes and multipart parts and stops the
request (413) as soon as either goes over, so a request without a length is bounded too.
"""
from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import JSONResponse


class _Refused(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it does not exist); files that vanish meanwhile count 0."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _boundary(content_type: str) -> bytes | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    return None


class UploadLimit:
    """ASGI middleware in front of the Gradio app (`app_kwargs={"middleware": [...]}`)."""

    def __init__(self, app, max_files: int, max_bytes: int, max_cache_bytes: int, cache_dir: str):
        self.app = app
        self.max_files, self.max_bytes = max_files, max_bytes
        self.max_cache_bytes, self.cache_dir = max_cache_bytes, Path(cache_dir)

    async def __call__(self, scope, receive, send):
        if not (scope["type"] == "http" and scope.get("method") == "POST"
                and scope.get("path", "").rstrip("/").endswith("/gradio_api/upload")):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            self._admit(headers)
            await self.app(scope, self._counting(receive, _boundary(headers.get("content-type", ""))), watch)
        except _Refused as refused:
            if started:
                raise
            await JSONResponse({"detail": refused.detail}, status_code=refused.status)(scope, receive, send)

    def _admit(self, headers: dict[str, str]) -> None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _Refused(413, f"An upload may hold at most {self.max_bytes / 1e6:.0f} MB.")
        if folder_bytes(self.cache_dir) >= self.max_cache_bytes:
            raise _Refused(507, "The server holds as many uploaded files as it may (server.upload_cache_mb); "
                                "try again later.")

    def _counting(self, receive, boundary: bytes | None):
        delimiter = b"--" + boundary if boundary else None
        seen, found, tail = 0, 0, b""

        async def counted():
            nonlocal seen, found, tail
            message = await receive()
            if message["type"] != "http.request":
                return message
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                raise _Refused(413, f"An upload may hold at most {self.max_bytes / 1e6:.0f} MB.")
            if delimiter is not None:
                window = tail + body                # an occurrence split across two pieces counts once
                found += window.count(delimiter)
                tail = window[-(len(delimiter) - 1):]
                if found - 1 > self.max_files:      # n parts have n + 1 delimiters, the closing one included
                    raise _Refused(413, f"An upload may hold at most {self.max_files} files.")
            return message

        return counted
