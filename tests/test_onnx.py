"""The ONNX Runtime target: export of compressed structures, int8 quantization, timing."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from autocompress.compressed import CompressedModel
from autocompress.errors import UserError
from autocompress.latency import Target
from autocompress.latency.onnx import (
    build_onnx,
    export_onnx,
    int8_nodes,
    linear_nodes,
    measure_onnx,
    onnx_latency,
    quantize_onnx,
    run_onnx,
)
from autocompress.plan import LINEAR_GROUPS, CompressionPlan, LayerPlan
from autocompress.techniques import quantize_dynamic_
from autocompress.transform import apply_structure_, quantize_config

from conftest import FFN, HEADS, HIDDEN, LAYERS, VOCAB

ALL8 = dict.fromkeys(LINEAR_GROUPS, "int8")
# pruned heads + FFN, a dropped layer, low-rank linears, int8 linears (incl. a low-rank one)
PLAN = CompressionPlan(name="mixed", layers={
    0: LayerPlan(heads=2, ffn=24, rank={"q": 6, "ffn_out": 8}, dtype={"q": "int8", "k": "int8", "ffn_in": "int8"}),
    1: LayerPlan(keep=False),
    2: LayerPlan(heads=1, rank={"attn_out": 4}, dtype={"attn_out": "int8", "v": "int8"}),
    3: LayerPlan(ffn=40),
})


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


def compressed(tiny_model, arch, plan=PLAN):
    model = tiny_model(arch)
    resolved = plan.resolve(LAYERS, HEADS, FFN, HIDDEN)
    apply_structure_(model, resolved)
    return model, resolved


def random_batch(model, batch_size, seq_len, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    for row in range(batch_size):
        mask[row, seq_len - (row % (seq_len - 2)):] = 0
    ids[mask == 0] = model.config.pad_token_id
    return ids, mask


def test_pruned_lowrank_model_exports_and_matches_torch(arch, tiny_model, tmp_path):
    model, _ = compressed(tiny_model, arch)
    path = export_onnx(model, tmp_path / "m.onnx")
    for batch_size, seq_len, seed in [(4, 10, 0), (3, 23, 1), (1, 5, 2)]:  # dynamic batch and sequence axes
        ids, mask = random_batch(model, batch_size, seq_len, seed)
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
        np.testing.assert_allclose(run_onnx(path, ids, mask), expected, atol=1e-4, rtol=1e-4)


def test_int8_nodes_are_exactly_the_plans_int8_linears(arch, tiny_model, tmp_path):
    model, resolved = compressed(tiny_model, arch)
    nodes = int8_nodes(model, resolved)
    # layer 0: q (low-rank: 2 factors) + k + ffn_in; layer 2 (now position 1): attn_out (2 factors) + v
    assert len(nodes) == 7 and len(set(nodes)) == 7
    path = export_onnx(model, tmp_path / "m.onnx")
    assert set(nodes) <= set(linear_nodes(onnx.load(str(path))))
    q = quantize_onnx(path, tmp_path / "q.onnx", nodes)
    ops = [n.op_type for n in onnx.load(str(q)).graph.node]
    assert ops.count("MatMulInteger") == 7  # only the selected linears became int8
    with pytest.raises(UserError, match="no linear MatMul node"):
        quantize_onnx(path, tmp_path / "bad.onnx", ["/model/nope/MatMul"])


def test_int8_onnx_agrees_with_fp32_onnx_on_most_predictions(arch, tiny_model, tmp_path):
    plan = CompressionPlan(name="int8", defaults=LayerPlan(dtype=ALL8), layers={1: LayerPlan(heads=2, dtype=ALL8)})
    model, resolved = compressed(tiny_model, arch, plan)
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", int8_nodes(model, resolved))
    ids, mask = random_batch(model, 64, 12, seed=3)
    a, b = run_onnx(fp32, ids, mask), run_onnx(int8, ids, mask)
    assert not np.allclose(a, b, atol=1e-7)  # it really is quantized
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.85


def test_torch_quantized_model_exports_with_the_same_int8_linears(tiny_model, tmp_path):
    model, resolved = compressed(tiny_model, "bert")
    quantized = quantize_dynamic_(copy.deepcopy(model), quantize_config(resolved))
    with pytest.raises(UserError, match="fp32"):
        export_onnx(quantized, tmp_path / "x.onnx")
    from_torch = build_onnx(quantized, tmp_path / "from_torch.onnx")
    from_plan = build_onnx(model, tmp_path / "from_plan.onnx", resolved=resolved)
    count = lambda p: [n.op_type for n in onnx.load(str(p)).graph.node].count("MatMulInteger")  # noqa: E731
    assert count(from_torch) == count(from_plan) == 7
    ids, mask = random_batch(model, 16, 9, seed=4)
    with torch.no_grad():
        torch_int8 = quantized(input_ids=ids, attention_mask=mask).logits.numpy()
    assert (run_onnx(from_torch, ids, mask).argmax(-1) == torch_int8.argmax(-1)).mean() >= 0.8


def test_unsupported_architecture_is_a_user_error(tmp_path):
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(UserError, match="unsupported model type"):
        export_onnx(Fake(), tmp_path / "x.onnx")


def test_measure_onnx_and_onnx_latency_of_a_compressed_model(tiny_model, tmp_path):
    base = tiny_model("bert")
    model, resolved = compressed(tiny_model, "bert")
    cm = CompressedModel(model=quantize_dynamic_(copy.deepcopy(model), quantize_config(resolved)), plan=PLAN,
                         resolved=resolved, fp32_state=model.state_dict(), base_config=base.config.to_dict(),
                         tokenizer=None)
    target = Target(runtime="onnxruntime", threads=1, seq_len=16)
    stats = onnx_latency(cm, target, runs=20, retries=0, max_seconds=1.0)
    assert stats.runs >= 20 and stats.p50 > 0 and stats.p90 >= stats.p50
    path = build_onnx(cm.fp32_model(), tmp_path / "m.onnx", resolved=resolved)
    assert measure_onnx(path, target, runs=20, retries=0, min_seconds=0.0, max_seconds=1.0).runs >= 20
