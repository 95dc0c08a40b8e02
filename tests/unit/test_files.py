"""`conveyor.files` and `conveyor.file_cleanup` without a server: folder names that cannot
escape the upload directory, references checked against the job's tenant, metadata that round
trips, and when the cleanup deletes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import Conveyor, UploadNotFound, ValidationError
from conveyor.file_cleanup import CLEANUP_QUEUE, CLEANUP_TASK, ORPHAN_GRACE, due_at
from conveyor.files import (
    UploadMeta,
    UploadStore,
    new_upload_id,
    parse_ref,
    tenant_folder,
    upload_ref,
)
from conveyor.job import Job, JobState


@pytest.mark.parametrize(
    "tenant", ["..", ".", "../x", "a/b", "a\\b", "/abs", "_admin", "", "x" * 512, "é", "a\tb"]
)
def test_a_tenant_folder_is_one_plain_name_inside_the_upload_dir(tenant: str) -> None:
    # Given any tenant string storage accepts, When its folder is named
    name = tenant_folder(tenant)
    # Then it is one path component, not a dot name, and not the tenant-less folder
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert name != "_admin" and 0 < len(name) <= 64
    assert (Path("/up") / name).parent == Path("/up")


def test_plain_tenants_keep_their_name_and_no_tenant_has_its_own_folder() -> None:
    assert tenant_folder("acme") == "acme" and tenant_folder("team-1.eu") == "team-1.eu"
    assert tenant_folder(None) == "_admin"
    assert tenant_folder("a/b") != tenant_folder("a\\b")


def _stored(store: UploadStore, tenant: str | None, data: bytes = b"x") -> UploadMeta:
    meta = UploadMeta(new_upload_id(), tenant, len(data), "0" * 64, "text/plain", "f", 1.0)
    store.folder(tenant, create=True).joinpath(meta.id).write_bytes(data)
    store.write(meta)
    return meta


def test_a_reference_opens_only_for_a_job_of_the_uploads_tenant(tmp_path: Path) -> None:
    # Given an upload of tenant a
    store = UploadStore(tmp_path)
    meta = _stored(store, "a", b"hello")
    # Then a job of tenant a finds it by reference or by bare id
    for ref in (upload_ref(meta.id, "a"), meta.id):
        got, path = store.readable(ref, "a")
        assert got == meta and path.read_bytes() == b"hello"
    # And jobs of another tenant, or of none, do not, whatever the reference claims
    for ref, job_tenant in [(upload_ref(meta.id, "a"), "b"), (upload_ref(meta.id, "b"), "b"),
                            (meta.id, "b"), (meta.id, None), (upload_ref(meta.id, None), None)]:  # fmt: skip
        with pytest.raises(UploadNotFound):
            store.readable(ref, job_tenant)


@pytest.mark.parametrize(
    "ref", [{"$upload": "../../etc/passwd"}, "upl_../x", 42, {"file": "x"}, {"$upload": "upl_1"}]
)
def test_a_malformed_reference_is_a_validation_error(ref: object) -> None:
    with pytest.raises(ValidationError):
        parse_ref(ref, "a")


def test_a_removed_upload_is_gone_and_removing_again_is_harmless(tmp_path: Path) -> None:
    store = UploadStore(tmp_path)
    meta = _stored(store, None)
    assert store.find(meta.id) == meta
    assert store.remove(meta.id, None) is True
    assert store.remove(meta.id, None) is False
    assert store.find(meta.id) is None and list(tmp_path.rglob("*.*")) == []


def _job(status: JobState, finished_at: float | None = None) -> Job:
    return Job(id="j", queue="q", task="t", payload={}, priority=0, status=status,
               finished_at=finished_at)  # fmt: skip


def test_the_cleanup_deletes_ttl_after_the_job_ended_and_waits_while_it_runs() -> None:
    now = 1000.0
    # A finished job: finished_at + ttl
    assert due_at(0.0, _job(JobState.COMPLETED, 990.0), "j", 60.0, now) == 1050.0
    assert due_at(0.0, _job(JobState.FAILED, 100.0), "j", 60.0, now) == 160.0
    # A job not ended: checked again later, at least 1 s and at most an hour away
    assert due_at(0.0, _job(JobState.ACTIVE), "j", 0.1, now) == now + 1.0
    assert due_at(0.0, _job(JobState.QUEUED), "j", 86400.0, now) == now + 3600.0
    # A job gone: now; no job named: after the orphan grace
    assert due_at(0.0, None, "j", 60.0, now) == now
    assert due_at(500.0, None, None, 60.0, now) == 500.0 + ORPHAN_GRACE


def test_an_app_with_an_upload_dir_has_the_cleanup_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no CONVEYOR_UPLOAD_DIR, an app without upload_dir has no uploads and no task
    monkeypatch.delenv("CONVEYOR_UPLOAD_DIR", raising=False)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert Conveyor(url).uploads is None and CLEANUP_TASK not in Conveyor(url).tasks
    # With the option, or the environment variable, it has both (queue "conveyor")
    app = Conveyor(url, upload_dir=tmp_path / "u")
    assert app.uploads is not None and app.uploads.root == tmp_path / "u"
    assert app.tasks[CLEANUP_TASK].options.queue == CLEANUP_QUEUE
    monkeypatch.setenv("CONVEYOR_UPLOAD_DIR", str(tmp_path / "env"))
    env_app = Conveyor(url)
    assert env_app.uploads is not None and env_app.uploads.root == tmp_path / "env"
    # And setting it again (the server does) keeps one task
    env_app.use_uploads(tmp_path / "server")
    assert env_app.uploads.root == tmp_path / "server" and CLEANUP_QUEUE in env_app.queues()
