"""Receiving a ``multipart/form-data`` upload straight to disk, with flat memory.

Starlette's form parser spools every file part into memory or a temporary file before the route
sees it, with no size limit of ours; this module reads ``request.stream()`` through
python-multipart's streaming `MultipartParser` instead. The ``file`` part is written as it
arrives to ``<upload id>.part`` in the tenant's folder (buffered up to `WRITE_CHUNK`, written
and hashed in a thread so the event loop never blocks on the disk); its bytes are counted and
the upload is refused (413) as soon as it passes ``max_upload_bytes``; its declared content
type is checked against the allow-list (415) as soon as its headers end. Small text fields
(``task``, ``options``) are kept in memory, up to `MAX_FIELD_BYTES`.

On any refusal the part file is deleted and the rest of the body is read and dropped (up to
`DRAIN_LIMIT` bytes) so that the client, still sending, reads the error rather than a reset
connection. A received file is fsynced (data, then its directory after the rename) before the
caller stores anything that refers to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from ..files import MAX_FILENAME, UploadStore, fsync_dir
from .errors import ApiError

#: Bytes of file data gathered before one write to disk.
WRITE_CHUNK = 1024 * 1024
#: The largest text field (``options`` carries the job's payload).
MAX_FIELD_BYTES = 2 * 1024 * 1024
#: Room in the body for the text fields, part headers and boundaries beyond the file itself.
BODY_OVERHEAD = MAX_FIELD_BYTES * 2
#: After a refusal, at most this many more bytes are read and dropped before answering.
DRAIN_LIMIT = 64 * 1024 * 1024
FIELDS = ("file", "task", "options")


@dataclass(slots=True)
class Received:
    """A body read to its end: the file in ``<id>.part`` (not yet fsynced) and the fields."""

    part: Path
    size: int
    sha256: str
    content_type: str
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the uploaded file is larger than {limit} bytes",
                    extra={"limit": limit})  # fmt: skip


def _type_allowed(content_type: str, allowed: tuple[str, ...] | None) -> bool:
    if allowed is None:
        return True
    major = content_type.split("/", 1)[0]
    return any(a == content_type or a == f"{major}/*" or a == "*/*" for a in allowed)


def boundary_of(content_type: str | None) -> bytes:
    """The multipart boundary of a request's Content-Type (415 / 400 otherwise)."""
    kind, params = parse_options_header(content_type or "")
    if kind.lower() != b"multipart/form-data":
        raise ApiError(415, "unsupported_media",
                       "an upload is a multipart/form-data body (fields: file, task, options)")  # fmt: skip
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "bad_request", "the multipart Content-Type has no valid boundary")
    return boundary


class _Part:
    __slots__ = ("content_type", "disposition", "field", "filename", "header", "name")

    def __init__(self) -> None:
        self.header = b""
        self.name: str | None = None
        self.filename: str | None = None
        self.content_type = "application/octet-stream"
        self.disposition = b""
        self.field = b""


class UploadReceiver:
    """One upload body. ``await receive(stream)`` returns what it held (`Received`) or raises
    `ApiError` after deleting the part file and draining the body."""

    def __init__(
        self, store: UploadStore, tenant: str | None, upload_id: str, limit: int,
        allowed: tuple[str, ...] | None,
    ) -> None:  # fmt: skip
        self.folder = store.folder(tenant)
        self.store = store
        self.tenant = tenant
        self.part_path = self.folder / f"{upload_id}.part"
        self.limit = limit
        self.allowed = None if allowed is None else tuple(a.lower() for a in allowed)
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._part: _Part | None = None
        self._file_seen = False
        self._file_done = False
        self._content_type = "application/octet-stream"
        self._filename: str | None = None
        self._fields: dict[str, str] = {}
        self._ended = False
        self._header_field = b""
        self._header_value = b""

    # -- parser callbacks (sync; an ApiError raised here stops the parse) -----------------------

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        assert part is not None
        name = self._header_field.strip().lower()
        value = self._header_value.strip()
        self._header_field = self._header_value = b""
        if name == b"content-disposition":
            _, params = parse_options_header(value)
            raw_name = params.get(b"name")
            part.name = None if raw_name is None else raw_name.decode("utf-8", "replace")
            raw_file = params.get(b"filename")
            if raw_file is not None:
                part.filename = raw_file.decode("utf-8", "replace")[:MAX_FILENAME]
        elif name == b"content-type":
            kind, _ = parse_options_header(value)
            part.content_type = kind.decode("latin-1").lower() or part.content_type

    def _on_headers_finished(self) -> None:
        part = self._part
        assert part is not None
        if part.name not in FIELDS:
            shown = "(none)" if part.name is None else repr(part.name[:50])
            raise ApiError(422, "invalid", f"unknown form field {shown}: an upload has the "
                           "fields file, task and options", extra={"field": "form"})  # fmt: skip
        if part.name in self._fields or (part.name == "file" and self._file_seen):
            raise ApiError(422, "invalid", f"the form field {part.name!r} is given twice",
                           extra={"field": part.name})  # fmt: skip
        if part.name == "file":
            if not _type_allowed(part.content_type, self.allowed):
                raise ApiError(415, "unsupported_media",
                               f"content type {part.content_type[:100]!r} is not accepted; "
                               f"allowed: {', '.join(self.allowed or ())}",
                               extra={"field": "file"})  # fmt: skip
            self._file_seen = True
            self._content_type = part.content_type
            self._filename = part.filename

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        chunk = data[start:end]
        if part.name == "file":
            self._size += len(chunk)
            if self._size > self.limit:
                raise _too_large(self.limit)
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
        else:
            part.field += chunk
            if len(part.field) > MAX_FIELD_BYTES:
                raise ApiError(413, "too_large", f"the form field {part.name!r} is larger than "
                               f"{MAX_FIELD_BYTES} bytes", extra={"field": part.name})  # fmt: skip

    def _on_part_end(self) -> None:
        part = self._part
        assert part is not None and part.name is not None
        if part.name == "file":
            self._file_done = True
        else:
            try:
                self._fields[part.name] = part.field.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "invalid", f"the form field {part.name!r} is not UTF-8 text",
                               extra={"field": part.name}) from None  # fmt: skip
        self._part = None

    def _on_end(self) -> None:
        self._ended = True

    # -- the stream ------------------------------------------------------------------------------

    def _open(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def _write(self, chunks: list[bytes]) -> None:
        assert self._file is not None
        for c in chunks:
            self._hash.update(c)
            self._file.write(c)

    async def _flush(self, force: bool = False) -> None:
        if self._pending and (force or self._pending_bytes >= WRITE_CHUNK):
            chunks, self._pending, self._pending_bytes = self._pending, [], 0
            await asyncio.to_thread(self._write, chunks)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _discard(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.part_path.unlink()

    async def receive(self, boundary: bytes, stream: AsyncIterator[bytes]) -> Received:
        parser = MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin, "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished, "on_end": self._on_end,
        })  # type: ignore[arg-type]  # fmt: skip
        body_limit = self.limit + BODY_OVERHEAD
        seen = 0
        try:
            await asyncio.to_thread(self._open)
            async for chunk in stream:
                seen += len(chunk)
                if seen > body_limit:  # fields and headers beyond any reasonable size
                    raise _too_large(self.limit)
                if not chunk or self._ended:
                    continue  # an epilogue after the closing boundary is ignored
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:  # its messages name a byte at most
                    raise ApiError(400, "bad_request",
                                   f"the multipart body is malformed: {str(exc)[:200]}") from None  # fmt: skip
                await self._flush()
            if not self._ended:
                raise ApiError(400, "bad_request", "the multipart body ends before its closing "
                               "boundary")  # fmt: skip
            if not self._file_seen or not self._file_done:
                raise ApiError(422, "invalid", "the form field 'file' is missing",
                               extra={"field": "file"})  # fmt: skip
            await self._flush(force=True)
            await asyncio.to_thread(self._close)
        except ClientDisconnect:  # nobody reads the answer; not a server error either
            self._discard()
            raise ApiError(400, "bad_request", "the client went away during the upload") from None
        except BaseException as exc:
            self._discard()  # synchronous: it must happen even when the task is cancelled
            if isinstance(exc, ApiError):
                await _drain(stream)
            raise
        return Received(self.part_path, self._size, self._hash.hexdigest(), self._content_type,
                        self._filename, self._fields)  # fmt: skip


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read and drop the rest of a refused body (bounded), so the client can read the answer."""
    dropped = 0
    with contextlib.suppress(Exception):
        async for chunk in stream:
            dropped += len(chunk)
            if dropped > DRAIN_LIMIT:
                return


def commit(received: Received, final: Path) -> None:
    """Make the received file durable under its final name (blocking)."""
    fd = os.open(received.part, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(received.part, final)
    fsync_dir(final.parent)
