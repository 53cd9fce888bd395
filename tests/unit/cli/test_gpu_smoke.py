"""ppufo-gpu-smoke: its checks on recorded numbers, and its whole flow on this CPU (the GPU gate
bypassed by the hidden --allow_cpu), where the memory and attention checks do not apply."""
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from helpers import ROOT, tiny_config
from ppufo.cli import gpu_smoke as gs
from ppufo.utils.config import dump_config
from ppufo.utils.errors import ConfigError

GiB = 2 ** 30


def test_loss_check_takes_the_worst_step_relative_to_fp32():
    fp32 = [6.90, 6.80, 6.60, 6.40]
    ok = gs.loss_check(fp32, [6.92, 6.78, 6.63, 6.41], rtol=0.05)
    assert ok.ok is True and "largest relative difference 0.45% at step 3 (fp32 6.6000, AMP 6.6300)" in ok.detail
    bad = gs.loss_check(fp32, [6.90, 7.50, 6.60, 6.40], rtol=0.05)
    assert bad.ok is False and "10.29% at step 2" in bad.detail and "tolerance 5.00%" in bad.detail
    assert gs.loss_check(fp32, [6.90, 7.50, 6.60, 6.40], rtol=0.11).ok is True
    nan = gs.loss_check(fp32, [6.9, 6.8, float("nan"), 6.4], rtol=0.05)
    assert nan.ok is False and nan.detail == "AMP loss is nan at step 3"
    with pytest.raises(ValueError, match="loss curves of 4 and 3 steps"):
        gs.loss_check(fp32, fp32[:3], 0.05)


def test_images_per_second_leaves_out_the_warm_up_steps():
    assert gs.images_per_second([32, 32, 32, 32], [5.0, 1.0, 1.0, 2.0], warmup=1) == 24.0
    assert gs.images_per_second([32, 32, 32, 32], [5.0, 1.0, 1.0, 2.0], warmup=0) == 128 / 9
    with pytest.raises(ValueError, match="no timed steps after 4 warm-up steps of 4"):
        gs.images_per_second([32] * 4, [1.0] * 4, warmup=4)
    assert gs.speed_check(100.0, 180.0).detail == "100.0 images/s per GPU in fp32, 180.0 in AMP (1.80x)"


def test_memory_check_compares_the_measured_peak_with_the_plan():
    within = gs.memory_check("fp32", 10 * GiB, 14 * GiB, 11 * GiB, gpus=8)
    assert within.ok is True and within.detail == ("plan 14.00 GiB (11.00 GiB of tensors + margin) at --gpus 8; "
                                                   "measured peak allocated 10.00 GiB")
    margin = gs.memory_check("fp32", 12 * GiB, 14 * GiB, 11 * GiB, gpus=8)
    assert margin.ok is True and margin.detail.endswith("(above the counted tensors, within the margin)")
    over = gs.memory_check("AMP bfloat16 O1", 15 * GiB, 14 * GiB, 11 * GiB, gpus=8)
    assert over.ok is False and over.name == "memory AMP bfloat16 O1"
    assert gs.memory_check("fp32", None, 14 * GiB, 11 * GiB, 1).ok is None


def test_attention_check_fails_the_math_path_where_attention_is_fused():
    assert gs.attention_check(Counter(math=6), True, on_gpu=False, run="AMP").ok is None
    flash = gs.attention_check(Counter(flash_attn=48), True, on_gpu=True, run="AMP")
    assert flash.ok is True and flash.detail == "AMP run: flash_attn 48 calls"
    mixed = gs.attention_check(Counter(flash_attn=46, math=2), True, on_gpu=True, run="AMP")
    assert mixed.ok is False and "flash_attn 46, math 2 calls" in mixed.detail
    efficient = gs.attention_check(Counter(mem_efficient=48), True, on_gpu=True, run="fp32")
    assert efficient.ok is True and efficient.detail.endswith("(memory-efficient, not flash)")
    assert gs.attention_check(Counter(math=48), False, on_gpu=True, run="AMP").ok is None  # fused_attention off
    assert gs.attention_check(Counter(), True, on_gpu=True, run="AMP").ok is None  # no attention (a CNN)


def test_feature_check_and_the_report():
    ref = np.zeros((4, 8), np.float32)
    assert gs.feature_check("x", ref + 5e-4, ref, 1e-3).ok is True
    assert gs.feature_check("x", ref + 2e-3, ref, 1e-3).ok is False
    shape = gs.feature_check("x", ref[:, :4], ref, 1e-3)
    assert shape.ok is False and shape.detail == "features of shape [4, 4], dygraph [4, 8]"
    checks = [gs.Check("loss", True, "a"), gs.Check("speed", None, "b"), gs.Check("memory fp32", False, "c")]
    assert gs.report(checks) == ["  PASS  loss: a", "  INFO  speed: b", "  FAIL  memory fp32: c",
                                 "gpu smoke: FAILED (memory fp32)"]
    assert gs.report(checks[:2])[-1] == "gpu smoke: passed (1 checks)"


def test_smoke_config_runs_the_per_gpu_batch_without_eval_or_checkpoints(tmp_path):
    config = tiny_config(str(tmp_path), tmp_path / "out", ["Global.eval_interval=5", "Tasks.person.batch_size=16"])
    cfg = gs.smoke_config(config, 20, 2, "gpu", str(tmp_path / "amp"), amp=True)
    g = cfg["Global"]
    assert (g["device"], g["max_iters"], g["eval_interval"], g["save_interval"], g["output_dir"]) == \
        ("gpu", 20, 0, 0, str(tmp_path / "amp"))
    assert g["amp"]["enable"] is True and config["Global"]["amp"]["enable"] is False  # a copy
    assert {t: c["batch_size"] for t, c in cfg["Tasks"].items()} == {"face": 4, "person": 8, "vehicle": 4,
                                                                      "product": 4}
    with pytest.raises(ConfigError, match="Tasks.face.batch_size=8 is not divisible by --gpus 3"):
        gs.smoke_config(config, 20, 3, "gpu", str(tmp_path), amp=False)


@pytest.mark.skipif(gs.no_gpu_reason() is None, reason="a GPU is visible: the tool would run")
def test_without_a_gpu_the_tool_says_so_and_exits_2():
    proc = subprocess.run([sys.executable, "tools/gpu_smoke.py", "-c", "configs/quickstart.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "ppufo-gpu-smoke: paddlepaddle" in proc.stderr and "is a CPU-only build; nothing was run" in proc.stderr
    with pytest.raises(RuntimeError, match="CPU-only build"):
        gs.smoke({})  # the function refuses too, before reading the config


def test_the_whole_flow_runs_on_the_cpu_with_the_test_hook(demo_root, tmp_path):
    config = tiny_config(demo_root, tmp_path / "unused")
    dump_config(config, str(tmp_path / "tiny.yaml"))
    work = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "tools/gpu_smoke.py", "-c", str(tmp_path / "tiny.yaml"), "--steps", "3",
                           "--work_dir", str(work), "--allow_cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    report = lines[lines.index(next(ln for ln in lines if ln.startswith("  PASS  loss"))):]
    # same seed, same batches, and autocast does nothing on a CPU: the two curves are the same
    assert report[0].startswith("  PASS  loss: AMP vs fp32 over 3 steps: largest relative difference 0.00%")
    assert report[1].startswith("  INFO  speed: ") and "images/s on the CPU in fp32" in report[1]
    assert report[2].startswith("  INFO  memory fp32: plan ") and report[2].endswith("not measured (no GPU)")
    assert report[3].startswith("  INFO  memory AMP bfloat16 O1: plan ")
    assert report[4] == ("  INFO  attention: not applicable on a CPU (Paddle's scaled_dot_product_attention has "
                         "only its math path there; fp32 run: {'math': 6})")  # 3 steps x 2 blocks
    assert report[5].startswith("  PASS  export face -> Paddle Inference (cpu): max |difference| to the dygraph")
    assert report[6] == "  INFO  export face -> TensorRT fp32: skipped: not applicable on a CPU"
    assert report[7] == "gpu smoke: passed (2 checks)"
    assert os.path.isfile(work / "fp32" / "export" / "face" / "inference.json")
    assert "Global.amp is ignored on cpu" in (work / "amp" / "train.log").read_text()
    assert not os.path.exists(work / "fp32" / "latest.pdparams")  # no checkpoints


def test_a_failed_check_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ppufo-gpu-smoke", "-c", "configs/quickstart.yaml", "--allow_cpu"])
    monkeypatch.setattr("ppufo.arch.trained.check_source", lambda config: None)
    monkeypatch.setattr("ppufo.demo.ensure_demo_data", lambda config: None)
    monkeypatch.setattr(gs, "smoke", lambda *a, **k: [gs.Check("loss", False, "AMP loss is nan at step 2")])
    with pytest.raises(SystemExit) as e:
        gs.main()
    assert e.value.code == 1 and "FAIL  loss: AMP loss is nan at step 2" in capsys.readouterr().out
