"""CompressionPlan: data model, serialisation, resolution against a model, validation errors."""

import json

import pytest
import yaml

from autocompress.errors import UserError
from autocompress.plan import LINEAR_GROUPS, SCHEMA, CompressionPlan, DistillConfig, LayerPlan

# A model with 12 layers, 12 heads (head dim 64), FFN 3072, hidden 768.
DIMS = dict(num_layers=12, num_heads=12, intermediate_size=3072, hidden_size=768)


def mixed_plan() -> CompressionPlan:
    return CompressionPlan(
        name="mixed",
        description="a bit of everything",
        defaults=LayerPlan(dtype=dict.fromkeys(LINEAR_GROUPS, "int8")),
        layers={
            3: LayerPlan(heads=6, ffn=0.5, rank={"q": 64, "k": 64}, sparsity={"ffn_in": 0.3}),
            7: LayerPlan(keep=False),
            10: LayerPlan(ffn=1000, dtype={"ffn_in": "int8"}),
        },
        distill=DistillConfig(steps=100, lr=1e-4, weights={"hidden": 0.5}, hidden_projection="learned"),
    )


def plan_dict(**overrides) -> dict:
    d = {"schema": SCHEMA, "name": "p", "layers": {}}
    d.update(overrides)
    return d


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip_through_file(tmp_path, suffix):
    plan = mixed_plan()
    path = tmp_path / f"plan{suffix}"
    plan.save(path)
    loaded = CompressionPlan.load(path)
    assert loaded == plan
    assert loaded.fingerprint() == plan.fingerprint()
    assert loaded.source == str(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_file_starts_with_schema_tag(tmp_path):
    mixed_plan().save(tmp_path / "p.yaml")
    mixed_plan().save(tmp_path / "p.json")
    assert (tmp_path / "p.yaml").read_text().startswith(f"schema: {SCHEMA}\n")
    assert json.loads((tmp_path / "p.json").read_text())["schema"] == SCHEMA


def test_to_dict_is_canonical_and_minimal():
    d = mixed_plan().to_dict()
    assert list(d) == ["schema", "name", "description", "defaults", "layers", "distill"]
    assert d["layers"][7] == {"keep": False}
    assert d["layers"][3] == {"heads": 6, "ffn": 0.5, "rank": {"q": 64, "k": 64}, "sparsity": {"ffn_in": 0.3}}
    assert d["distill"]["weights"] == {"logits": 1.0, "hidden": 0.5, "attention": 0.0}


def test_neutral_entries_do_not_change_the_plan():
    a = CompressionPlan(name="a", layers={1: LayerPlan(rank={"q": None}, dtype={"k": "fp32"}, sparsity={"v": 0})})
    b = CompressionPlan(name="b", layers={1: LayerPlan()})
    assert a.layers == b.layers
    assert a.fingerprint() == b.fingerprint()  # name is not part of the fingerprint


def test_fingerprint_changes_with_any_knob():
    plan = mixed_plan()
    prints = {
        plan.fingerprint(),
        plan.with_layer(3, heads=5).fingerprint(),
        plan.with_layer(3, ffn=0.25).fingerprint(),
        plan.with_layer(0, sparsity={"q": 0.1}).fingerprint(),
        CompressionPlan.keep_all().fingerprint(),
    }
    assert len(prints) == 5
    assert len(plan.fingerprint()) == 64


def test_scalar_group_shorthand_and_string_numbers():
    plan = CompressionPlan.from_dict(plan_dict(defaults={"dtype": "int8"}, distill={"lr": "5e-5"}))
    assert plan.defaults.dtype == dict.fromkeys(LINEAR_GROUPS, "int8")
    assert plan.distill.lr == 5e-5


def test_json_string_layer_keys():
    plan = CompressionPlan.from_dict(plan_dict(layers={"2": {"heads": 3}}))
    assert plan.layers == {2: LayerPlan(heads=3)}


def test_resolve_gives_concrete_values():
    resolved = mixed_plan().resolve(**DIMS)
    assert len(resolved) == 12
    r0, r3, r7, r10 = resolved[0], resolved[3], resolved[7], resolved[10]
    assert (r0.keep, r0.heads, r0.ffn) == (True, 12, 3072)
    assert r0.dtype == dict.fromkeys(LINEAR_GROUPS, "int8")  # defaults
    assert r0.rank == dict.fromkeys(LINEAR_GROUPS)
    assert (r3.heads, r3.ffn) == (6, 1536)
    assert r3.rank == {"q": 64, "k": 64, "v": None, "attn_out": None, "ffn_in": None, "ffn_out": None}
    assert r3.dtype == dict.fromkeys(LINEAR_GROUPS, "fp32")  # an explicit entry replaces the defaults
    assert r3.sparsity["ffn_in"] == 0.3 and r3.sparsity["q"] == 0.0
    assert not r7.keep
    assert r10.ffn == 1000 and r10.dtype["ffn_in"] == "int8" and r10.dtype["q"] == "fp32"
    assert mixed_plan().kept_layers(12) == [i for i in range(12) if i != 7]


def test_keep_all_resolves_to_identity():
    resolved = CompressionPlan.keep_all().resolve(**DIMS)
    assert all(r.keep and r.heads == 12 and r.ffn == 3072 for r in resolved)
    assert all(set(r.dtype.values()) == {"fp32"} and not any(r.sparsity.values()) for r in resolved)


def test_table_shows_each_layer():
    table = mixed_plan().table(**DIMS)
    lines = table.splitlines()
    assert len(lines) == 2 + 12
    assert "11/12 layers kept" in lines[0]
    assert lines[1].split() == ["layer", "keep", "heads", "ffn", "rank", "dtype", "sparsity"]
    row3 = lines[2 + 3].split()
    assert row3[:6] == ["3", "yes", "6/12", "1536/3072", "q=64", "k=64"]
    assert "ffn_in=0.3" in lines[2 + 3]
    assert lines[2 + 7].split() == ["7", "no", "-", "-", "-", "-", "-"]
    assert lines[2].split()[-2:] == ["all=int8", "-"]


# -- validation errors -------------------------------------------------------------------------


def test_error_more_heads_than_exist():
    plan = CompressionPlan.from_dict(plan_dict(layers={3: {"heads": 20}}), source="plan.yaml")
    with pytest.raises(UserError, match=r"^plan\.yaml: layers\[3\]\.heads = 20 but the model has 12 heads per layer$"):
        plan.resolve(**DIMS)


def test_error_from_defaults_names_defaults():
    plan = CompressionPlan(name="p", defaults=LayerPlan(ffn=4000))
    with pytest.raises(UserError, match=r"defaults\.ffn = 4000 .* 3072"):
        plan.resolve(**DIMS)


@pytest.mark.parametrize("rank", [0, -3, 2.5])
def test_error_bad_rank(rank):
    with pytest.raises(UserError, match=r"layers\[1\]\.rank\.q = .* rank must be an integer >= 1"):
        CompressionPlan.from_dict(plan_dict(layers={1: {"rank": {"q": rank}}}))


def test_error_rank_larger_than_linear():
    plan = CompressionPlan(name="p", layers={2: LayerPlan(heads=2, rank={"attn_out": 200})})
    # after keeping 2 heads of 64 dims, attn_out is 128 -> 768
    with pytest.raises(UserError, match=r"layers\[2\]\.rank\.attn_out = 200 .* at most 128"):
        plan.resolve(**DIMS)


def test_error_unknown_layer_index():
    plan = CompressionPlan(name="p", layers={12: LayerPlan(heads=1)})
    with pytest.raises(UserError, match=r"layers\[12\] but the model has 12 layers \(0\.\.11\)"):
        plan.resolve(**DIMS)


def test_error_all_layers_dropped():
    plan = CompressionPlan(name="p", defaults=LayerPlan(keep=False))
    with pytest.raises(UserError, match="every one of the 12 layers is dropped"):
        plan.resolve(**DIMS)
    assert len(plan.with_layer(5, keep=True).resolve(**DIMS)) == 12


@pytest.mark.parametrize("tag", ["autocompress.plan/v2", None])
def test_error_wrong_schema_tag(tag):
    d = plan_dict(schema=tag)
    with pytest.raises(UserError, match="expected 'autocompress.plan/v1'"):
        CompressionPlan.from_dict(d, source="x.yaml")


def test_error_missing_schema_tag():
    d = plan_dict()
    del d["schema"]
    with pytest.raises(UserError, match=r"x\.yaml: missing 'schema: autocompress\.plan/v1'"):
        CompressionPlan.from_dict(d, source="x.yaml")


def test_error_dropped_layer_with_knobs():
    with pytest.raises(UserError, match=r"layers\[4\] is dropped \(keep: false\) but also sets heads, rank"):
        CompressionPlan.from_dict(plan_dict(layers={4: {"keep": False, "heads": 3, "rank": {"q": 8}}}))


@pytest.mark.parametrize(
    "d, where, allowed",
    [
        (plan_dict(colour="red"), "p.yaml", "schema, name, description, defaults, layers, distill, reconstruct, vocabulary, embeddings"),
        (plan_dict(layers={0: {"head": 3}}), r"layers\[0\]", "keep, heads, ffn, rank, dtype, sparsity"),
        (plan_dict(distill={"epochs": 3}), "distill", "steps, lr, batch_size"),
        (plan_dict(distill={"weights": {"mse": 1.0}}), "distill.weights", "logits, hidden, attention"),
    ],
)
def test_error_unknown_key_names_allowed_keys(d, where, allowed):
    with pytest.raises(UserError, match=f"{where}: unknown key .*; allowed keys: {allowed}"):
        CompressionPlan.from_dict(d, source="p.yaml")


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"heads": 0}, r"heads = 0 but it must be an integer >= 1"),
        ({"ffn": 0}, r"ffn = 0 but it must be"),
        ({"ffn": 1.5}, r"ffn = 1\.5 but it must be"),
        ({"dtype": {"q": "int4"}}, r"dtype\.q = 'int4' but dtype must be one of: fp32, int8"),
        ({"sparsity": {"v": 1.0}}, r"sparsity\.v = 1\.0 but sparsity must be a fraction in \[0, 1\)"),
        ({"rank": {"query": 8}}, r"rank has unknown group 'query'; groups are: q, k, v"),
        ({"keep": "no"}, r"keep = 'no' but it must be true or false"),
    ],
)
def test_error_bad_layer_values(layer, match):
    with pytest.raises(UserError, match=match):
        CompressionPlan.from_dict(plan_dict(layers={0: layer}))


@pytest.mark.parametrize(
    "distill, match",
    [
        ({"steps": -1}, r"distill\.steps = -1"),
        ({"lr": 0}, r"distill\.lr = 0 but it must be a number > 0"),
        ({"steps": 10, "weights": {"logits": 0}}, "weights are all 0"),
        ({"hidden_projection": "mlp"}, "must be one of: identity, learned"),
        ({"layer_map": "every-other"}, "must be 'auto' or a list"),
    ],
)
def test_error_bad_distill_values(distill, match):
    with pytest.raises(UserError, match=match):
        CompressionPlan.from_dict(plan_dict(distill=distill))


def test_error_layer_map_must_match_kept_layers():
    plan = CompressionPlan(name="p", layers={0: LayerPlan(keep=False)}, distill=DistillConfig(layer_map=[0, 1]))
    with pytest.raises(UserError, match="layer_map has 2 entries but the plan keeps 11 layers"):
        plan.resolve(**DIMS)
    ok = CompressionPlan(name="p", defaults=LayerPlan(keep=False), layers={5: LayerPlan()},
                         distill=DistillConfig(layer_map=[11]))
    assert [r.index for r in ok.resolve(**DIMS) if r.keep] == [5]


def test_error_bad_files(tmp_path):
    with pytest.raises(UserError, match="must end in .yaml, .yml or .json"):
        CompressionPlan.load(tmp_path / "plan.txt")
    with pytest.raises(UserError, match="no such plan file"):
        CompressionPlan.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        CompressionPlan.load(bad)
    listy = tmp_path / "list.json"
    listy.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a mapping at the top level"):
        CompressionPlan.load(listy)


def test_errors_are_one_line():
    bad = yaml.safe_load("schema: autocompress.plan/v1\nname: p\nlayers:\n  0: {heads: 0}\n")
    with pytest.raises(UserError) as info:
        CompressionPlan.from_dict(bad)
    assert "\n" not in str(info.value)
