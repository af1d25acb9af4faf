"""Load any search space by name or file: per-layer spaces (:class:`~.space.SearchSpace`) and
allocated ones (:class:`~.allocated_space.AllocatedSpace`), told apart by the file's ``kind``."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .allocated_space import AllocatedSpace
from .space import SearchSpace, read_space_file

KINDS = {"per_layer": SearchSpace, "allocated": AllocatedSpace}
DEFAULT = "allocated"


def load_space(spec: str | Path) -> SearchSpace | AllocatedSpace:
    """A built-in space (``allocated``, ``joint``, ``structured``, ``quant_only``, ``diagnostic``)
    or a YAML file; its ``kind`` (default ``per_layer``) picks the class."""
    data, source = read_space_file(spec)
    kind = data.get("kind", "per_layer")
    if kind not in KINDS:
        raise UserError(f"{source}: kind is {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind].from_dict(data, source=source)
