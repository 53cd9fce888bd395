"""Budgets and reductions against the deployed All-in-One ViT as well as the supernet's largest path."""
import numpy as np
import pytest

from ppufo.arch.backbone.vit import VisionTransformer
from ppufo.arch.memory_plan import parameter_count
from ppufo.arch.space import SearchSpace, load_subnet
from ppufo.nas.budget import (Budget, allinone_cost, allinone_subnet, budget_type, reduction_text, reductions,
                              resolve_budget)
from ppufo.nas.search import BudgetedSearch, Measure
from ppufo.nas.cache import MeasureCache
from ppufo.utils.config import load_config
from ppufo.utils.errors import ConfigError


def demo_space():
    # configs/supernet_quickstart.yaml's space at its 64x64 images
    return SearchSpace(192, 6, 3, 64, 4.0, [2, 3, 4, 5, 6], [1, 2, 3], [0.25, 0.5, 0.75, 1.0], img_size=(64, 64))


def search_cfg(budget, kind="latency_ms"):
    return {"budget": budget, "budget_type": kind}


def test_allinone_counts_equal_the_built_plain_vits():
    from ppufo.arch import build_model
    q = load_config("configs/quickstart.yaml")  # the ViT-Tiny the quickstart deploys
    deployed = build_model(q, {t: 3 for t in q["Tasks"]}).backbone
    sp = demo_space()
    assert allinone_cost(sp, "params") == parameter_count(deployed.parameters()) == 2820672
    assert allinone_cost(sp, "flops") == deployed.forward_flops() == 96293376
    # a shape where heads x head_dim != embed_dim, no qkv bias, a non-square grid
    odd = SearchSpace(96, 3, 2, 32, 2.0, [1, 3], [1, 2], [0.5, 1.0], patch_size=16, img_size=(32, 48),
                      qkv_bias=False)
    vit = VisionTransformer(img_size=(32, 48), patch_size=16, embed_dim=96, depth=3, num_heads=2, head_dim=32,
                            mlp_ratio=2.0, qkv_bias=False)
    assert allinone_cost(odd, "params") == parameter_count(vit.parameters())
    assert allinone_cost(odd, "flops") == vit.forward_flops()
    # configs/supernet_vitl.yaml at 384x384: plain ViT-L (what All-in-One deploys) vs the mix-everywhere path
    vitl = SearchSpace(1024, 24, 16, 64, 4.0, [20, 22, 24], [12, 14, 16], [0.75, 0.875, 1.0], img_size=(384, 384))
    assert (allinone_cost(vitl, "params"), vitl.params(vitl.largest())) == (303690752, 505115648)


def test_demo_reductions_state_both_denominators():
    sp = demo_space()
    person = load_subnet("configs/subnets/person_demo.json")
    r = reductions(sp, person)["params"]
    assert (r["subnet"], r["allinone"], r["largest"]) == (1833600, 2820672, 4594752)
    assert r["vs_allinone"] == pytest.approx(1833600 / 2820672 - 1) and r["vs_largest"] == pytest.approx(1833600 / 4594752 - 1)
    assert reduction_text(sp, person) == ("1.834M params: 35% fewer than the All-in-One ViT (2.821M), "
                                          "60% fewer than the largest path (4.595M)")
    assert reduction_text(sp, person, "flops") == ("62.5M flops: 35% fewer than the All-in-One ViT (96.29M), "
                                                   "60% fewer than the largest path (156.5M)")
    # the largest path is larger than the deployed model
    assert reduction_text(sp, sp.largest()).startswith("4.595M params: 63% more than the All-in-One ViT")


def test_relative_budgets_resolve_against_the_allinone_vit():
    sp = demo_space()
    assert resolve_budget(search_cfg({"params": 0.75}), sp) == Budget("params", 0.75 * 2820672, 0.75, 2820672)
    assert resolve_budget(search_cfg({"flops": 0.5}), sp).value == 0.5 * 96293376
    assert resolve_budget(search_cfg(3.0e6, "params"), sp) == Budget("params", 3.0e6)  # absolute as before
    timed = []
    b = resolve_budget(search_cfg({"latency_ms": 0.8}), sp, lambda s: timed.append(s) or 5.0)
    assert b == Budget("latency_ms", 4.0, 0.8, 5.0) and timed == [allinone_subnet(sp)]
    assert sp.params(allinone_subnet(sp)) == allinone_cost(sp, "params")  # it is the All-in-One's shape
    assert b.text() == "latency_ms <= 4 (0.8 x the All-in-One ViT's 5)"
    # an override spells it as YAML
    cfg = load_config("configs/supernet_quickstart.yaml", ["Search.budget={params: 0.75}"])
    assert budget_type(cfg["Search"]) == "params" and cfg["Search"]["budget"] == {"params": 0.75}


@pytest.mark.parametrize("budget, message", [
    ({"params": 0}, r"Search.budget.params: 0; expected a fraction of the All-in-One ViT in \(0, 1\]"),
    ({"params": -0.5}, r"Search.budget.params: -0.5"),
    ({"flops": 1.2}, r"Search.budget.flops: 1.2; expected a fraction .* give an absolute Search.budget"),
    ({"params": "0.7"}, r"Search.budget.params: '0.7'"),
    ({"params": True}, r"Search.budget.params: True"),
    ({"watts": 0.5}, r"Search.budget: \{'watts': 0.5\}; a relative budget is one key of params, flops, latency_ms"),
    ({"params": 0.5, "flops": 0.5}, r"Search.budget: .*one key"),
    (None, r"Search.budget: required \(with Search.budget_type=latency_ms\)"),
])
def test_bad_budgets_are_refused_naming_the_key(budget, message):
    with pytest.raises(ConfigError, match=message):
        resolve_budget(search_cfg(budget), demo_space(), lambda s: 1.0)


def test_relative_latency_needs_the_allinone_shape_and_a_latency_source():
    narrow = SearchSpace(192, 6, 3, 64, 4.0, [2, 6], [1, 3], [0.5, 0.75], img_size=(64, 64))
    assert allinone_subnet(narrow) is None
    with pytest.raises(ConfigError, match="Search.budget.latency_ms: relative latency needs the All-in-One shape"):
        resolve_budget(search_cfg({"latency_ms": 0.5}), narrow, lambda s: 1.0)
    with pytest.raises(ConfigError, match="and a latency source"):
        resolve_budget(search_cfg({"latency_ms": 0.5}), demo_space(), None)
    mix_only = SearchSpace(192, 6, 3, 64, 4.0, [6], [3], [1.0], paths=["mix"], img_size=(64, 64))
    assert allinone_subnet(mix_only) is None


def test_a_search_under_a_relative_budget_carries_it_and_stays_within_it(tmp_path):
    sp = demo_space()
    budget = resolve_budget(search_cfg({"params": 0.75}), sp)
    acc = lambda s: 0.5 + 0.4 * np.tanh(sp.params(s) / 4e6)
    accuracy = {"person": Measure(acc, MeasureCache(str(tmp_path / "a.jsonl"), {}), "acc")}
    res = BudgetedSearch(sp, accuracy, "params", budget, num_samples=8, num_candidates=100, num_verify=2,
                         log=lambda m: None).run()["person"]
    assert res["budget"] is budget and res["measured"]["params"] <= 0.75 * 2820672
    with pytest.raises(ConfigError, match="Search.budget is a params budget; budget_type is flops"):
        BudgetedSearch(sp, accuracy, "flops", budget)


def test_search_tool_logs_the_relative_budget_and_both_reductions(demo_root, tmp_path, monkeypatch):
    import sys

    import paddle

    from ppufo.arch import build_model
    from ppufo.cli import search_subnet
    from ppufo.utils.checkpoint import save_checkpoint
    from helpers import tiny_supernet_config
    paddle.seed(0)
    model = build_model(tiny_supernet_config(demo_root, tmp_path), {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    save_checkpoint(str(tmp_path / "super"), model, states={"iteration": 0})
    deployed = allinone_cost(model.space, "params")
    base = ["tools/search_subnet.py", "-c", "configs/supernet_quickstart.yaml", "-o", f"Global.data_root={demo_root}",
            "Global.generate_demo_data=false", "Global.image_shape=[3,32,32]", "Arch.Backbone.embed_dim=48",
            "Arch.Backbone.depth=3", "Arch.Backbone.depths=[2,3]", "DataLoader.Eval.num_workers=0",
            f"Global.pretrained_model={tmp_path}/super", "Search.val_sets=null", "Search.num_samples=5",
            "Search.num_candidates=50", "Search.num_verify=2", "Search.verify_rounds=1",
            f"Search.cache_dir={tmp_path}/cache", f"Search.save_dir={tmp_path}/search"]
    monkeypatch.setattr(sys, "argv", base + ["Search.budget={flops: 1.5}"])
    with pytest.raises(SystemExit, match=r"error: Search.budget.flops: 1.5; expected a fraction"):
        search_subnet.main()
    assert not (tmp_path / "search").exists()  # refused before the supernet loads
    monkeypatch.setattr(sys, "argv", base + ["Search.budget={params: 0.9}"])
    search_subnet.main()
    log = open(tmp_path / "search" / "search.log").read()
    assert f"budget: params <= {0.9 * deployed:.4g} (0.9 x the All-in-One ViT's {deployed:.4g})" in log
    line = next(l for l in log.splitlines() if "[person] backbone" in l)
    assert f"the All-in-One ViT ({deployed / 1e6:.4g}M)" in line
    assert f"the largest path ({model.space.params(model.space.largest()) / 1e6:.4g}M)" in line
