"""Uploaded files: where they live on disk, their metadata, and the references jobs carry.

An upload (``POST /v1/uploads``) is one file under the app's upload directory::

    <upload_dir>/<tenant folder>/<upload id>        the bytes, as received
    <upload_dir>/<tenant folder>/<upload id>.json   its metadata (`UploadMeta`), a JSON sidecar
    <upload_dir>/<tenant folder>/<upload id>.part   while it is being received (never read)

The upload id is generated (``upl_`` + 128 random bits in hex) and is the only name on disk:
the client's file name is metadata, never part of a path. The tenant folder is the tenant's
name when it is a plain identifier, else a hash of it (``_admin`` for uploads of no tenant);
the sidecar records the tenant itself, and that is what access checks compare, so two tenants
sharing a folder (a case-insensitive file system) still never read each other's files.

A job refers to an upload with `upload_ref` (``{"$upload": "<id>", "tenant": "<tenant>"}``)
in its payload; its handler opens it with ``ctx.file(ref)`` (or gets ``ctx.file_path(ref)``),
which refuses a reference to an upload of another tenant than the job's exactly as a missing
one (`UploadNotFound`). Metadata lives beside the file rather than in the backend: no schema
change, and the metadata goes when the file goes (`conveyor.file_cleanup` deletes both).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import UploadNotFound, ValidationError
from .inputs import brief

#: The key of a file reference in a job's payload.
REF_KEY = "$upload"
#: Environment variable naming the upload directory of apps created without ``upload_dir``.
UPLOAD_DIR_ENV = "CONVEYOR_UPLOAD_DIR"

_ID = re.compile(r"upl_[0-9a-f]{32}")
_PLAIN_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
NO_TENANT_FOLDER = "_admin"
#: The longest client file name kept in the metadata (characters; longer ones are cut).
MAX_FILENAME = 255


@dataclass(slots=True)
class UploadMeta:
    """What is known of one upload (its JSON sidecar). ``job`` is the id of the job it was
    submitted with (None until that job is stored); ``filename`` the client's name, as given
    (cut to `MAX_FILENAME`), never used as a path."""

    id: str
    tenant: str | None
    size: int
    sha256: str
    content_type: str
    filename: str | None
    created: float
    job: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadMeta:
        return cls(
            id=str(data["id"]),
            tenant=data.get("tenant"),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            content_type=str(data.get("content_type") or "application/octet-stream"),
            filename=data.get("filename"),
            created=float(data["created"]),
            job=data.get("job"),
        )


def new_upload_id() -> str:
    return f"upl_{secrets.token_hex(16)}"


def is_upload_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def upload_ref(upload_id: str, tenant: str | None) -> dict[str, Any]:
    """The reference a job's payload carries to an upload of ``tenant``."""
    return {REF_KEY: upload_id, "tenant": tenant}


def parse_ref(ref: object, default_tenant: str | None) -> tuple[str, str | None]:
    """(upload id, tenant) of a reference: a dict made by `upload_ref`, or a bare upload id
    (then the tenant is ``default_tenant``: the job's own). Raises `ValidationError`."""
    if isinstance(ref, str):
        upload_id, tenant = ref, default_tenant
    elif isinstance(ref, dict) and REF_KEY in ref:
        upload_id, tenant = ref[REF_KEY], ref.get("tenant")
    else:
        raise ValidationError(
            f'a file reference is {{"{REF_KEY}": "<upload id>", "tenant": ...}} or an upload '
            f"id, got {brief(ref)}",
            field="file",
        )
    if not is_upload_id(upload_id):
        raise ValidationError(f"not an upload id: {brief(upload_id)}", field="file")
    if tenant is not None and not isinstance(tenant, str):
        raise ValidationError(f"a file reference's tenant must be a string, got {brief(tenant)}",
                              field="file")  # fmt: skip
    return upload_id, tenant


def tenant_folder(tenant: str | None) -> str:
    """The folder name of ``tenant``'s uploads: the name itself when it is a plain identifier
    (no dot first: never ``.`` or ``..``), else ``~`` and a hash of it."""
    if tenant is None:
        return NO_TENANT_FOLDER
    if _PLAIN_TENANT.fullmatch(tenant):
        return tenant
    return "~" + hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be
    opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class UploadStore:
    """The upload directory of an app. Blocking file calls: async callers run them in a
    thread. Every lookup validates the id first, so no caller-supplied string becomes a path."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"UploadStore({str(self.root)!r})"

    def folder(self, tenant: str | None, *, create: bool = False) -> Path:
        path = self.root / tenant_folder(tenant)
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def path(self, upload_id: str, tenant: str | None) -> Path:
        """Where the bytes of ``upload_id`` of ``tenant`` are (whether or not they exist)."""
        if not is_upload_id(upload_id):
            raise UploadNotFound(upload_id)
        return self.folder(tenant) / upload_id

    def read(self, upload_id: str, tenant: str | None) -> UploadMeta | None:
        """The metadata of ``tenant``'s upload, or None (unknown id, another tenant's, gone)."""
        if not is_upload_id(upload_id):
            return None
        meta = self._load(self.folder(tenant) / f"{upload_id}.json")
        if meta is None or meta.id != upload_id or meta.tenant != tenant:
            return None
        return meta

    def find(self, upload_id: str) -> UploadMeta | None:
        """The metadata of ``upload_id`` whatever its tenant (admin reads), or None."""
        if not is_upload_id(upload_id) or not self.root.is_dir():
            return None
        for sidecar in self.root.glob(f"*/{upload_id}.json"):
            meta = self._load(sidecar)
            # The sidecar must be in its tenant's folder: a file moved by hand is not found.
            if (
                meta is not None
                and meta.id == upload_id
                and sidecar.parent.name == tenant_folder(meta.tenant)
            ):
                return meta
        return None

    def write(self, meta: UploadMeta) -> None:
        """Store ``meta`` as the sidecar of its upload, atomically (readers see the old or the
        new document, never a part) and durably."""
        folder = self.folder(meta.tenant, create=True)
        final = folder / f"{meta.id}.json"
        tmp = folder / f"{meta.id}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(meta.to_dict()))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(folder)

    def remove(self, upload_id: str, tenant: str | None) -> bool:
        """Delete the upload's file, sidecar and any leftover part. Idempotent: True when
        something was deleted."""
        if not is_upload_id(upload_id):
            return False
        folder = self.folder(tenant)
        removed = False
        for name in (upload_id, f"{upload_id}.part", f"{upload_id}.json.tmp", f"{upload_id}.json"):
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()
                removed = True
        return removed

    def readable(self, ref: object, job_tenant: str | None) -> tuple[UploadMeta, Path]:
        """The metadata and path of the upload ``ref`` names, for a job of ``job_tenant``.
        Raises `ValidationError` for a malformed reference and `UploadNotFound` when the
        upload is gone, unknown, or of another tenant than the job's (the same answer)."""
        upload_id, tenant = parse_ref(ref, job_tenant)
        if tenant != job_tenant:
            raise UploadNotFound(upload_id)
        meta = self.read(upload_id, tenant)
        path = self.folder(tenant) / upload_id
        if meta is None or not path.is_file():
            raise UploadNotFound(upload_id)
        return meta, path

    @staticmethod
    def _load(sidecar: Path) -> UploadMeta | None:
        try:
            data = orjson.loads(sidecar.read_bytes())
            return UploadMeta.from_dict(data) if isinstance(data, dict) else None
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def store_from(upload_dir: str | os.PathLike[str] | None) -> UploadStore | None:
    """The store of an app's ``upload_dir`` option, else of ``$CONVEYOR_UPLOAD_DIR``, else
    None (the app has no uploads)."""
    chosen = upload_dir if upload_dir is not None else os.environ.get(UPLOAD_DIR_ENV) or None
    return None if chosen is None else UploadStore(chosen)


__all__ = [
    "REF_KEY",
    "UploadMeta",
    "UploadNotFound",
    "UploadStore",
    "is_upload_id",
    "new_upload_id",
    "parse_ref",
    "upload_ref",
]
