"""Signed releases: central's TUF repository, the offline signing keys, and the kiosk's
verifying client against it over real HTTP, including each attack TUF is there to stop."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tuf_kit import TufServer, tuf_server

from biblioedge.agent.release_client import ReleaseClient, ReleaseUnavailable
from biblioedge.fleet.releases import ReleaseRefused
from biblioedge.provisioning.tuf_offline import SigningError, init_keys, sign_targets
from biblioedge.releases import SoftwareRelease, software_target, wheel_target


def client(srv: TufServer, tmp: Path, name: str = "kiosk") -> ReleaseClient:
    root = srv.repo.root_bytes(1)
    assert root is not None
    return ReleaseClient(tmp / name / "tuf", srv.url, None, bootstrap=root)


def test_kiosk_verifies_and_downloads_a_release(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        srv.software("1.0.0")
        kiosk = client(srv, tmp_path)
        kiosk.refresh()
        info = kiosk.info(software_target("1.0.0"))
        got = kiosk.fetch(info, tmp_path / "dl" / "release.json")
        release = SoftwareRelease.model_validate_json(got.path.read_text())
        assert release.version == "1.0.0" and got.downloaded
        wheel = release.files("x86_64", "gate")[0]
        seen: list[int] = []
        w = kiosk.fetch(kiosk.info(wheel_target(wheel)), tmp_path / "dl" / wheel, seen.append)
        assert w.downloaded and sum(seen) == w.path.stat().st_size  # progress adds up
        # a second fetch finds the verified file and downloads nothing
        again = kiosk.fetch(kiosk.info(wheel_target(wheel)), tmp_path / "dl" / wheel)
        assert not again.downloaded
        # the trusted metadata persisted: a new client (a restarted kiosk) needs no bootstrap
        assert (tmp_path / "kiosk" / "tuf" / "root.json").exists()
        restarted = ReleaseClient(tmp_path / "kiosk" / "tuf", srv.url, None)
        restarted.refresh()
        assert restarted.info(software_target("1.0.0")).length == info.length
        with pytest.raises(ReleaseUnavailable) as exc:
            restarted.info(software_target("9.9.9"))
        assert exc.value.reason == "unknown_release"


def test_tampered_artifact_is_refused_by_the_kiosk(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        release = srv.software("1.0.0")
        wheel = release.files("x86_64", "gate")[0]
        target = srv.repo.list_targets()
        (stored,) = [t for t in target if t.path == wheel_target(wheel)]
        on_disk = srv.repo.targets_dir / "wheels" / f"{stored.sha256}.{wheel}"
        data = bytearray(on_disk.read_bytes())
        data[100] ^= 0xFF  # one bit flipped by an attacker on the LAN or on central's disk
        on_disk.chmod(0o644)
        on_disk.write_bytes(bytes(data))
        kiosk = client(srv, tmp_path)
        kiosk.refresh()
        with pytest.raises(ReleaseUnavailable) as exc:
            kiosk.fetch(kiosk.info(wheel_target(wheel)), tmp_path / "dl" / wheel)
        assert exc.value.reason == "tampered"
        assert not (tmp_path / "dl" / wheel).exists()  # nothing half-verified is left
        # endless data: the file served is longer than signed
        on_disk.write_bytes(bytes(data) + b"\0" * 100_000)
        with pytest.raises(ReleaseUnavailable) as exc:
            kiosk.fetch(kiosk.info(wheel_target(wheel)), tmp_path / "dl" / wheel)
        assert exc.value.reason == "tampered"


def test_central_refuses_wrong_key_replay_and_missing_artifacts(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        srv.software("1.0.0")
        doc = tmp_path / "doc.json"
        doc.write_text('{"name": "site", "version": "1", "config": {}}')
        # signed with keys that are not the root's targets key
        other = tmp_path / "other-keys"
        init_keys(other, srv.repo.online_public())
        forged = sign_targets(
            other, {"config/site/1.json": (doc, {"kind": "config"})}, base=srv.signed[-1]
        )
        with pytest.raises(ReleaseRefused) as exc:
            srv.repo.publish(forged)
        assert exc.value.reason == "bad_signature"
        # an older targets metadata replayed
        with pytest.raises(ReleaseRefused) as exc:
            srv.repo.publish(srv.signed[0])
        assert exc.value.reason == "bad_version"
        # properly signed, but the artifact was never uploaded
        unsent = sign_targets(srv.keys, {"config/site/1.json": (doc, {"kind": "config"})})
        with pytest.raises(ReleaseRefused) as exc:
            srv.repo.publish(unsent)
        assert exc.value.reason == "missing_artifact"
        # a target name that is no release kind
        with pytest.raises(SigningError):
            sign_targets(srv.keys, {"../../etc/passwd": (doc, {})})
        # a body that is not what its name says
        upload = srv.repo.receive("0" * 64)
        upload.write(b"something else")
        with pytest.raises(ReleaseRefused) as exc:
            upload.finish()
        assert exc.value.reason == "hash_mismatch"
        assert not list(srv.repo.incoming.glob("*"))
        # nothing refused changed what central serves
        assert srv.repo.targets() is not None
        assert srv.repo.targets().signed.version == 2  # type: ignore[union-attr]


def test_kiosk_refuses_metadata_replayed_from_an_older_version(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        srv.software("1.0.0")
        old_timestamp = (srv.repo.metadata_dir / "timestamp.json").read_bytes()
        kiosk = client(srv, tmp_path)
        srv.software("1.1.0")
        kiosk.refresh()  # the kiosk has seen the newer timestamp
        assert kiosk.info(software_target("1.1.0"))
        # a man in the middle (or a restored backup) serves the older timestamp
        (srv.repo.metadata_dir / "timestamp.json").write_bytes(old_timestamp)
        with pytest.raises(ReleaseUnavailable) as exc:
            kiosk.refresh()
        assert exc.value.reason == "rollback_attack"


def test_expired_metadata_blocks_installs_until_central_resigns(tmp_path: Path) -> None:
    # 8 s of life: the first refresh has to come within it even on a loaded machine (CI once
    # took longer than the 1.5 s this test used to give)
    with tuf_server(tmp_path, timestamp_days=8 / 86400) as srv:
        srv.software("1.0.0")
        kiosk = client(srv, tmp_path)
        kiosk.refresh()
        expires = datetime.fromisoformat(srv.repo.describe()["timestamp_expires"])
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.1)
        with pytest.raises(ReleaseUnavailable) as exc:
            kiosk.refresh()
        assert exc.value.reason == "expired_metadata"
        assert srv.repo.refresh()  # central's schedule re-signs it
        kiosk.refresh()
        assert kiosk.info(software_target("1.0.0"))


def test_cut_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        release = srv.software("1.0.0", payload=os.urandom(100_000))
        wheel = release.files("x86_64", "gate")[0]
        kiosk = client(srv, tmp_path)
        kiosk.refresh()
        info = kiosk.info(wheel_target(wheel))
        served = f"/tuf/targets/wheels/{info.hashes['sha256']}.{wheel}"
        srv.cutter.paths.add(served)
        got = kiosk.fetch(info, tmp_path / "dl" / wheel)
        assert srv.cutter.cut == [served]  # the connection really was cut
        assert kiosk.fetcher.resumed >= 1
        assert got.path.stat().st_size == info.length


def test_root_rotation_needs_old_and_new_keys(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        from tuf.api.metadata import Metadata, Root

        from biblioedge.provisioning.tuf_offline import SERIALIZER, OfflineKeys

        keys = OfflineKeys(srv.keys)
        root = Metadata[Root].from_bytes(srv.repo.root_bytes(1) or b"")
        root.signed.version = 2
        root.signatures.clear()
        root.sign(keys.signer("root"))
        srv.repo.set_root(root.to_bytes(SERIALIZER))
        assert srv.repo.root().signed.version == 2  # type: ignore[union-attr]
        # a root that names some other online key is refused: central could not sign with it
        bad = Metadata[Root].from_bytes(srv.repo.root_bytes(2) or b"")
        bad.signed.version = 3
        bad.signed.roles["timestamp"].keyids = list(bad.signed.roles["root"].keyids)
        bad.signatures.clear()
        bad.sign(keys.signer("root"))
        with pytest.raises(ReleaseRefused) as exc:
            srv.repo.set_root(bad.to_bytes(SERIALIZER))
        assert exc.value.reason == "wrong_online_key"
        # a kiosk bootstrapped with root 1 follows the rotation
        kiosk = client(srv, tmp_path)
        kiosk.refresh()
        stored = json.loads((tmp_path / "kiosk" / "tuf" / "root.json").read_text())
        assert stored["signed"]["version"] == 2


def test_served_names_are_checked(tmp_path: Path) -> None:
    with tuf_server(tmp_path) as srv:
        import httpx

        for path in (
            "/tuf/metadata/../keys/tuf-timestamp.pem",
            "/tuf/metadata/x.pem",
            "/tuf/targets/../../keys/tuf-snapshot.pem",
            "/tuf/targets/wheels/abc.x.whl",
        ):
            assert httpx.get(srv.url + path).status_code == 404
        r = httpx.get(srv.url + "/tuf/metadata/timestamp.json")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
        shutil.rmtree(srv.repo.incoming)
