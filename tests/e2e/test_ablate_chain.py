"""ppufo-ablate on a tiny claim-4 chain (configs/ablations/allinone_subnet.yaml's arms, a few steps,
one seed): All-in-One, a supernet started from it, a budgeted subnet search on that, and the
subnet's shape trained from scratch for the same training FLOPs."""
import json
import math
import os
import subprocess
import sys

import yaml

from helpers import ROOT
from ppufo.arch.backbone.vit import vit_flops, vit_param_count

PERSON_ONLY = ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"]


def tiny_chain(demo_root, val_root):
    return {
        "description": "claim 4, tiny",
        "base": os.path.join(ROOT, "configs", "quickstart.yaml"),
        "overrides": ["Global.image_shape=[3,32,32]", "DataLoader.Train.transforms.0.Resize.size=[32,32]",
                      "Arch.Backbone.depth=2", "Global.max_iters=3", "Global.log_interval=1", "Global.save_interval=0",
                      "DataLoader.Train.num_workers=0", "DataLoader.Eval.num_workers=0",
                      *[f"Tasks.{t}.batch_size=8" for t in ("face", "person", "vehicle", "product")],
                      "Tasks.person.test_sets=[{name: Market1501, root: market1501}]",
                      f"Global.data_root={demo_root}", "Global.generate_demo_data=false"],
        "seeds": [0],
        "arms": {
            "allinone": {"overrides": []},
            "supernet": {"base": os.path.join(ROOT, "configs", "supernet_quickstart.yaml"), "init_from": "allinone",
                         "overrides": ["Arch.Backbone.depths=[1,2]", "Global.max_iters=2",
                                       "Supernet.calibration_images=16", "Extract.calibration_images=16"]},
            "person_subnet": {"from": "supernet", "search": {
                "task": "person", "budget": {"params": 0.8}, "metric": "mAP", "num_samples": 8, "num_candidates": 50,
                "num_verify": 1, "verify_rounds": 1, "calibration_images": 16,
                "val_sets": {"person": [{"name": "DukeMTMC", "root": val_root}]}}},
            "person_scratch": {"shape_from": "person_subnet", "compute_of": ["allinone", "supernet"],
                               "overrides": PERSON_ONLY}},
        "compare": {"sets": ["Market1501"], "metrics": ["rank1", "mAP"],
                    "pairs": [{"arms": ["person_subnet", "allinone"], "claim": "no_worse", "margin": 0.01},
                              {"arms": ["person_subnet", "person_scratch"], "claim": "greater"}]}}


def result(out, arm):
    with open(out / "runs" / arm / "seed_0" / "result.json") as f:
        return json.load(f)


def test_the_claim_4_chain_runs_every_arm_kind(demo_root, tmp_path):
    from ppufo.demo.reid import write_person_val
    val = tmp_path / "person_val"
    write_person_val(str(val), num_test_ids=16, num_gallery_only_ids=2)
    exp = tmp_path / "chain.yaml"
    exp.write_text(yaml.safe_dump(tiny_chain(demo_root, str(val))))
    out = tmp_path / "study"
    proc = subprocess.run([sys.executable, "tools/ablate.py", str(exp), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    allinone, supernet, sub, scratch = (result(out, a) for a in
                                        ("allinone", "supernet", "person_subnet", "person_scratch"))
    assert [r["kind"] for r in (allinone, supernet, sub, scratch)] == ["train", "train", "search", "train"]

    # All-in-One: 3 steps of 4 tasks x 8 images through ViT-Tiny depth 2 at 32x32 (4 patches), x 3
    full = vit_flops(192, 16, 4, [(192, 768)] * 2)
    assert allinone["train_flops"] == 3 * 3 * 32 * full
    run = out / "runs"
    cfg = yaml.safe_load((run / "supernet" / "seed_0" / "config.yaml").read_text())
    assert cfg["Global"]["pretrained_model"] == str(run / "allinone" / "seed_0" / "latest")
    # the supernet: 2 steps of 3 passes (largest = mix everywhere, 1.5x+ an All-in-One pass; a random; the smallest)
    assert 2 * 3 * 32 * 1.5 * full < supernet["train_flops"] < 2 * 3 * 3 * 32 * 2 * full

    # the search: a subnet within 0.8x the All-in-One's backbone parameters, extracted and scored
    allinone_params = vit_param_count(192, 16, 4, [(192, 768)] * 2)
    s = sub["subnet"]
    assert s["reduction"]["params"]["allinone"] == allinone_params
    assert s["params"] <= 0.8 * allinone_params and s["budget"]["value"] == 0.8 * allinone_params
    assert s["reduction"]["params"]["vs_allinone"] == s["params"] / allinone_params - 1
    assert os.path.isfile(run / "person_subnet" / "seed_0" / "subnet" / "model.pdparams")
    assert set(sub["scores"]["Market1501"]) >= {"rank1", "mAP"}

    # from scratch: the subnet's shape, person only, steps that spend the two sources' FLOPs
    backbone = s["Arch"]["Backbone"]
    widths = [(h * backbone["head_dim"], m) for h, m in zip(backbone["block_heads"], backbone["block_mlp_hidden"])]
    per_step = 3 * 8 * vit_flops(192, 16, 4, widths)
    steps = math.floor((allinone["train_flops"] + supernet["train_flops"]) / per_step + 0.5)
    assert scratch["steps"] == steps == scratch["taken"]["compute_of"]["max_iters"]
    assert scratch["train_flops"] == steps * per_step  # the trainer's own count agrees with the plan
    cfg = yaml.safe_load((run / "person_scratch" / "seed_0" / "config.yaml").read_text())
    assert cfg["Global"]["max_iters"] == steps and list(cfg["Tasks"]) == ["person"]
    assert {k: cfg["Arch"]["Backbone"][k] for k in ("depth", "block_heads", "block_mlp_hidden")} == \
        {k: backbone[k] for k in ("depth", "block_heads", "block_mlp_hidden")}
    assert cfg["Global"]["pretrained_model"] is None

    table = (out / "table.md").read_text()
    assert proc.stdout == table
    assert "| person_subnet - allinone | no_worse (margin 0.01) |" in table
    assert "| person_subnet - person_scratch | greater |" in table
    assert "### Subnets `person_subnet` chose" in table
