"""Task data: any dataset spec → labelled train/validation/test splits, tokenised and cached.

A spec is a catalog name (``autocompress assets list``), a local CSV/TSV/JSONL/JSON/parquet file,
or a Hugging Face hub dataset id (``owner/name``, needs internet). Texts and labels are read from
``text_column``/``label_column``; labels may be strings or integers and are mapped to ids in
sorted order. When the data lacks a validation or test split, a deterministic stratified split
is made from ``seed`` and recorded in :attr:`TaskData.split_info`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from . import assets, cache
from .errors import UserError
from .tasks import DEFAULT_TASK

SPLITS = ("train", "validation", "test")
datasets.disable_progress_bars()  # reading and tokenising take seconds; their bars are noise
_READERS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True)
class TaskData:
    """Labelled text classification data. Each split has columns ``text`` (str), ``label`` (int)."""

    name: str
    splits: dict[str, pd.DataFrame] = field(repr=False)
    label_names: tuple[str, ...]
    split_info: dict = field(repr=False)
    kind: str = DEFAULT_TASK  # what a model is fine-tuned on it for (autocompress.tasks)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def fingerprint(self) -> str:
        """sha256 over the label names and every split's texts and labels."""
        digest = hashlib.sha256("\x1f".join(self.label_names).encode())
        for split in SPLITS:
            frame = self.splits[split]
            digest.update(split.encode())
            digest.update(pd.util.hash_pandas_object(frame[["text", "label"]], index=False).values.tobytes())
        return digest.hexdigest()

    def sizes(self) -> dict[str, int]:
        return {split: len(self.splits[split]) for split in SPLITS}

    def subsample(self, seed: int = 0, **sizes: int) -> "TaskData":
        """A smaller copy, e.g. ``subsample(train=256, test=128)``; other splits unchanged."""
        splits = dict(self.splits)
        for split, n in sizes.items():
            frame = splits[split]
            if n < len(frame):
                splits[split] = frame.sample(n=n, random_state=seed).reset_index(drop=True)
        info = {**self.split_info, "subsample": {"seed": seed, **sizes}}
        return replace(self, splits=splits, split_info=info)

    def describe(self) -> dict:
        return {"name": self.name, "labels": list(self.label_names), "sizes": self.sizes(),
                "fingerprint": self.fingerprint, "split": self.split_info}


def load_task(spec: str, *, text_column: str = "text", label_column: str = "label",
              seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> TaskData:
    """Load ``spec`` (catalog name, local file or hub id) as :class:`TaskData`."""
    dedupe = False
    if spec in assets.CATALOG:
        asset = assets.get(spec)
        if asset.kind != "dataset":
            raise UserError(f"'{spec}' is a model, not a dataset; datasets: {_catalog('dataset')}")
        folder = assets.fetch(spec)
        reader = asset.reader
        if (folder / reader["file"]).is_file():
            raw = {"train": pd.read_csv(folder / reader["file"])}
            text_column, label_column = reader["text_column"], reader["label_column"]
            raw["train"] = raw["train"][~raw["train"][label_column].isin(reader.get("drop_labels", []))]
        else:  # fetched from the hub: parquet splits
            raw = _read_parquet_folder(folder)
        dedupe = True
    elif Path(spec).expanduser().exists():
        raw = _read_file(Path(spec).expanduser())
    elif "/" in spec and not spec.startswith((".", "/", "~")):
        raw = _read_hub(spec)
    else:
        raise UserError(f"unknown dataset '{spec}': not a catalog name ({_catalog('dataset')}), "
                        "not an existing file, not a hub id (owner/name)")

    frames = {name: _normalise(frame, spec, name, text_column, label_column) for name, frame in raw.items()}
    if dedupe:
        frames = _drop_duplicates(frames)
    label_names, frames = _encode_labels(frames, spec)
    splits, info = _split(frames, seed, fractions)
    return TaskData(name=spec, splits=splits, label_names=label_names, split_info=info)


def _catalog(kind: str) -> str:
    return ", ".join(a.name for a in assets.CATALOG.values() if a.kind == kind)


def _read_file(path: Path) -> dict[str, pd.DataFrame]:
    suffixes = [s for s in path.suffixes if s in _READERS]
    if path.is_dir() or not suffixes:
        raise UserError(f"{path}: expected a .csv, .tsv, .jsonl, .json or .parquet file")
    builder = _READERS[suffixes[-1]]
    kwargs = {"delimiter": "\t"} if suffixes[-1] == ".tsv" else {}
    try:
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:
        raise UserError(f"{path}: cannot read as {builder}: {exc}") from exc
    return {"train": loaded.to_pandas()}


def _read_parquet_folder(folder: Path) -> dict[str, pd.DataFrame]:
    files = {split: sorted(str(p) for p in folder.rglob(f"*{split}*.parquet")) for split in SPLITS}
    files = {k: v for k, v in files.items() if v}
    if not files:
        raise UserError(f"{folder}: no parquet split files")
    loaded = datasets.load_dataset("parquet", data_files=files)
    return {name: ds.to_pandas() for name, ds in loaded.items()}


def _read_hub(dataset_id: str) -> dict[str, pd.DataFrame]:
    try:
        loaded = datasets.load_dataset(dataset_id)
    except Exception as exc:
        raise UserError(f"cannot load hub dataset '{dataset_id}' ({type(exc).__name__}): the hub may be "
                        f"unreachable; pass a local CSV/JSONL/parquet file or a catalog name "
                        f"({_catalog('dataset')})") from exc
    out = {}
    for name, ds in loaded.items():
        frame = ds.to_pandas()
        feature = ds.features.get("label")
        if isinstance(feature, datasets.ClassLabel) and "label" in frame:
            frame = frame[frame["label"] >= 0]  # unlabelled test splits use -1
            frame["label"] = [feature.names[i] for i in frame["label"]]
        out[name] = frame
    return out


def _normalise(frame: pd.DataFrame, spec: str, split: str, text_column: str, label_column: str) -> pd.DataFrame:
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise UserError(f"{spec}: no column {', '.join(repr(m) for m in missing)}; columns are "
                        f"{', '.join(map(str, frame.columns))} (use --text-column/--label-column)")
    out = pd.DataFrame({"text": frame[text_column], "label": frame[label_column]})
    out = out[out["text"].notna() & out["label"].notna()]
    out["text"] = out["text"].astype(str).str.strip()
    out = out[out["text"] != ""]
    return out.reset_index(drop=True)


def _drop_duplicates(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    seen: set[str] = set()
    out = {}
    for name in [s for s in SPLITS if s in frames] + [s for s in frames if s not in SPLITS]:
        frame = frames[name].drop_duplicates("text")
        frame = frame[~frame["text"].isin(seen)]
        seen.update(frame["text"])
        out[name] = frame.reset_index(drop=True)
    return out


def _encode_labels(frames: dict[str, pd.DataFrame], spec: str):
    values = pd.concat([f["label"] for f in frames.values()], ignore_index=True)
    if values.empty:
        raise UserError(f"{spec}: the dataset has no labelled rows with text")
    if pd.api.types.is_numeric_dtype(values):
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise UserError(f"{spec}: numeric labels must be integers (classification), got e.g. {values.iloc[0]}")
        uniques = sorted({int(v) for v in values})
        names = tuple(str(v) for v in uniques)
        lookup = {v: i for i, v in enumerate(uniques)}
        convert = lambda col: col.astype(int).map(lookup)  # noqa: E731
    else:
        uniques = sorted({str(v) for v in values})
        names = tuple(uniques)
        lookup = {v: i for i, v in enumerate(uniques)}
        convert = lambda col: col.astype(str).map(lookup)  # noqa: E731
    if len(names) < 2:
        raise UserError(f"{spec}: only one class ({names[0]!r}); classification needs at least two")
    return names, {k: f.assign(label=convert(f["label"]).astype("int64")) for k, f in frames.items()}


def _split(frames: dict[str, pd.DataFrame], seed: int, fractions) -> tuple[dict, dict]:
    from sklearn.model_selection import train_test_split

    present = [s for s in SPLITS if s in frames and len(frames[s])]
    pool = frames.get("train")
    if pool is None:  # a single split with another name: treat it as the pool
        pool = pd.concat(list(frames.values()), ignore_index=True)
        present = []
    info: dict = {"seed": seed, "given": present, "made": []}
    out = {s: frames[s] for s in present if s != "train"}
    missing = [s for s in ("validation", "test") if s not in out]
    total = len(pool) + sum(len(f) for f in out.values())
    for split in missing:
        share = fractions[SPLITS.index(split)]
        n = max(1, round(share * total))
        if n >= len(pool):
            raise UserError(f"too few rows ({len(pool)}) to make a {split} split")
        stratify = pool["label"] if pool["label"].value_counts().min() >= 2 else None
        pool, held = train_test_split(pool, test_size=n, random_state=seed, stratify=stratify)
        out[split] = held
        info["made"].append({"split": split, "rows": n, "stratified": stratify is not None})
    out["train"] = pool
    splits = {s: out[s].sort_index().reset_index(drop=True) for s in SPLITS}
    if splits["train"]["label"].nunique() < 2:
        raise UserError("the training split has a single class")
    return splits, info


# ---------------------------------------------------------------- tokenisation


def tokenized_key(task: TaskData, tokenizer_id: str, max_length: int) -> str:
    return cache.sha256_json([task.fingerprint, tokenizer_id, max_length])[:24]


def tokenized(task: TaskData, tokenizer, *, tokenizer_id: str, max_length: int = 128) -> datasets.DatasetDict:
    """``task`` tokenised (input ids, attention mask, labels; unpadded), cached on disk.

    The cache key is the data fingerprint, ``tokenizer_id`` (a hash of the tokenizer files) and
    ``max_length``.
    """
    folder = cache.home() / "tokenized" / tokenized_key(task, tokenizer_id, max_length)
    if (folder / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(folder))
    dd = datasets.DatasetDict({s: datasets.Dataset.from_pandas(task.splits[s], preserve_index=False)
                               for s in SPLITS})
    dd = dd.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_length),
                batched=True, remove_columns=["text"], desc="tokenise")
    dd = dd.rename_column("label", "labels")
    with cache.atomic_dir(folder) as tmp:
        dd.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(folder))
