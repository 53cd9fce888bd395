"""Numeric options of the ppufo tools are range-checked by argparse: a bad value is a usage error
(status 2) naming the option and the allowed range, before any config or data is read."""
import importlib
import sys

import pytest

from ppufo.utils.config import arg_range

CFG = ["-c", "configs/quickstart.yaml"]


@pytest.mark.parametrize("tool, argv, message", [
    ("ablate", ["x.yaml", "--parallel", "0"], "argument --parallel: expected an integer >= 1, got '0'"),
    ("build_latency_table", CFG + ["--copies", "0"], "argument --copies: expected an integer >= 1, got '0'"),
    ("build_latency_table", CFG + ["--estimate_gflops", "0"], "argument --estimate_gflops: expected a number > 0, got '0'"),
    ("build_latency_table", CFG + ["--estimate_gflops", "nan"], "argument --estimate_gflops: expected a number > 0, got 'nan'"),
    ("build_latency_table", CFG + ["--overhead_ms", "-1"], "argument --overhead_ms: expected a number >= 0, got '-1'"),
    ("check_data", CFG + ["--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
    ("gpu_smoke", CFG + ["--steps", "1"], "argument --steps: expected an integer >= 2, got '1'"),
    ("gpu_smoke", CFG + ["--gpus", "0"], "argument --gpus: expected an integer >= 1, got '0'"),
    ("gpu_smoke", CFG + ["--loss_rtol", "0"], "argument --loss_rtol: expected a number > 0, got '0'"),
    ("gpu_smoke", CFG + ["--feature_atol", "nan"], "argument --feature_atol: expected a number > 0, got 'nan'"),
    ("make_demo_data", ["--seed", "-1"], "argument --seed: expected an integer >= 0 and <= 4294967295, got '-1'"),
    ("make_demo_data", ["--seed", "4294967296"], "argument --seed: expected an integer >= 0 and <= 4294967295"),
    ("onnx_export", ["--model_dir", "m", "--opset_version", "0"], "argument --opset_version: expected an integer >= 7"),
    ("plan_memory", CFG + ["--gpus", "0"], "argument --gpus: expected an integer >= 1, got '0'"),
    ("plan_memory", CFG + ["--gpu_mem", "-80"], "argument --gpu_mem: expected a number > 0, got '-80'"),
    ("plan_memory", CFG + ["--gpu_mem", "inf"], "argument --gpu_mem: expected a number > 0, got 'inf'"),
    ("visualize_ranks", CFG + ["--set", "x", "--topk", "0"], "argument --topk: expected an integer >= 1, got '0'"),
    ("visualize_ranks", CFG + ["--set", "x", "--num_queries", "-2"], "argument --num_queries: expected an integer >= 1"),
    ("visualize_ranks", CFG + ["--set", "x", "--tile_height", "8"], "argument --tile_height: expected an integer >= 16"),
    ("visualize_ranks", CFG + ["--set", "x", "--topk", "2.5"], "argument --topk: expected an integer >= 1, got '2.5'"),
])
def test_out_of_range_options_are_usage_errors(tool, argv, message, monkeypatch, capsys):
    main = importlib.import_module(f"ppufo.cli.{tool}").main
    monkeypatch.setattr(sys, "argv", [tool] + argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_arg_range_accepts_the_edges_and_types_the_value():
    assert arg_range(int, min=1)("1") == 1 and arg_range(int, min=0, max=3)("3") == 3
    assert arg_range(float, above=0)("1e-3") == pytest.approx(1e-3)
    assert isinstance(arg_range(float, min=0)("2"), float)
    assert arg_range(int)("-5") == -5  # unbounded
