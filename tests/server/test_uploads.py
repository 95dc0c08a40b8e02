"""``POST /v1/uploads`` and ``ctx.file``: a file streamed to disk under a generated name, its job
reading it through the reference in its payload, the limits (size, content types), tenant
isolation of the file and its reference, flat memory for a large upload, and the delayed
cleanup after the job ended."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from conveyor import Conveyor, Hooks
from conveyor.server import ServerSettings
from tests.conftest import eventually
from tests.server.conftest import client
from tests.server.harness import ApiServer

MIB = 1024 * 1024
STORED_NAME = re.compile(r"upl_[0-9a-f]{32}(\.json)?")
BOUNDARY = "conveyor-test-boundary-7f3a"


def settings_in(tmp_path: Path, **kw: Any) -> ServerSettings:
    return ServerSettings(upload_dir=tmp_path / "uploads", **kw)


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def multipart(
    fields: dict[str, str],
    chunks: Iterable[bytes],
    *,
    filename: bytes = b"data.bin",
    content_type: bytes = b"application/octet-stream",
) -> AsyncIterator[bytes]:
    """A multipart body streamed from ``chunks`` (never held whole): the fields, then the file.
    The file name is raw bytes, so that hostile names reach the server as sent."""

    async def body() -> AsyncIterator[bytes]:
        for name, value in fields.items():
            yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                   f"{value}\r\n").encode()  # fmt: skip
        yield (b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"; '
               b'filename="' + filename + b'"\r\nContent-Type: ' + content_type + b"\r\n\r\n")  # fmt: skip
        for chunk in chunks:
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    return body()


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


async def upload(
    http: httpx.AsyncClient, data: bytes, task: str = "digest", options: Any = None, **kw: Any
) -> httpx.Response:
    form = {"task": task} if options is None else {"task": task, "options": json.dumps(options)}
    ctype = kw.pop("content_type", "text/plain")
    return await http.post("/v1/uploads", data=form,
                           files={"file": (kw.pop("filename", "notes.txt"), data, ctype)}, **kw)  # fmt: skip


async def finished(store: Conveyor, job_id: str) -> Any:
    async def ended() -> Any:
        job = await store.get(job_id)
        return job if job.status.is_final else None

    return await eventually(ended, timeout=20, what=f"job {job_id} to end")


async def test_an_uploaded_file_reaches_its_handler_through_ctx_file(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path
) -> None:
    # Given a server with a worker, and a tenant's key
    srv = serve(settings_in(tmp_path), worker={"concurrency": 2})
    key = await keys("acme")
    data = b"hello conveyor\n" * 1000
    async with client(srv, key) as http:
        # When a file is uploaded for the digest task, with payload and options
        r = await upload(http, data, options={"payload": {"note": "x"}, "priority": "high"})
        # Then it is accepted with the job and the upload's metadata
        assert r.status_code == 202, r.text
        body = r.json()
        up, job = body["upload"], body["job"]
        assert body["created"] is True and r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert up["size"] == len(data) and up["sha256"] == hashlib.sha256(data).hexdigest()
        assert up["content_type"] == "text/plain" and up["filename"] == "notes.txt"
        assert up["tenant"] == "acme" and up["job"] == job["id"]
        assert job["payload"] == {"note": "x", "file": {"$upload": up["id"], "tenant": "acme"}}
        assert job["tenant"] == "acme"
        # And the handler read the same bytes through ctx.file
        done = await finished(store, job["id"])
        assert done.status == "completed", done.error
        assert done.result == {"sha256": up["sha256"], "size": len(data), "filename": "notes.txt"}
        # And the metadata and the content read back for the owner
        meta = await http.get(f"/v1/uploads/{up['id']}")
        assert meta.status_code == 200 and meta.json() == up
        content = await http.get(f"/v1/uploads/{up['id']}/content")
        assert content.status_code == 200 and content.content == data
        assert content.headers["content-type"] == "application/octet-stream"
        assert content.headers["x-content-type-options"] == "nosniff"
        assert content.headers["content-disposition"].startswith("attachment")
    # And on disk: a generated name in the tenant's folder, no part file left
    files = stored_files(tmp_path / "uploads")
    assert [p.relative_to(tmp_path / "uploads").as_posix() for p in files] == [
        f"acme/{up['id']}",
        f"acme/{up['id']}.json",
    ]


async def test_a_file_over_the_size_limit_is_413_and_nothing_stays_on_disk(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a server accepting files up to 1 MiB
    srv = serve(settings_in(tmp_path, max_upload_bytes=MIB))
    key = await keys("acme")
    async with client(srv, key) as http:
        # When a 3 MiB file is streamed (chunked: no Content-Length to refuse it early)
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=multipart({"task": "digest"}, [b"x" * 65536] * 48))  # fmt: skip
        # Then it is refused with 413 naming the limit, and the partial file is gone
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "too_large" and str(MIB) in r.json()["error"]["message"]
        assert stored_files(tmp_path / "uploads") == []
        # When one declares a Content-Length over the limit
        r = await upload(http, b"y" * (6 * MIB))
        # Then it is refused too, and the server still answers the next request
        assert r.status_code == 413
        ok = await upload(http, b"small")
        assert ok.status_code == 202, ok.text
    assert len(stored_files(tmp_path / "uploads")) == 2


@pytest.mark.parametrize(
    "filename",
    [
        b"../../etc/passwd",
        b"/etc/passwd",
        b"..\\..\\windows\\win.ini",
        b"a\x00b.txt",
        b"n" * 1000,
        b"./.",
        b"\xff\xfe bad utf-8",
    ],
    ids=["traversal", "absolute", "backslashes", "nul", "very-long", "dots", "not-utf8"],
)
async def test_client_file_names_never_become_paths(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path, filename: bytes
) -> None:
    # Given a server with a worker
    srv = serve(settings_in(tmp_path), worker={"concurrency": 1})
    key = await keys("acme")
    async with client(srv, key) as http:
        # When a file is uploaded under a hostile name
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=multipart({"task": "digest"}, [b"payload"], filename=filename))  # fmt: skip
        # Then it is stored under a generated name only, in the tenant's folder
        assert r.status_code == 202, r.text
        up = r.json()["upload"]
        files = stored_files(tmp_path / "uploads")
        assert {p.parent for p in files} == {tmp_path / "uploads" / "acme"}
        assert all(STORED_NAME.fullmatch(p.name) for p in files), files
        # And nothing was written outside the upload directory
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            p.name for p in tmp_path.iterdir() if p.name != "etc"
        )
        assert not (tmp_path / "etc").exists()
        # And the client's name is kept as metadata only, cut to 255 characters
        assert up["filename"] is not None and len(up["filename"]) <= 255
        done = await finished(store, r.json()["job"]["id"])
        assert done.status == "completed" and done.result["filename"] == up["filename"]


async def test_content_types_outside_the_allow_list_are_415(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a server that accepts plain text and any image
    srv = serve(settings_in(tmp_path, upload_types=("text/plain", "image/*")))
    key = await keys("acme")
    async with client(srv, key) as http:
        # Then allowed types are accepted (parameters and case aside)
        for ctype in ("text/plain", "image/png", "Text/Plain; charset=utf-8"):
            r = await upload(http, b"ok", content_type=ctype)
            assert r.status_code == 202, (ctype, r.text)
        # And another type is refused with 415 naming it, leaving no file
        before = stored_files(tmp_path / "uploads")
        r = await upload(http, b"%PDF-1.4", content_type="application/pdf")
        assert r.status_code == 415 and "application/pdf" in r.json()["error"]["message"]
        assert stored_files(tmp_path / "uploads") == before


async def test_bad_upload_requests_are_refused_naming_the_problem(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    srv = serve(settings_in(tmp_path))
    key = await keys("acme")
    async with client(srv, key) as http:
        # A JSON body instead of a form: 415
        r = await http.post("/v1/uploads", json={"task": "digest"})
        assert r.status_code == 415 and "multipart" in r.json()["error"]["message"]
        # An unknown task: 422 naming it
        r = await upload(http, b"x", task="nope")
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_task"
        # Options that are not JSON: 400; an unknown option or a bad value: 422 naming it
        r = await http.post("/v1/uploads", data={"task": "digest", "options": "{nope"},
                            files={"file": ("a", b"x")})  # fmt: skip
        assert r.status_code == 400 and "options" in r.json()["error"]["message"]
        r = await upload(http, b"x", options={"colour": "red"})
        assert r.status_code == 422 and "options.colour" in r.json()["error"]["message"]
        r = await upload(http, b"x", options={"priority": "urgent!"})
        assert r.status_code == 422 and "priority" in r.json()["error"]["message"]
        r = await upload(http, b"x", options={"payload": {"file": 1}})
        assert r.status_code == 422 and "file_field" in r.json()["error"]["message"]
        # No task, no file, an unknown field, a field twice: 422 naming it
        r = await http.post("/v1/uploads", files={"file": ("a", b"x")})
        assert r.status_code == 422 and "'task'" in r.json()["error"]["message"]
        r = await http.post("/v1/uploads", data={"task": "digest"}, files={"other": ("a", b"x")})
        assert r.status_code == 422 and "'other'" in r.json()["error"]["message"]
        r = await http.post("/v1/uploads", data={"task": "digest"},
                            files=[("file", ("a", b"x")), ("file", ("b", b"y"))])  # fmt: skip
        assert r.status_code == 422 and "twice" in r.json()["error"]["message"]
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="task"'
                            f"\r\n\r\ndigest\r\n--{BOUNDARY}--\r\n")  # fmt: skip
        assert r.status_code == 422 and "'file'" in r.json()["error"]["message"]
        # A body cut short, or garbage: 400
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"'
                            "\r\n\r\nunfinished")  # fmt: skip
        assert r.status_code == 400 and "boundary" in r.json()["error"]["message"]
        r = await http.post("/v1/uploads", headers=MULTIPART, content=b"\x00garbage" * 100)
        assert r.status_code == 400
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=multipart({"task": "digest"}, [b"x"], filename=b"n" * 10_000))  # fmt: skip
        assert r.status_code == 400 and "header size" in r.json()["error"]["message"]
        r = await http.post("/v1/uploads", headers={"content-type": "multipart/form-data"},
                            content=b"x")  # fmt: skip
        assert r.status_code == 400 and "boundary" in r.json()["error"]["message"]
    # None of them left a file behind
    assert stored_files(tmp_path / "uploads") == []


async def test_uploads_need_a_key_that_may_write(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    srv = serve(settings_in(tmp_path))
    reader = await keys("acme", read_only=True)
    # Without a key: 401; with a read-only key: 403; nothing stored
    async with client(srv) as http:
        assert (await upload(http, b"x")).status_code == 401
        assert (await http.get("/v1/uploads/upl_" + "0" * 32)).status_code == 401
    async with client(srv, reader) as http:
        r = await upload(http, b"x")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert stored_files(tmp_path / "uploads") == []


async def test_another_tenants_upload_is_not_found_and_its_reference_is_refused(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path
) -> None:
    # Given an upload of tenant A
    srv = serve(settings_in(tmp_path), worker={"concurrency": 2})
    key_a, key_b, admin = await keys("tenant-a"), await keys("tenant-b"), await keys(admin=True)
    async with client(srv, key_a) as a:
        r = await upload(a, b"secret of A", options={"delay": 3600})
        assert r.status_code == 202, r.text
        up = r.json()["upload"]
    async with client(srv, key_b) as b:
        # When tenant B asks for it: 404, exactly as for an upload that does not exist
        missing = await b.get("/v1/uploads/upl_" + "0" * 32)
        for path in (f"/v1/uploads/{up['id']}", f"/v1/uploads/{up['id']}/content"):
            r = await b.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
            assert r.json()["error"]["message"].replace(up["id"], "X") == missing.json()[
                "error"]["message"].replace("upl_" + "0" * 32, "X")  # fmt: skip
        # When B's jobs carry A's reference, as it is or claiming B's tenant, or a bare id
        refs = [up["ref"], {"$upload": up["id"], "tenant": "tenant-b"}, up["id"]]
        jobs = []
        for ref in refs:
            r = await b.post("/v1/jobs", json={"task": "digest", "payload": {"file": ref}})
            assert r.status_code == 202, r.text
            jobs.append(r.json()["job"]["id"])
        # When B submits the built-in cleanup task for A's upload
        r = await b.post("/v1/jobs", json={"task": "conveyor.upload_cleanup",
                         "payload": {"upload": up["id"], "tenant": "tenant-a", "ttl": 0}})  # fmt: skip
        assert r.status_code == 202, r.text
        cleanup = await finished(store, r.json()["job"]["id"])
        # Then it refuses to run for a tenant's job, and A's file stays
        assert cleanup.status == "failed" and "internal" in cleanup.error["message"]
        assert (tmp_path / "uploads" / "tenant-a" / up["id"]).is_file()
    # Then each job fails with "not found", without a byte of A's file
    for job_id in jobs:
        done = await finished(store, job_id)
        assert done.status == "failed" and "not found" in done.error["message"]
        assert "secret" not in json.dumps(done.error)
    # And an admin reads it, anywhere or under its tenant
    async with client(srv, admin) as http:
        assert (await http.get(f"/v1/uploads/{up['id']}")).json()["tenant"] == "tenant-a"
        r = await http.get(f"/v1/uploads/{up['id']}/content", params={"tenant": "tenant-a"})
        assert r.content == b"secret of A"
        r = await http.get(f"/v1/uploads/{up['id']}", params={"tenant": "tenant-b"})
        assert r.status_code == 404


async def test_an_admin_upload_for_a_tenant_belongs_to_that_tenant(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path
) -> None:
    # Given an admin uploading for tenant acme
    srv = serve(settings_in(tmp_path), worker={"concurrency": 1})
    admin, acme = await keys(admin=True), await keys("acme")
    async with client(srv, admin) as http:
        r = await upload(http, b"for acme", options={"tenant": "acme"})
        assert r.status_code == 202, r.text
    up = r.json()["upload"]
    # Then the file is in acme's folder, acme reads it, and acme's job reads it
    assert up["tenant"] == "acme" and (tmp_path / "uploads" / "acme" / up["id"]).is_file()
    async with client(srv, acme) as http:
        assert (await http.get(f"/v1/uploads/{up['id']}/content")).content == b"for acme"
    done = await finished(store, r.json()["job"]["id"])
    assert done.status == "completed", done.error


async def test_a_repeated_idempotency_key_keeps_the_first_upload(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    srv = serve(settings_in(tmp_path))
    key = await keys("acme")
    async with client(srv, key) as http:
        # Given an upload with an idempotency key
        first = await upload(http, b"first", headers={"Idempotency-Key": "k1"})
        assert first.status_code == 202, first.text
        # When the same key is sent with another file
        again = await upload(http, b"second", headers={"Idempotency-Key": "k1"})
        # Then the first job and upload are answered, and the second file is not kept
        assert again.status_code == 202 and again.json()["created"] is False
        assert again.json()["job"]["id"] == first.json()["job"]["id"]
        assert again.json()["upload"] == first.json()["upload"]
    assert len(stored_files(tmp_path / "uploads")) == 2


async def test_the_file_is_deleted_after_its_job_ended_and_the_ttl_passed(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path
) -> None:
    # Given a server with a worker (default queues: the cleanup queue too) and a 0.5 s ttl
    srv = serve(settings_in(tmp_path, upload_ttl=0.5), worker={"concurrency": 2})
    key = await keys("acme")
    async with client(srv, key) as http:
        # When a file is uploaded and its job completes
        r = await upload(http, b"short-lived")
        assert r.status_code == 202, r.text
        up = r.json()["upload"]
        done = await finished(store, r.json()["job"]["id"])
        assert done.status == "completed", done.error
        # Then the file and its metadata are gone soon after, and the upload reads 404
        await eventually(lambda: stored_files(tmp_path / "uploads") == [], timeout=20,
                         what="the cleanup job to delete the upload")  # fmt: skip
        assert (await http.get(f"/v1/uploads/{up['id']}")).status_code == 404


async def test_the_file_is_kept_while_its_job_has_not_ended(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path
) -> None:
    # Given a 0.2 s ttl, and an upload whose job waits an hour
    srv = serve(settings_in(tmp_path, upload_ttl=0.2), worker={"concurrency": 1})
    key = await keys("acme")
    async with client(srv, key) as http:
        r = await upload(http, b"keep me", options={"delay": 3600})
        up = r.json()["upload"]

        # When the first cleanup has run (it reschedules itself)
        async def rescheduled() -> bool:
            runs = [j async for j in _cleanup_jobs(store)]
            return any(j.status == "completed" and j.result == "rescheduled" for j in runs)

        await eventually(rescheduled, timeout=20, what="a cleanup run")
        # Then the file is still there for its job
        assert (await http.get(f"/v1/uploads/{up['id']}/content")).content == b"keep me"


async def _cleanup_jobs(store: Conveyor) -> AsyncIterator[Any]:
    page = await store.list(task="conveyor.upload_cleanup", limit=100)
    for job in page.jobs:
        yield job


@pytest.mark.slow
# The body never reaches the backend: one store is enough for 500 MB through the parser.
@pytest.mark.parametrize("server_backend_url", ["sqlite"], indirect=True)
async def test_a_500_mb_upload_streams_with_flat_server_memory(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a server accepting 600 MB, in this very process (its RSS is ours)
    srv = serve(settings_in(tmp_path, max_upload_bytes=600 * MIB))
    key = await keys("acme")
    chunk = bytes(range(256)) * 4096  # 1 MiB, one object sent 500 times
    expected = hashlib.sha256()
    for _ in range(500):
        expected.update(chunk)
    proc = psutil.Process()
    async with client(srv, key) as http:
        assert (await upload(http, b"warm-up")).status_code == 202
        before = proc.memory_info().rss
        # When 500 MiB are streamed from a generator
        r = await http.post("/v1/uploads", headers=MULTIPART,
                            content=multipart({"task": "digest"}, (chunk for _ in range(500))),
                            timeout=120.0)  # fmt: skip
        after = proc.memory_info().rss
    # Then it is stored whole, and the process grew by far less than the file
    assert r.status_code == 202, r.text
    up = r.json()["upload"]
    assert up["size"] == 500 * MIB and up["sha256"] == expected.hexdigest()
    assert (tmp_path / "uploads" / "acme" / up["id"]).stat().st_size == 500 * MIB
    assert after - before < 50 * MIB, f"RSS grew by {(after - before) / MIB:.0f} MiB"


async def test_an_upload_cut_off_by_the_client_leaves_no_file(
    serve: Callable[..., ApiServer], keys: Any, tmp_path: Path
) -> None:
    # Given a client that stops sending in the middle of its file and drops the connection
    srv = serve(settings_in(tmp_path))
    key = await keys("acme")

    def cut_short() -> Iterable[bytes]:
        yield b"x" * MIB
        raise ConnectionAbortedError("the client gives up")

    async with client(srv, key) as http:
        with pytest.raises(ConnectionAbortedError):
            await http.post("/v1/uploads", headers=MULTIPART,
                            content=multipart({"task": "digest"}, cut_short()))  # fmt: skip
        # Then the server drops the partial file, logs no error, and serves the next upload
        await eventually(lambda: stored_files(tmp_path / "uploads") == [],
                         what="the partial file to be removed")  # fmt: skip
        assert (await upload(http, b"next")).status_code == 202


class LockTheStoreBeforeTheJob(Hooks):
    """Before the upload's job (not its cleanup job) is stored, another connection holds the
    SQLite write lock for ``hold`` seconds: the job's enqueue commits after the server's
    deadline has already answered 503."""

    def __init__(self, db: str, hold: float) -> None:
        self.db, self.hold, self.fired = db, hold, False

    def before_enqueue(self, jobs: Any) -> None:
        if self.fired or not any(j.task == "digest" for j in jobs):
            return
        self.fired = True
        conn = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        threading.Timer(self.hold, lambda: (conn.rollback(), conn.close())).start()


@pytest.mark.parametrize("server_backend_url", ["sqlite"], indirect=True)
async def test_a_job_stored_after_the_deadline_answered_keeps_its_file(
    serve: Callable[..., ApiServer], store: Conveyor, keys: Any, tmp_path: Path,
    server_backend_url: str,
) -> None:  # fmt: skip
    # Given a server whose backend deadline is short, and a store that is locked while the
    # upload's job is being stored (its cleanup job is stored before)
    db = server_backend_url.removeprefix("sqlite:///").split("?")[0]
    hook = LockTheStoreBeforeTheJob(db, hold=1.0)
    srv = serve(settings_in(tmp_path, backend_timeout=0.3), hooks=[hook])
    key = await keys("acme")
    async with client(srv, key) as http:
        # When a file is uploaded
        r = await upload(http, b"late but stored")
        # Then the server answers 503 (its deadline passed) ...
        assert r.status_code == 503, r.text

    # ... while the job was stored once the lock was gone
    async def stored() -> Any:
        page = await store.list(task="digest", limit=10)
        return page.jobs or None

    (job,) = await eventually(stored, what="the job to be stored after the lock")
    # And the file its payload refers to is still there for it
    ref = job.payload["file"]
    files = [p.name for p in stored_files(tmp_path / "uploads")]
    assert ref["$upload"] in files, (ref, files)

    # And its metadata names the job, so that the cleanup does not take it for an orphan
    def names_the_job() -> bool:
        sidecar = tmp_path / "uploads" / "acme" / f"{ref['$upload']}.json"
        return sidecar.exists() and json.loads(sidecar.read_text()).get("job") == job.id

    await eventually(names_the_job, what="the upload's metadata to name its job")
