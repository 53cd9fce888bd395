"""The One-for-All command chain: train a supernet, extract a subnet, use it with the normal tools."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from helpers import ROOT

TINY = ["Global.image_shape=[3,32,32]", "DataLoader.Train.transforms.0.Resize.size=[32,32]",
        "Global.log_interval=1", "Global.use_visualdl=false", "Global.generate_demo_data=false",
        "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0", "Arch.Backbone.embed_dim=48",
        "Arch.Backbone.depth=3", "Arch.Backbone.depths=[2,3]", "Tasks.face.batch_size=8",
        "Tasks.person.batch_size=8", "Tasks.vehicle.batch_size=8", "Tasks.product.batch_size=8"]


def run(tool, config, *overrides):
    cmd = [sys.executable, f"tools/{tool}", "-c", config, "-o", *overrides]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_train_extract_then_eval_export_and_finetune_the_subnet(demo_root, tmp_path):
    cfg = f"{ROOT}/configs/supernet_quickstart.yaml"
    base = [f"Global.data_root={demo_root}", f"Global.output_dir={tmp_path}/super", *TINY]
    log = run("train.py", cfg, *base, "Global.max_iters=2", "Global.pretrained_model=null")  # from scratch
    assert "supernet search space: depth [2, 3]" in log and "[Eval]" in log

    subnet = {"depth": 2, "heads": [3, 1], "paths": ["mix", "task"], "ratios": [0.5, 0.5]}
    (tmp_path / "sub.json").write_text(json.dumps({"task": "person", "subnet": subnet}))
    out_dir = tmp_path / "person"
    log = run("extract_subnet.py", cfg, *base, f"Global.pretrained_model={tmp_path}/super/latest",
              "Extract.task=person", f"Extract.subnet={tmp_path}/sub.json", f"Extract.save_dir={out_dir}", "--eval")
    diff = float(log.split("max |feature diff| vs the supernet path ")[1].split()[0])
    assert diff < 1e-5
    assert "fewer" in log and "supernet path vs extracted subnet" in log and "Market1501" in log
    saved = yaml.safe_load((out_dir / "config.yaml").read_text())
    assert list(saved["Tasks"]) == ["person"] and saved["Arch"]["Backbone"]["block_heads"] == [3, 1]
    assert saved["Arch"]["Backbone"]["block_mlp_hidden"] == [2 * 96, 96]  # mix concatenates both FFNs
    assert json.loads((out_dir / "subnet.json").read_text())["subnet"] == subnet
    # the extracted neck carries statistics recomputed for the subnet, not the supernet's running ones
    from ppufo.arch.trained import load_trained_model
    from ppufo.engine.calibrate import NeckCalibration
    from ppufo.io.weights import weights_file
    from ppufo.utils.config import load_config
    plain = load_trained_model(load_config(str(out_dir / "config.yaml"), [f"Global.data_root={demo_root}"]))
    saved_mean = plain.heads["person"].neck.bn._mean.numpy().copy()
    running = paddle.load(weights_file(f"{tmp_path}/super/latest"))["heads.person.neck.bn._mean"]
    recomputed, _ = NeckCalibration(load_config(str(out_dir / "config.yaml"), [f"Global.data_root={demo_root}"]),
                                    "person", 512)(plain)
    np.testing.assert_allclose(saved_mean, recomputed, rtol=1e-4, atol=1e-5)
    assert np.abs(saved_mean - np.asarray(running)).max() > 1e-3

    # extracting the full path itself: the side-by-side table has identical columns
    log = run("extract_subnet.py", cfg, *base, f"Global.pretrained_model={tmp_path}/super/latest",
              "Extract.task=person,vehicle", "Extract.subnet=smallest", f"Extract.save_dir={tmp_path}/pv",
              "Supernet.eval_subnet=smallest", "--eval")
    rows = [line.split() for line in log.split("supernet path vs extracted subnet:")[1].splitlines()[2:4]]
    assert [r[0] for r in rows] == ["Market1501", "VeRi776"] and all(r[1] == r[2] for r in rows), rows

    log = run("eval.py", str(out_dir / "config.yaml"), f"Global.data_root={demo_root}")
    assert "Market1501" in log and "lfw" not in log
    run("export_model.py", str(out_dir / "config.yaml"), f"Export.save_dir={tmp_path}/inference")
    refused = subprocess.run([sys.executable, "tools/export_model.py", "-c", cfg, "-o", *base,
                              f"Global.pretrained_model={tmp_path}/super/latest"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 1 and "extract a subnet first" in refused.stderr
    assert sorted(os.listdir(tmp_path / "inference")) == ["inference.json", "inference.pdiparams", "inference.yml"]
    # fine-tuning starts from the extracted weights (Global.pretrained_model in its config)
    log = run("train.py", str(out_dir / "config.yaml"), f"Global.data_root={demo_root}",
              f"Global.output_dir={tmp_path}/finetune", "Global.max_iters=1", "Global.use_visualdl=false",
              "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0")
    assert "loaded pretrained weights" in log


def test_supernet_starts_from_an_all_in_one_checkpoint(tmp_path):
    from ppufo.arch.backbone import build_backbone
    paddle.seed(0)
    plain = build_backbone({"name": "VisionTransformer", "embed_dim": 48, "depth": 3, "num_heads": 3},
                           img_size=[32, 32])
    paddle.save({"backbone." + k: v for k, v in plain.state_dict().items()} | {"heads.person.x": paddle.ones([1])},
                str(tmp_path / "aio.pdparams"))
    net = build_backbone({"name": "ViTSupernet", "embed_dim": 48, "depth": 3, "num_heads": 3,
                          "pretrained": str(tmp_path / "aio")}, img_size=[32, 32], tasks=["person"])
    plain.eval(), net.eval()
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_allclose(net(x, "person", net.space.uniform(3, 3, "task", 1.0)).numpy(), plain(x).numpy(),
                               atol=1e-5)
    from ppufo.utils.errors import ConfigError
    with pytest.raises(ConfigError, match="pretrained: .*nowhere.pdparams not found"):
        build_backbone({"name": "ViTSupernet", "embed_dim": 48, "depth": 3, "num_heads": 3,
                        "pretrained": str(tmp_path / "nowhere")}, img_size=[32, 32], tasks=["person"])


@pytest.mark.slow
def test_tipc_chain_for_an_extracted_subnet(demo_root, tmp_path):
    """train supernet -> eval -> extract (pre_export) -> export -> Paddle Inference -> compare."""
    txt = tmp_path / "train_infer_python.txt"
    with open(f"{ROOT}/test_tipc/configs/ufo_supernet_subnet_tiny/train_infer_python.txt") as f:
        txt.write_text(f.read().replace("./data/tipc_demo", demo_root))
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # the script runs `python`
    proc = subprocess.run(["bash", "test_tipc/test_train_inference_python.sh", str(txt), "lite_train_lite_infer"],
                          cwd=ROOT, env=dict(os.environ, TIPC_OUTPUT=str(tmp_path / "out"), PATH=path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out" / "ufo_supernet_subnet_tiny" / "lite_train_lite_infer"
    lines = (out / "results_python.log").read_text().splitlines()
    assert [line.split(" - ")[2].split()[1] for line in lines] == \
        ["tools/train.py", "tools/eval.py", "tools/extract_subnet.py", "tools/export_model.py"] + \
        ["deploy/python/predict_rec.py", "test_tipc/compare_features.py"] * 2
    assert all(line.startswith("Run successfully") for line in lines)
    diffs = [float(p.read_text().split("max |inference - dygraph| = ")[1].split()[0]) for p in out.glob("compare_*.log")]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
