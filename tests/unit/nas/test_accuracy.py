"""A search measurement computes only: no table logged, no logger level touched, no file written."""
import logging

import numpy as np
import paddle
from PIL import Image

from helpers import tiny_supernet_config
from ppufo.arch import build_model
from ppufo.engine import evaluator as evaluator_module
from ppufo.nas.accuracy import SubnetAccuracy


def lists_with_an_unmatched_query(root):
    """Query ids 1, 2, 9 and gallery ids 1, 2, 3: the query of id 9 has nothing to find."""
    for split, ids in (("query", [1, 2, 9]), ("gallery", [1, 2, 3])):
        rows = []
        for n, pid in enumerate(ids):
            path = root / split / f"{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 8, 3), 40 * pid, np.uint8)).save(path)
            rows.append(f"{split}/{n}.jpg {pid}\n")
        (root / f"{split}.txt").write_text("".join(rows))


def test_a_measurement_logs_no_table_writes_no_file_and_warns_of_unmatched_queries_once(
        demo_root, tmp_path, monkeypatch):
    lists_with_an_unmatched_query(tmp_path / "mine")
    cfg = tiny_supernet_config(demo_root, tmp_path)
    paddle.seed(0)
    model = build_model(cfg, {"face": 5, "person": 6, "vehicle": 7, "product": 8})
    val = [{"name": "ImageList", "root": str(tmp_path / "mine"), "alias": "mine",
            "query_list": "query.txt", "gallery_list": "gallery.txt"}]
    bars = []
    tqdm = evaluator_module.tqdm
    monkeypatch.setattr(evaluator_module, "tqdm", lambda it, **kw: (bars.append(kw["disable"]), tqdm(it, **kw))[1])
    measure = SubnetAccuracy(cfg, model, "person", "rank1", val_sets=val)
    log = logging.getLogger("ppufo")
    records, levels = [], []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    embed = model.embed
    monkeypatch.setattr(model, "embed", lambda *a, **k: (levels.append(log.level), embed(*a, **k))[1])
    before = (log.level, sorted(p.name for p in tmp_path.rglob("*")))
    try:
        first, again = measure(model.space.smallest()), measure(model.space.smallest())
    finally:
        log.removeHandler(handler)
    assert first == again and 0 <= first <= 1
    assert (log.level, sorted(p.name for p in tmp_path.rglob("*"))) == before  # no eval_*.json anywhere
    assert set(levels) == {before[0]}  # the evaluation ran at the level it was called at
    assert bars and all(bars)  # the progress bars are off, by argument
    messages = [r.getMessage() for r in records]
    assert not any("[Eval]" in m for m in messages)
    assert [m for m in messages if "no match to find" in m] == [
        "person/mine: 1 of 3 queries have no match to find (its id is not in the gallery, only under the "
        "query's camera, or a distractor id); left out of the scores"]
