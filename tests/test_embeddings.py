"""int8 word embeddings (plan key ``embeddings: {dtype: int8}``): values, every architecture,
save/load, the plan file, and ONNX Runtime computing what torch computes."""

import pytest
import torch
from torch import nn

from autocompress.compressed import CompressedModel, load
from autocompress.errors import UserError
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.techniques import Embeddings, Int8Embedding, quantize_embeddings_
from autocompress.transform import apply_structure_, finalize_
from conftest import ARCHS, build_batch, build_tiny_model
from tiny_assets import make_tokenizer


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_each_row_is_within_half_a_step_of_its_own_scale():
    torch.manual_seed(0)
    table = nn.Embedding(50, 16, padding_idx=0)
    with torch.no_grad():
        table.weight[7] *= 100.0  # one large row does not coarsen the others (per-row scales)
    q = Int8Embedding(table.weight, table.padding_idx)
    ids = torch.arange(50)
    assert q.weight.dtype == torch.int8 and q.scale.shape == (50, 1)
    err = (q(ids) - table(ids)).abs()
    assert bool((err <= q.scale / 2 + 1e-6).all())
    assert float(q.scale[3]) < float(q.scale[7]) / 20
    torch.testing.assert_close(q.dequantized()(ids), q(ids))
    assert q(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, 16)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_embeddings_on_every_architecture_round_trip_and_shrink(arch, tmp_path):
    model = build_tiny_model(arch, vocab_size=2000)  # a table large enough to dominate the size
    batch = build_batch(model)
    plan = CompressionPlan(name="e", defaults=LayerPlan(dtype={"q": "int8"}), techniques={"embeddings": Embeddings("int8")})
    resolved = plan.resolve(4, 4, 64, 32)
    apply_structure_(model, resolved)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fp32 = _logits(model, batch)
    base = build_tiny_model(arch, vocab_size=2000).config.to_dict()
    plain = CompressedModel(model=build_tiny_model(arch, vocab_size=2000), plan=plan, resolved=resolved,
                            fp32_state=state, base_config=base, tokenizer=None)
    finalize_(model, plan, resolved)
    assert isinstance(model.get_input_embeddings(), Int8Embedding)
    torch.testing.assert_close(_logits(model, batch), fp32, atol=0.05, rtol=0.05)
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state, base_config=base,
                         tokenizer=make_tokenizer(tmp_path / "tok"), params=1)
    assert cm.size_bytes() < plain.size_bytes() - 2000 * 32 * 2  # 2000 x 32 fp32 rows -> int8 + one scale each
    back = load(cm.save_pretrained(tmp_path / arch))
    assert isinstance(back.model.get_input_embeddings(), Int8Embedding)
    assert torch.equal(_logits(model, batch), _logits(back.model, batch))
    assert back.plan.technique("embeddings").dtype == "int8"


def test_the_plan_key_round_trips_and_leaves_other_plans_unchanged(tmp_path):
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "embeddings": {"dtype": "int8"}})
    assert plan.technique("embeddings") == Embeddings("int8") and plan.techniques_at("finalize") == [Embeddings("int8")]
    path = tmp_path / "p.yaml"
    plan.save(path)
    assert CompressionPlan.load(path) == plan and CompressionPlan.load(path).fingerprint() == plan.fingerprint()
    plain = CompressionPlan(name="p")
    assert "embeddings" not in plain.to_dict()  # plans written before the key keep their fingerprints
    assert plain.fingerprint() != plan.fingerprint()
    for bad, message in (({"dtype": "int4"}, "embeddings.dtype = 'int4'"), ({"bits": 8}, "unknown key 'bits'"),
                         ("int8", "embeddings must be a mapping")):
        with pytest.raises(UserError, match=message):
            CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "embeddings": bad})
    with pytest.raises(UserError, match="embeddings dtype"):
        quantize_embeddings_(build_tiny_model("bert"), "int4")


def test_onnx_runtime_computes_the_int8_embeddings_torch_computes(tmp_path):
    from autocompress.latency.onnx import build_onnx, run_onnx

    model = build_tiny_model("bert", vocab_size=2000)
    batch = build_batch(model)
    plan = CompressionPlan(name="e", techniques={"embeddings": Embeddings("int8")})
    resolved = plan.resolve(4, 4, 64, 32)
    plain = build_onnx(model, tmp_path / "fp32.onnx", resolved=resolved)
    small = build_onnx(model, tmp_path / "int8.onnx", resolved=resolved, plan=plan)
    assert model.get_input_embeddings().__class__ is nn.Embedding  # the caller's model is left alone
    assert small.stat().st_size < plain.stat().st_size - 2000 * 32 * 2  # the table is a quarter of its size
    expected = _logits(finalize_(model, plan, resolved), batch).numpy()
    got = run_onnx(small, batch["input_ids"], batch["attention_mask"])
    assert abs(got - expected).max() < 1e-4
    # stored int8 in the file; ONNX Runtime folds the dequantization at load and runs the same graph
    # as for an fp32 table (an int8 lookup in the graph cost 1.4-2.5 ms on MiniLM)
    import collections

    import onnx
    import onnxruntime as ort

    assert any(i.data_type == onnx.TensorProto.INT8 and i.dims[0] == 2000 for i in onnx.load(small).graph.initializer)
    ops = {}
    for path in (plain, small):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        ops[path] = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops[small] == ops[plain]
