"""The released UFO model as its users run it: tools/eval.py -c configs/ufo_released.yaml on the
reference's test-set layout, and tools/export_model.py + deploy/python/predict_rec.py. The
checkpoint is ViT-Tiny-sized in the released key format; the expected numbers come from the numpy
forward in tests/released_reference.py, not from ppufo's code."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from ppufo.data.datasets import DATASETS
from released_reference import random_reference, reference_forward, reference_shapes, save_reference, unit

DIM, DEPTH, HEADS, IMG = 192, 2, 3, 32  # ViT-Tiny width and heads, 2 blocks, 32x32
TINY = ["Global.device=cpu", f"Global.image_shape=[3,{IMG},{IMG}]", "Arch.Backbone.name=ViT_tiny_patch16",
        f"Arch.Backbone.depth={DEPTH}", f"DataLoader.Eval.transforms.0.Resize.size=[{IMG},{IMG}]",
        "DataLoader.Eval.num_workers=0", "DataLoader.Eval.batch_size=64"]
COLUMNS = ["CALFW", "CPLFW", "LFW", "CFP-FF", "CFP-FP", "AgeDB-30", "Market1501", "DukeMTMC", "MSMT17",
           "VeRi-776", "VehicleID", "VeRi-Wild", "SOP"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    w = random_reference(reference_shapes(DEPTH, DIM, (IMG // 16) ** 2 + 1))
    return w, save_reference(w, tmp_path_factory.mktemp("released") / "allinone_tiny.pdmodel")


def run_tool(script, *args):
    proc = subprocess.run([sys.executable, script, "-c", "configs/ufo_released.yaml", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def reference_features(w, paths, head):
    """The reference's eval preprocessing (PIL RGB, bicubic resize, (x - 127.5) / 127.5) and forward."""
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((IMG, IMG), Image.BICUBIC), np.float64)
                       .transpose(2, 0, 1) for p in paths])
    return unit(reference_forward(w, (images - 127.5) / 127.5, head, HEADS))


def test_eval_prints_the_ufo_table_on_the_reference_layout(released, ufo_tree, tmp_path):
    w, path = released
    root, _ = ufo_tree
    out = run_tool("tools/eval.py", "-o", f"Global.pretrained_model={path}", f"Global.data_root={root}",
                   f"Global.output_dir={tmp_path}", *TINY)
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| CALFW"))
    header, cells = ([c.strip() for c in lines[k].strip("| \n").split("|")] for k in (i, i + 1))
    assert header == COLUMNS  # every reference set lands in its paper column
    row = dict(zip(header, cells))
    assert row.pop("DukeMTMC") == "-" and "-" not in row.values()  # the reference does not evaluate Duke
    # SOP as the reference scores it: cosine over all test images, the first hit dropped
    test = DATASETS.build({"name": "SOPCsvList", "root": os.path.join(root, "Stanford_Online_Products")}).test()
    feats, labels = reference_features(w, [r.key for r in test], "task4"), np.array([r.pid for r in test])
    order = np.argsort(-(feats @ feats.T), axis=1, kind="stable")
    assert row["SOP"] == f"{100 * np.mean(labels[order[:, 1]] == labels):.2f}"


def test_exported_models_give_the_reference_features_through_predict_rec(released, ufo_tree, tmp_path):
    w, path = released
    root, _ = ufo_tree
    out = run_tool("tools/export_model.py", "-o", f"Global.pretrained_model={path}",
                   f"Export.save_dir={tmp_path / 'inference'}", *TINY)
    assert sorted(os.listdir(tmp_path / "inference")) == ["face", "person", "product", "vehicle"], out
    for task, head, folder in (("face", "task1", "faces_emore_val/lfw"), ("product", "task4", "Stanford_Online_Products/bicycle_final")):
        images = os.path.join(root, folder)
        npz = tmp_path / f"{task}.npz"
        subprocess.run([sys.executable, "deploy/python/predict_rec.py", "--model_dir", str(tmp_path / "inference" / task),
                        "--images", images, "--save_features", str(npz)], cwd=ROOT, check=True, capture_output=True)
        saved = np.load(npz)
        np.testing.assert_allclose(saved["features"], reference_features(w, list(saved["paths"]), head), atol=1e-5)
