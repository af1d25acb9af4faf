"""The search-space file format every space kind shares: where spaces are found (shipped in
``builtin/`` or a path), the ``distill`` and ``fidelity`` sections, and the value checks that
turn a bad file into one clear line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

SCHEMA = "autocompress.space/v1"
GROUPS = {"attention": ("q", "k", "v", "attn_out"), "ffn": ("ffn_in", "ffn_out")}
KD_KINDS = {"none": {}, "logits": {"logits": 1.0}, "logits+hidden": {"logits": 1.0, "hidden": 1.0},
            "logits+hidden+attention": {"logits": 1.0, "hidden": 1.0, "attention": 1.0}}
BUILTIN = Path(__file__).resolve().parent / "builtin"  # shipped as package data

SPACE_KEYS = ("schema", "name", "kind", "description", "tie_layers", "layers", "distill", "fidelity",
              "only_paying_knobs")
DISTILL_KEYS = ("kind", "steps", "lr", "temperature", "batch_size")
_FIDELITY = ("screen_steps", "screen_examples", "screen_score", "min_promote", "promote_slack", "promote")
PROMOTE_RULES = ("auto", "front", "pick")
SCREEN_SCORES = ("accuracy", "probe")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def read_space_file(spec: str | Path) -> tuple[dict, str]:
    """The plain data of a space file, or of a built-in space by name, and its source path."""
    path = Path(spec)
    if not path.exists() and (BUILTIN / f"{spec}.yaml").is_file():
        path = BUILTIN / f"{spec}.yaml"
    if not path.is_file():
        raise UserError(f"search space '{spec}' is neither a file nor a built-in space ({', '.join(builtin_names())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a search space must be a mapping with keys {', '.join(SPACE_KEYS)}")
    return data, str(path)


@dataclass(frozen=True)
class Fidelity:
    """Two-stage evaluation: every candidate is screened cheaply; promising ones get the full run."""

    screen_steps: int = 40          # KD steps at screening (0 = no recovery)
    screen_examples: int = 400      # validation examples used at screening
    min_promote: int = 3            # the first N screened candidates are always promoted
    promote_slack: float = 0.0      # promote if within this accuracy of the screened front
    screen_score: str = "accuracy"  # the model's own accuracy on the subset, or "probe": a linear
                                    # probe of its last hidden state (evaluate.probe_accuracy)
    promote: str = "auto"           # front, pick (could become the recommendation) or auto (pick
                                    # under a latency budget): see search/fidelity.py

    @classmethod
    def from_dict(cls, d: dict, source: str, *, screen_steps: int = 40) -> "Fidelity":
        """The ``fidelity`` section of a space file (keys already checked)."""
        where = f"{source}: fidelity"
        return cls(screen_steps=int_at_least(d.get("screen_steps", screen_steps), f"{where}.screen_steps", 0),
                   screen_examples=int_at_least(d.get("screen_examples", 400), f"{where}.screen_examples", 1),
                   min_promote=int_at_least(d.get("min_promote", 3), f"{where}.min_promote", 0),
                   promote_slack=float(d.get("promote_slack", 0.0)),
                   screen_score=one_of(d.get("screen_score", "accuracy"), f"{where}.screen_score", SCREEN_SCORES),
                   promote=one_of(d.get("promote", "auto"), f"{where}.promote", PROMOTE_RULES))


def one_of(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{where} = {value!r} but it must be one of: {', '.join(allowed)}")
    return value


def read_sections(data: Any, source: str, top: tuple, section: str, section_keys: tuple,
                  distill_keys: tuple = DISTILL_KEYS) -> tuple[dict, dict, dict]:
    """Check a space file's top-level keys and schema; return its ``section`` (e.g. ``layers``),
    ``distill`` and ``fidelity`` mappings, their keys checked too (``distill_keys``: what this
    kind of space reads from ``distill``)."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a search space must be a mapping with keys {', '.join(top)}")
    check_keys(data, top, source)
    if data.get("schema") != SCHEMA:
        raise UserError(f"{source}: schema is {data.get('schema')!r} but expected {SCHEMA!r}")
    parts = [data.get(key) or {} for key in (section, "distill", "fidelity")]
    for key, allowed, part in zip((section, "distill", "fidelity"), (section_keys, distill_keys, _FIDELITY), parts):
        check_keys(part, allowed, f"{source}: {key}")
    return parts[0], parts[1], parts[2]


def recovery_options(distill: dict, source: str, default_kinds: tuple, allowed_kinds: tuple, *,
                     min_steps: int) -> dict:
    """The ``kd_*`` fields of a space from its ``distill`` section (keys already checked); without
    an ``lr``, the space's own default (``KD_LR``) stands."""
    where = f"{source}: distill"
    options = dict(
        kd_kinds=choice_list(distill, "kind", default_kinds, where, lambda v: v in allowed_kinds,
                          f"one of {', '.join(allowed_kinds)}"),
        kd_steps=int_at_least(distill.get("steps", 300), f"{where}.steps", min_steps),
        kd_temperature=positive(distill.get("temperature", 2.0), f"{where}.temperature"),
        kd_batch_size=int_at_least(distill.get("batch_size", 32), f"{where}.batch_size", 1))
    if "lr" in distill:
        options["kd_lr"] = positive(distill["lr"], f"{where}.lr")
    return options


def technique_choices(data: dict, source: str) -> dict[str, dict[str, tuple]]:
    """The ``techniques`` section of a space file: whole-model technique (its plan key, e.g.
    ``embeddings``) → field → the values the search may try, each one the technique allows
    (:class:`~autocompress.techniques.Technique` ``choices``)."""
    from ..techniques import technique_class, technique_keys

    section = data.get("techniques") or {}
    where = f"{source}: techniques"
    if not isinstance(section, dict):
        raise UserError(f"{where} must map a technique to its fields' values, e.g. {{embeddings: {{dtype: [fp32, int8]}}}}")
    out = {}
    for key, fields in section.items():
        cls = technique_class(key)
        if cls is None:
            raise UserError(f"{where}: unknown technique {key!r}; techniques: {', '.join(technique_keys())}")
        if not isinstance(fields, dict):
            raise UserError(f"{where}.{key} must map its fields to lists of values, e.g. {{dtype: [fp32, int8]}}")
        check_keys(fields, tuple(cls.choices), f"{where}.{key}")
        out[key] = {name: choice_list(fields, name, (), f"{where}.{key}", lambda v, ok=cls.choices[name]: v in ok,
                                      f"one of {', '.join(map(str, cls.choices[name]))}") for name in fields}
    return out


def technique_param(key: str, field: str, fields: dict) -> str:
    """The trial parameter of a technique's field: the technique's key when it is its only field
    in the space (``embeddings``), else ``key.field``."""
    return key if len(fields) == 1 else f"{key}.{field}"


def suggest_techniques(trial, choices: dict[str, dict[str, tuple]]) -> tuple:
    """The whole-model techniques a trial uses (those left at their defaults omitted)."""
    from ..techniques import technique_class

    out = []
    for key, fields in choices.items():
        made = technique_class(key)(**{name: suggest(trial, technique_param(key, name, fields), values)
                                       for name, values in fields.items()})
        if not made.is_default():
            out.append(made)
    return tuple(out)


def suggest(trial, name: str, choices: tuple):
    if len(choices) == 1:
        return choices[0]
    return trial.suggest_categorical(name, list(choices))


def check_keys(d: Any, allowed, where: str) -> None:
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a mapping with keys {', '.join(allowed)}")
    unknown = sorted(set(map(str, d)) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def is_fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1


def choice_list(d: dict, key: str, default: tuple, where: str, ok, what: str) -> tuple:
    value = d.get(key, default)
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not values:
        raise UserError(f"{where}.{key} is empty; give at least one choice ({what})")
    for v in values:
        if not ok(v):
            raise UserError(f"{where}.{key} has {v!r}; choices must be {what}")
    if len(set(values)) != len(values):
        raise UserError(f"{where}.{key} lists a choice twice: {list(values)}")
    return values


def grouped_choices(d: dict, key: str, neutral, where: str, ok, what: str) -> dict[str, tuple]:
    value = d.get(key)
    if value is None:
        return {g: (neutral,) for g in GROUPS}
    if not isinstance(value, dict):  # one list for every group
        return {g: choice_list({key: value}, key, (neutral,), where, ok, what) for g in GROUPS}
    check_keys(value, tuple(GROUPS), f"{where}.{key}")
    return {g: choice_list(value, g, (neutral,), f"{where}.{key}", ok, what) for g in GROUPS}


def int_at_least(v, where: str, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise UserError(f"{where} = {v!r} but it must be an integer >= {minimum}")
    return v


def positive(v, where: str) -> float:
    try:
        value = float(v)
    except (TypeError, ValueError):
        raise UserError(f"{where} = {v!r} but it must be a number > 0") from None
    if value <= 0:
        raise UserError(f"{where} = {v!r} but it must be a number > 0")
    return value
