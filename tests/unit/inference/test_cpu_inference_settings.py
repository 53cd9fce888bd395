"""Paddle Inference's CPU settings from issue 29: the packed-attention export and its fused kernel
(``fuse_attention``), Paddle's garbage collection of a run's dead tensors (``gc_mb``), and their
config keys. The features stay within 1e-4 of dygraph; nothing here is timed (the speed of each
setting is benchmark/infer_settings.py)."""
import json
import os
import resource

import numpy as np
import paddle
import paddle.inference as pi
import pytest
import yaml

from helpers import ROOT
from ppufo.arch import build_model
from ppufo.arch.backbone.vit import attention, packed_attention
from ppufo.engine.exporter import attention_layout, export_task
from ppufo.inference import predictor as P
from ppufo.inference.deploy_config import load_deploy_config, predictor_kwargs
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError

DEPTH = 6
AVX512 = pytest.mark.skipif(not P.attention_fusable(), reason="the fused attention kernel needs AVX-512")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The quickstart-size model (ViT-Ti, 6 blocks, 64x64; random weights, seed 0) exported with
    the SDPA attention and with the packed one: (model, {"sdpa": dir, "packed": dir})."""
    cfg = load_config(os.path.join(ROOT, "configs", "quickstart.yaml"), ["Global.generate_demo_data=false"])
    assert cfg["Arch"]["Backbone"]["depth"] == DEPTH and cfg["Global"]["image_shape"] == [3, 64, 64]
    paddle.seed(0)
    model = build_model(cfg, {t: 10 for t in cfg["Tasks"]})
    model.eval()
    out = {}
    for layout in ("sdpa", "packed"):
        cfg["Export"]["packed_attention"] = layout == "packed"
        out[layout] = str(tmp_path_factory.mktemp(layout))
        export_task(model, "person", cfg, out[layout])
    return model, out


def dygraph(model, x):
    with paddle.no_grad():
        return model.embed(paddle.to_tensor(x), "person").numpy()


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype("float32")


def test_the_export_records_its_attention_layout_and_cpu_x86_gets_the_packed_one(quickstart):
    _, dirs = quickstart
    for layout, d in dirs.items():
        with open(os.path.join(d, "inference.yml")) as f:
            assert yaml.safe_load(f)["attention"] == layout
    export = {"chip": "cpu_x86", "packed_attention": None}
    assert attention_layout({"Export": export}) == "packed"
    assert attention_layout({"Export": {**export, "chip": "gpu_trt_fp16"}}) == "sdpa"
    assert attention_layout({"Export": {**export, "chip": "gpu", "packed_attention": True}}) == "packed"
    assert attention_layout({"Export": {**export, "packed_attention": False}}) == "sdpa"


@pytest.mark.parametrize("head_dim,bias", [(64, True), (48, True), (40, False)])
def test_packed_attention_equals_the_model_attention(head_dim, bias):
    """The export layout folds the scale into the q weights: exact for a power-of-two scale
    (head_dim 64), float rounding (relative 1e-5) otherwise."""
    paddle.seed(1)
    heads, n, dim = 3, 17, 96
    w = paddle.randn([dim, 3 * heads * head_dim])
    b = paddle.randn([3 * heads * head_dim]) if bias else None
    x = paddle.randn([2, n, dim])
    q, k, v = paddle.unbind(paddle.nn.functional.linear(x, w, b).reshape([-1, n, 3, heads, head_dim]), axis=2)
    want = attention(q, k, v, head_dim ** -0.5).reshape([-1, n, heads * head_dim]).numpy()
    got = packed_attention(x, w, b, heads, head_dim, head_dim ** -0.5).numpy()
    assert np.abs(got - want).max() <= (0 if head_dim == 64 else 1e-5) * np.abs(want).max()


# small_model_mb=0 where the quickstart model (11 MB of weights) must not get the small-model options
SETTINGS = {
    "defaults (small model: oneDNN off, GC off)": ("packed", {}),
    "before issue 29": ("sdpa", dict(enable_mkldnn=True, mkldnn_cache_capacity=10, gc_mb=0, small_model_mb=0)),
    "large-model defaults (oneDNN, GC in batches)": ("packed", dict(small_model_mb=0)),
    "oneDNN on, GC off": ("packed", dict(enable_mkldnn=True, gc_mb=-1, small_model_mb=0)),
    "no fusion, one thread": ("packed", dict(fuse_attention=False, cpu_threads=1)),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_features_equal_dygraph_within_1e4_across_batch_sizes(quickstart, name):
    """Batches of 3, 1, 3: with gc_mb=-1 (the default) the tensors a run leaves are reused by the
    next, also when the batch shrinks and grows back."""
    model, dirs = quickstart
    layout, options = SETTINGS[name]
    pred = P.FeaturePredictor(dirs[layout], **options)
    for i, n in enumerate((3, 1, 3)):
        x = images(n, seed=i)
        assert np.abs(pred(x) - dygraph(model, x)).max() < 1e-4, (name, n)
    other = pred.clone()
    x = images(2, seed=5)
    assert np.abs(other(x) - dygraph(model, x)).max() < 1e-4


def optimized_ops(model_dir, calls, tmp_path):
    """{op name: count} of the program Paddle Inference runs for ``calls`` (saved by the predictor)."""
    config = P.build_config(model_dir, calls)
    config.enable_save_optim_model(True)
    config.set_optim_cache_dir(str(tmp_path))
    pi.create_predictor(config)
    with open(tmp_path / "_optimized.json") as f:
        program = json.load(f)
    ops = {}

    def walk(node):
        if isinstance(node, dict):
            if {"#", "I", "O"} <= set(node):
                name = node["#"].split(".", 1)[-1]
                ops[name] = ops.get(name, 0) + 1
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(program)
    return ops


@AVX512
@pytest.mark.parametrize("mkldnn", [False, True])
def test_the_packed_export_runs_one_fused_attention_kernel_per_block(quickstart, mkldnn, tmp_path):
    _, dirs = quickstart
    pred = P.FeaturePredictor(dirs["packed"], enable_mkldnn=mkldnn, small_model_mb=0)
    assert pred.calls == P.config_calls([3, 64, 64], "pir", enable_mkldnn=mkldnn, fuse_attention=True)
    assert optimized_ops(dirs["packed"], pred.calls, tmp_path / "on").get("self_dp_attention") == DEPTH
    off = P.config_calls([3, 64, 64], "pir", enable_mkldnn=mkldnn, fuse_attention=False)
    assert "self_dp_attention" not in optimized_ops(dirs["packed"], off, tmp_path / "off")
    # an SDPA export: fuse_attention is switched off, whatever the option says
    assert P.FeaturePredictor(dirs["sdpa"], enable_mkldnn=mkldnn, fuse_attention=True, small_model_mb=0).calls == off


def test_fuse_attention_adds_the_pass_or_deletes_its_blockers(monkeypatch):
    monkeypatch.setattr(P, "attention_fusable", lambda: True)
    names = lambda **kw: [(n, a) for n, a, _ in P.config_calls([3, 64, 64], "pir", fuse_attention=True, **kw)]  # noqa
    assert ("enable_custom_passes", (["self_attention_fuse_pass"],)) in names(enable_mkldnn=False)
    with_onednn = names(enable_mkldnn=True)
    assert [a for n, a in with_onednn if n == "delete_pass"] == [(p,) for p in P.ATTENTION_BLOCKERS]
    assert "enable_custom_passes" not in dict(with_onednn)
    for kw in (dict(ir_optim=False), dict(device="gpu")):  # no passes run, or not a CPU
        assert not {"enable_custom_passes", "delete_pass"} & set(dict(names(**kw)))
    monkeypatch.setattr(P, "attention_fusable", lambda: False)  # a CPU without AVX-512
    assert not {"enable_custom_passes", "delete_pass"} & set(dict(names(enable_mkldnn=False)))


def test_gc_mb_maps_to_paddles_flag_on_cpu_only_and_bad_values_are_refused():
    assert P.first_run_flags("cpu", -1) == {P.GC_FLAG: -1.0}
    assert P.first_run_flags("cpu", 0) == {P.GC_FLAG: 0.0}
    assert P.first_run_flags("cpu", 64) == {P.GC_FLAG: 0.0625}
    assert P.first_run_flags("cpu", None) == {} and P.first_run_flags("gpu", -1) == {}
    for bad in (-2, "64", True):
        with pytest.raises(ValueError, match="gc_mb"):
            P.config_calls([3, 64, 64], "pir", gc_mb=bad)


def voluntary_switches_per_run(pred, x, runs=10):
    pred(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    for _ in range(runs):
        pred(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before) / runs


def test_gc_flag_is_set_for_the_first_run_only_and_stops_the_gc_thread_hand_offs(quickstart):
    """Paddle reads the flag when a predictor (or a clone) builds its executor on its first run.
    With per-tensor GC (0) every dead tensor is handed to Paddle's GC thread, a voluntary context
    switch each (about 100 per run of this model, measured); with -1 there are none."""
    _, dirs = quickstart
    x = images(1)
    flag = paddle.get_flags([P.GC_FLAG])
    never = P.FeaturePredictor(dirs["packed"], gc_mb=-1, cpu_threads=1, small_model_mb=0)
    per_tensor = P.FeaturePredictor(dirs["packed"], gc_mb=0, cpu_threads=1, small_model_mb=0)
    assert voluntary_switches_per_run(never, x) < 3
    assert voluntary_switches_per_run(per_tensor, x) > 20
    assert voluntary_switches_per_run(never.clone(), x) < 3  # the clone's first run sets it too
    assert paddle.get_flags([P.GC_FLAG]) == flag  # put back after each first run


def test_a_small_model_runs_with_onednn_off_and_keeps_its_tensors(quickstart):
    """The quickstart model has 11 MB of weights: under the default small_model_mb (64) it runs
    with SMALL_MODEL's options whatever enable_mkldnn / gc_mb say; small_model_mb=0 or 1 keeps them."""
    _, dirs = quickstart
    d = dirs["packed"]
    assert 8 < os.path.getsize(os.path.join(d, "inference.pdiparams")) / 2 ** 20 < 64
    small = P.FeaturePredictor(d, enable_mkldnn=True, gc_mb=0)
    assert small.small and small.first_run_flags == {P.GC_FLAG: -1.0}
    names = [n for n, _, _ in small.calls]
    assert "disable_mkldnn" in names and "enable_mkldnn" not in names
    for mb in (0, 1):
        big = P.FeaturePredictor(d, enable_mkldnn=True, gc_mb=0, small_model_mb=mb)
        assert not big.small and big.first_run_flags == {P.GC_FLAG: 0.0}
        assert "enable_mkldnn" in [n for n, _, _ in big.calls]
    assert not P.small_model(d, "gpu")  # CPU only
    with pytest.raises(ValueError, match="small_model_mb"):
        P.config_calls([3, 64, 64], "pir", small_model_mb=-1)


def test_deploy_keys_reach_the_predictor():
    g = predictor_kwargs(load_deploy_config(None, ["Global.gc_mb=-1", "Global.fuse_attention=false",
                                                   "Global.small_model_mb=0"]))
    assert (g["gc_mb"], g["fuse_attention"], g["small_model_mb"]) == (-1, False, 0)
    assert predictor_kwargs(load_deploy_config(None, ["Global.gc_mb=null"]))["gc_mb"] is None
    with pytest.raises(ConfigError, match="gc_mb"):
        load_deploy_config(None, ["Global.gc_mb=-2"])
    defaults = predictor_kwargs(load_deploy_config(None))
    for name in ("cpu_x86", "inference_rec"):
        cfg = predictor_kwargs(load_deploy_config(os.path.join(ROOT, "deploy", "configs", name + ".yaml")))
        keys = ("gc_mb", "fuse_attention", "small_model_mb", "enable_mkldnn")
        assert {k: cfg[k] for k in keys} == {k: defaults[k] for k in keys}
