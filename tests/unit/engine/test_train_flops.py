"""Training FLOPs counted per pass: All-in-One steps, a supernet's sandwich passes, the plan of a
config's step, and the count surviving a resume."""
import json

import pytest

from helpers import tiny_config, tiny_supernet_config
from ppufo.arch.backbone.vit import vit_flops
from ppufo.utils.errors import ConfigError


def vit(embed, patches, blocks):
    return vit_flops(embed, 16, patches, blocks)


def test_all_in_one_counts_three_forwards_of_every_image_per_step(demo_root, tmp_path):
    from ppufo.engine import build_trainer
    from ppufo.engine.train_flops import planned_step_flops
    cfg = tiny_config(demo_root, tmp_path / "out", ["Global.max_iters=2", "Global.save_interval=0"])
    trainer = build_trainer(cfg)
    trainer.train()
    # ViT-Tiny (192 wide, 3 heads, MLP 768), depth 2, 32x32: 4 patches; 4 tasks x 8 images a step
    per_image = vit(192, 4, [(192, 768)] * 2)
    assert trainer.train_flops == 2 * 3 * 32 * per_image
    assert planned_step_flops(cfg) == 3 * 32 * per_image
    with open(tmp_path / "out" / "iter_2.pdstates") as f:  # what latest names
        assert json.load(f)["train_flops"] == trainer.train_flops
    resumed = build_trainer(tiny_config(demo_root, tmp_path / "out", [
        "Global.max_iters=3", f"Global.checkpoints={tmp_path / 'out' / 'latest'}"]))
    assert resumed.train_flops == 2 * 3 * 32 * per_image  # the count goes on from the checkpoint
    one_task = tiny_config(demo_root, tmp_path / "p", ["Tasks.face=null", "Tasks.vehicle=null", "Tasks.product=null"])
    assert planned_step_flops(one_task) == 3 * 8 * per_image


def test_a_sandwich_step_counts_each_pass_on_each_tasks_subnet(demo_root, tmp_path):
    from ppufo.engine import build_trainer
    trainer = build_trainer(tiny_supernet_config(demo_root, tmp_path, "Supernet.sandwich=[largest,smallest]",
                                                 "Global.max_iters=1", "Global.save_interval=0"))
    trainer.train()
    # embed 48, 3 heads of 16, full hidden 192: the largest runs 3 blocks on the mix path (both
    # FFNs, 2 x 192 hidden), the smallest 2 blocks of 1 head on one FFN at 0.25 width (48)
    largest, smallest = vit(48, 4, [(48, 384)] * 3), vit(48, 4, [(16, 48)] * 2)
    assert trainer.train_flops == 3 * 32 * (largest + smallest)


def test_planning_a_step_needs_a_plain_vit_and_heterogeneous_batches(demo_root, tmp_path):
    from ppufo.engine.train_flops import planned_step_flops
    homo = tiny_config(demo_root, tmp_path, ["DataLoader.Train.batch_sampler.name=HomogeneousBatchSampler"])
    with pytest.raises(ConfigError, match="batch_sampler.name is HomogeneousBatchSampler"):
        planned_step_flops(homo)
    with pytest.raises(ConfigError, match="a supernet's FLOPs per step depend on the subnets"):
        planned_step_flops(tiny_supernet_config(demo_root, tmp_path))
