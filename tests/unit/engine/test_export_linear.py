"""Exports hold matmul + add, never pd_op.linear_v2, whatever Paddle build traces them.

The CPU wheel always traces F.linear as matmul + add; a CUDA build traces linear_v2 (which
paddle2onnx 2.1.0 and Paddle's TensorRT converters cannot map) unless FLAGS_use_legacy_linear is
set. F.linear asks ``paddle.is_compiled_with_cuda()``, so patching that to True makes this CPU
wheel trace as a GPU build does (checked below: without the flag it writes linear_v2)."""
import os
import re
from collections import Counter

import paddle
import pytest

from helpers import ROOT, tiny_config
from ppufo.arch.multitask import build_model
from ppufo.engine.exporter import LEGACY_LINEAR, export_task, legacy_linear, save_inference


def flag():
    return paddle.get_flags(LEGACY_LINEAR)[LEGACY_LINEAR]


@pytest.fixture
def as_gpu_build(monkeypatch):
    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)


def ops(prefix):
    """{op name: count} of the pd_op operations in the PIR program ``prefix``.json."""
    with open(prefix + ".json") as f:
        return Counter(re.findall(r'"#":"1\.([a-z0-9_]+)"', f.read()))


def test_a_gpu_build_traces_linear_v2_without_the_flag(as_gpu_build, tmp_path):
    # the control: what the exporter guards against does happen with the patch
    assert flag() is False
    layer = paddle.nn.Linear(4, 3)
    layer.eval()
    static = paddle.jit.to_static(layer, input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")],
                                  full_graph=True)
    paddle.jit.save(static, str(tmp_path / "inference"))
    assert ops(str(tmp_path / "inference"))["linear_v2"] == 1


def test_export_task_sets_the_flag_while_tracing_and_writes_no_linear_v2(as_gpu_build, tmp_path):
    config = tiny_config(str(tmp_path / "data"), tmp_path / "out")
    model = build_model(config)
    seen = []
    model.backbone.register_forward_pre_hook(lambda layer, x: seen.append(flag()))
    export_task(model, "person", config, str(tmp_path / "person"))
    assert seen and all(seen)  # traced with the flag on
    got = ops(str(tmp_path / "person" / "inference"))
    linears = [m for m in [*model.backbone.sublayers(), *model.heads["person"].neck.sublayers()]
               if isinstance(m, paddle.nn.Linear)]
    assert "linear_v2" not in got and got["matmul"] >= len(linears) >= 8  # + attention's own matmuls
    assert flag() is False  # put back


def test_the_flag_is_put_back_after_an_error_and_keeps_a_value_set_before(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with legacy_linear():
            assert flag() is True
            raise RuntimeError("boom")
    assert flag() is False
    paddle.set_flags({LEGACY_LINEAR: True})
    try:
        with legacy_linear():
            pass
        assert flag() is True  # a user's own setting survives an export
    finally:
        paddle.set_flags({LEGACY_LINEAR: False})


def test_save_inference_traces_inside_the_flag(as_gpu_build, tmp_path):
    layer = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 2))
    layer.eval()
    save_inference(layer, [4], str(tmp_path / "inference"))
    got = ops(str(tmp_path / "inference"))
    assert "linear_v2" not in got and got["matmul"] == got["add"] == 2


def test_every_jit_save_in_ppufo_goes_through_save_inference():
    calls = []
    for d, _, files in os.walk(os.path.join(ROOT, "ppufo")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(d, name)
                with open(path) as f:
                    calls += [(os.path.relpath(path, ROOT), i + 1) for i, line in enumerate(f)
                              if re.search(r"\bjit\.save\(", line)]
    assert calls == [("ppufo/engine/exporter.py", calls[0][1])], calls
