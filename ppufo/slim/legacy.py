"""A task's feature model saved as a legacy static program (inference.pdmodel), the input of int8
post-training quantisation (ptq_job.py).

Why legacy (docs/notes/quantization.md): Paddle Inference 3.3.1 runs oneDNN int8 kernels only
through its legacy IR passes (quant_dequant_onednn_pass ... cpu_quantize_pass), which act on
.pdmodel programs; the PIR predictor (inference.json) has no int8 pass list on CPU, and
PostTrainingQuantization, which writes the quantised program, reads and writes legacy programs.

A legacy program is traced only in a process whose ``FLAGS_enable_pir_api`` was 0 when paddle was
imported (``LEGACY_ENV``; paddle reads it once), and some of Paddle 3.3.1's Python APIs no longer
build legacy ops: their bodies call ``_C_ops`` (PIR and dygraph only) and fail with "must be Value,
but got Variable"; F.normalize's legacy branch raises UnboundLocalError; the fused attention
(F.scaled_dot_product_attention) calls ``shape.numel()``, which a legacy shape (a tuple) lacks.
``legacy_ops`` stands in for the ones ppufo's ViT uses with the legacy ops they once appended.
"""
import contextlib

import paddle
import paddle.nn.functional as F

LEGACY_ENV = {"FLAGS_enable_pir_api": "0"}


def legacy_mode():
    """Whether this process builds legacy programs (paddle imported with FLAGS_enable_pir_api=0)."""
    from paddle.base.framework import use_pir_api
    return not use_pir_api()


def _op(op_type, inputs, attrs, dtype):
    from paddle.base.layer_helper import LayerHelper
    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(dtype)
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs)
    return out


def _matmul(x, y, transpose_x=False, transpose_y=False, name=None):
    return _op("matmul_v2", {"X": x, "Y": y}, {"trans_x": transpose_x, "trans_y": transpose_y}, x.dtype)


def _gelu(x, approximate=False, name=None):
    return _op("gelu", {"X": x}, {"approximate": approximate}, x.dtype)


def _sqrt(x, name=None):
    return _op("sqrt", {"X": x}, {}, x.dtype)


def _maximum(x, y, name=None):
    return _op("elementwise_max", {"X": x, "Y": y}, {"axis": -1}, x.dtype)


def _normalize(x, p=2, axis=1, epsilon=1e-12, name=None):
    norm = _op("p_norm", {"X": x}, {"axis": axis, "porder": float(p), "keepdim": True, "epsilon": epsilon}, x.dtype)
    return paddle.divide(x, _maximum(norm, paddle.full([1], epsilon, x.dtype)))


# (module, name) -> the legacy-op version; the original is called in dygraph and PIR mode
LEGACY_OPS = {(paddle, "matmul"): _matmul, (paddle, "sqrt"): _sqrt, (paddle, "maximum"): _maximum,
              (F, "gelu"): _gelu, (F, "normalize"): _normalize}


def _either(real, legacy):
    from paddle.framework import in_dynamic_or_pir_mode
    return lambda *args, **kwargs: (real if in_dynamic_or_pir_mode() else legacy)(*args, **kwargs)


@contextlib.contextmanager
def legacy_ops():
    """Within the block the APIs of LEGACY_OPS append legacy ops when tracing a legacy program
    (module attributes: a traced ``paddle.matmul(...)`` looks them up at call time)."""
    saved = {key: getattr(*key) for key in LEGACY_OPS}
    for (module, name), legacy in LEGACY_OPS.items():
        setattr(module, name, _either(saved[(module, name)], legacy))
    try:
        yield
    finally:
        for (module, name), real in saved.items():
            setattr(module, name, real)


@contextlib.contextmanager
def unfused_attention(layer):
    """Every ViT Attention under ``layer`` on the matmul-softmax-matmul path (the same math as the
    fused one on CPU), put back after: the fused call does not trace in legacy mode."""
    from ..arch.backbone.vit import Attention
    layers = [m for m in layer.sublayers(include_self=True) if isinstance(m, Attention)]
    old = [(m.fused, m.packed) for m in layers]
    for m in layers:
        m.fused, m.packed = False, False  # packed reads qkv.weight directly: its Linear would not be quantised
    try:
        yield
    finally:
        for m, (fused, packed) in zip(layers, old):
            m.fused, m.packed = fused, packed


def save_legacy(layer, input_shape, prefix):
    """Trace ``layer`` (input ``x`` of [None, *input_shape] float32) into ``prefix``.pdmodel and
    .pdiparams, with the exporter's save_inference. RuntimeError outside a LEGACY_ENV process; a TypeError naming the op for an API
    the shims do not cover."""
    if not legacy_mode():
        raise RuntimeError("save_legacy: this process traces PIR programs; run it with "
                           f"{' '.join(f'{k}={v}' for k, v in LEGACY_ENV.items())} set before paddle is imported")
    from ..engine.exporter import save_inference
    with legacy_ops(), unfused_attention(layer):
        try:
            save_inference(layer, list(input_shape), prefix)  # the exporter's trace; the mode makes it legacy
        except TypeError as e:
            if "must be Value" not in str(e):
                raise
            raise TypeError(f"{type(layer).__name__}: an op with no legacy-static version in paddle "
                            f"{paddle.__version__} ({e}); add it to ppufo.slim.legacy.LEGACY_OPS") from None
