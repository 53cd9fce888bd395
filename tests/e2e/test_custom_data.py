"""A fifth task on one's own data, added in YAML alone (configs/custom_example.yaml, docs/custom_data.md):
trained beside the quickstart's four and alone, from the list and the folder layout; exported, and
its test sets scored as a plain numpy implementation of each protocol scores the exported model's
features; indexed, searched and served; and bad test data refused naming the file and line.
The protocols are written here from their definitions, not imported from ppufo.metric."""
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest

from helpers import QUICK_SETS, ROOT
from ppufo.demo import write_all
from ppufo.utils.config import load_config
from ppufo.utils.errors import DataError

FOUR = ("face", "person", "vehicle", "product")
PAPER = ["CALFW", "CPLFW", "LFW", "CFP-FF", "CFP-FP", "AgeDB-30", "Market1501", "DukeMTMC", "MSMT17", "VeRi-776",
         "VehicleID", "VeRi-Wild", "SOP"]
LOGO = ["logo_list", "logo_list_all", "logo_folder", "logo_folder_all"]
SMALL = {"num_train_ids": 8, "num_test_ids": 6, "imgs_per_id": 4, "num_gallery_only_ids": 2}
CONFIG = os.path.join(ROOT, "configs", "custom_example.yaml")
ALONE = [f"Tasks.{t}=null" for t in FOUR]  # how ablations drop tasks


def tiny(root, out, *extra):
    """-o items: the config at tiny size on ``root``, the four tasks' test sets left out (the logo
    sets are the ones under test; the printed row still has the paper's 13 columns)."""
    return [f"Global.data_root={root}", f"Global.output_dir={out}", "Global.generate_demo_data=false",
            f"Global.demo_sizes={{custom_example: {json.dumps(SMALL)}}}", "Global.image_shape=[3,32,32]",
            "DataLoader.Train.transforms.0.Resize.size=[32,32]", "Global.max_iters=4", "Global.log_interval=2",
            "Global.use_visualdl=false", "Arch.Backbone.depth=2", "DataLoader.Train.num_workers=0",
            "DataLoader.Eval.num_workers=0", "Tasks.logo.batch_size=8",
            *[f"Tasks.{t}.batch_size=8" for t in FOUR], *[f"Tasks.{t}.test_sets=[]" for t in FOUR], *extra]


def run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def printed_row(log):
    """{column: cell} of the paper-order row the run printed last."""
    lines = log.splitlines()
    i = max(k for k, line in enumerate(lines) if line.startswith("| CALFW"))
    header, cells = ([c.strip() for c in lines[k].strip("| ").split("|")] for k in (i, i + 1))
    return dict(zip(header, cells))


@pytest.fixture(scope="module")
def data_root(demo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    for name in QUICK_SETS:
        os.symlink(os.path.join(demo_root, name), root / name)
    write_all(str(root), seed=0, sets=["custom_example"], sizes={"custom_example": SMALL})
    return str(root)


@pytest.fixture(scope="module")
def five(data_root, tmp_path_factory):
    """(output dir, printed log, exported logo model dir) of the five tasks trained on the lists."""
    out = tmp_path_factory.mktemp("five")
    log = run("tools/train.py", "-c", CONFIG, "-o", *tiny(data_root, out))
    run("tools/export_model.py", "-c", str(out / "config.yaml"), "-o", f"Global.pretrained_model={out / 'latest'}",
        f"Export.save_dir={out / 'inference'}", "Export.task=logo")
    return out, log, str(out / "inference" / "logo")


# ----------------------------------------------------------------------------- the protocols in numpy

def reid(qf, gf, qid, gid, qcam=None, gcam=None):
    """rank-1 and mAP over the queries with a match; a gallery image of the query's id under its
    camera is removed first (when cameras are given); ties keep the gallery order."""
    sim = qf @ gf.T
    firsts, aps, lost = [], [], 0
    for i in range(len(qf)):
        keep = np.ones(len(gid), bool) if qcam is None else ~((gid == qid[i]) & (gcam == qcam[i]))
        hits = (gid[keep] == qid[i])[np.argsort(-sim[i][keep], kind="stable")]
        if not hits.any():
            lost += 1
            continue
        ranks = np.flatnonzero(hits) + 1
        firsts.append(float(hits[0]))
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return {"rank1": np.mean(firsts), "mAP": np.mean(aps), "num_queries": len(qf), "num_queries_without_match": lost}


def recall_at_1(f, ids):
    """Each image queries all the others (itself left out); an image whose label no other has is skipped."""
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    valid = np.array([np.sum(ids == i) > 1 for i in ids])
    return {"recall@1": np.mean((ids[np.argmax(sim, axis=1)] == ids)[valid]), "num_queries": len(f),
            "num_queries_without_match": int((~valid).sum())}


def list_file(root, name):
    """(paths, labels, camids or None) of a list file, read here, not by ppufo."""
    with open(os.path.join(root, name)) as f:
        rows = [line.split() for line in f if line.strip()]
    cams = np.array([int(r[2]) for r in rows]) if len(rows[0]) == 3 else None
    return [os.path.join(root, r[0]) for r in rows], np.array([int(r[1]) for r in rows]), cams


def folder(root):
    """(paths, labels) of <root>/<id>/<image>, in sorted order."""
    out = [(os.path.join(root, d, n), int(d)) for d in sorted(os.listdir(root)) for n in sorted(os.listdir(os.path.join(root, d)))]
    return [p for p, _ in out], np.array([lab for _, lab in out])


def headline(res):
    return f"{100 * res['rank1']:.2f}/{100 * res['mAP']:.2f}" if "rank1" in res else f"{100 * res['recall@1']:.2f}"


def expected_scores(model_dir, data_root):
    """{test set: numpy result} from the exported model's features (Paddle Inference)."""
    from ppufo.inference.recognizer import Recognizer
    rec, ce = Recognizer(model_dir), os.path.join(data_root, "custom_example")
    (qp, qid, qcam), (gp, gid, gcam) = (list_file(os.path.join(ce, "list"), f"{s}.txt") for s in ("query", "gallery"))
    tp, tid, _ = list_file(os.path.join(ce, "list"), "test.txt")
    (fq, fqid), (fg, fgid), (ft, ftid) = (folder(os.path.join(ce, "folder", s)) for s in ("query", "gallery", "test"))
    return {"logo_list": reid(rec.features(qp), rec.features(gp), qid, gid, qcam, gcam),
            "logo_list_all": recall_at_1(rec.features(tp), tid),
            "logo_folder": reid(rec.features(fq), rec.features(fg), fqid, fgid),
            "logo_folder_all": recall_at_1(rec.features(ft), ftid)}


# ----------------------------------------------------------------------------- tests

def test_the_fifth_task_trains_beside_the_four_and_scores_as_numpy_does_on_the_export(five, data_root):
    out, log, model_dir = five
    assert "training ['face', 'person', 'vehicle', 'product', 'logo']" in log
    assert "'logo': 8" in log and "task logo: 32 images, 8 ids (ImageList 32 imgs)" in log
    row = printed_row(log)
    assert list(row) == PAPER + LOGO and set(row[c] for c in PAPER) == {"-"}  # after the paper's 13
    sets = {s["set"]: s for s in json.load(open(out / "eval_iter_4.json"))["sets"]}
    assert list(sets) == LOGO and [sets[s]["protocol"] for s in LOGO] == ["reid", "recall_at_k"] * 2
    want = expected_scores(model_dir, data_root)
    for name, exp in want.items():
        got = sets[name]
        assert got["headline"] == row[name] == headline(exp), name  # to the last printed digit
        for key, value in exp.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (name, key)
    assert want["logo_list"]["num_queries"] == 12 and want["logo_list"]["num_queries_without_match"] == 0
    # same images, same features: both layouts give the same Recall@1
    assert sets["logo_list_all"]["recall@1"] == sets["logo_folder_all"]["recall@1"]


def test_the_logo_task_trains_alone_from_the_folder_layout(data_root, tmp_path):
    log = run("tools/train.py", "-c", CONFIG, "-o", *tiny(data_root, tmp_path, *ALONE, "Tasks.logo.datasets="
                                                        "[{name: ImageFolder, root: custom_example/folder/train}]"))
    assert "training ['logo']" in log and "task logo: 32 images, 8 ids (ImageFolder 32 imgs)" in log
    row = printed_row(log)
    assert list(row) == PAPER + LOGO and "-" not in [row[c] for c in LOGO]
    sets = {s["set"]: s for s in json.load(open(tmp_path / "eval_iter_4.json"))["sets"]}
    assert list(sets) == LOGO and sets["logo_list_all"]["recall@1"] == sets["logo_folder_all"]["recall@1"]


def test_predict_gallery_and_service_work_for_the_fifth_task(five, data_root, tmp_path):
    from ppufo.inference.recognizer import Recognizer
    from ppufo.inference.serving import serve
    _, _, model_dir = five
    lst = os.path.join(data_root, "custom_example", "list")
    queries = os.path.join(lst, "images", "query")
    text = run("deploy/python/predict_rec.py", "--model_dir", model_dir, "--build_index", os.path.join(lst, "gallery.txt"),
               "--index_dir", str(tmp_path / "index"), "--images", queries, "--topk", "3")
    assert "indexed 20 gallery images (8 labels)" in text  # the 3-column list, camid ignored
    hits = {r["image"]: r["top"] for r in map(json.loads, (t for t in text.splitlines() if t.startswith("{")))}
    rec = Recognizer(model_dir)
    gp, gid, _ = list_file(lst, "gallery.txt")
    qp = sorted(os.path.join(queries, n) for n in os.listdir(queries))
    best = np.argmax(rec.features(qp) @ rec.features(gp).T, axis=1)
    assert [hits[p][0]["label"] for p in qp] == [str(gid[b]) for b in best]
    server = serve(model_dir, str(tmp_path / "index"), port=0, threads=1)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        with open(qp[0], "rb") as f:
            req = urllib.request.Request(f"http://127.0.0.1:{server.port}/predict?topk=3", data=f.read())
        body = json.load(urllib.request.urlopen(req, timeout=60))
    finally:
        server.shutdown()
    assert body["feature_dim"] == 128 and [t["label"] for t in body["top"]] == [t["label"] for t in hits[qp[0]]]


@pytest.fixture
def evaluate(five, data_root, tmp_path):
    """evaluate(test set entry) -> the result of the trained logo task on it (in this process)."""
    from ppufo.arch.trained import load_trained_model
    from ppufo.engine.evaluator import Evaluator
    out, _, _ = five
    cfg = load_config(str(out / "config.yaml"), [f"Global.pretrained_model={out / 'latest'}",
                                                 f"Global.output_dir={tmp_path}"])
    model = load_trained_model(cfg)

    def run_one(entry):
        cfg["Tasks"] = {"logo": dict(cfg["Tasks"]["logo"], test_sets=[entry])}
        return Evaluator(cfg, model).evaluate()["sets"][0]
    return run_one


def bad_lists(root, ce, **changes):
    """query.txt / gallery.txt copies under ``root`` (images linked); changes: {file: {line: text}}."""
    os.makedirs(root, exist_ok=True)
    if not os.path.exists(os.path.join(root, "images")):
        os.symlink(os.path.join(ce, "list", "images"), os.path.join(root, "images"))
    for name in ("query", "gallery"):
        with open(os.path.join(ce, "list", f"{name}.txt")) as f:
            lines = f.read().splitlines()
        for n, text in changes.get(name, {}).items():
            lines[n - 1] = text(lines[n - 1]) if callable(text) else text
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return {"name": "ImageList", "root": str(root), "query_list": "query.txt", "gallery_list": "gallery.txt",
            "alias": "mine"}


def relabel(line, label):
    path, _, cam = line.split()
    return f"{path} {label} {cam}"


def test_bad_own_test_data_is_refused_naming_the_file_and_line(evaluate, five, data_root, tmp_path):
    ce = os.path.join(data_root, "custom_example")
    entry = bad_lists(tmp_path / "a", ce, query={3: "images/query/nowhere.jpg 1001 1"})
    with pytest.raises(DataError, match=r"test set logo/mine \(ImageList, .*\): .*a/query\.txt:3: listed image not "
                                        r"found: .*nowhere\.jpg"):
        evaluate(entry)
    entry = bad_lists(tmp_path / "b", ce, gallery={5: lambda line: relabel(line, "logo7")})
    with pytest.raises(DataError, match=r"b/gallery\.txt:5: label must be an integer, got 'logo7'"):
        evaluate(entry)
    entry = bad_lists(tmp_path / "c", ce, query={n: (lambda line: relabel(line, 9999)) for n in range(1, 13)})
    with pytest.raises(DataError, match=r"no query of .*c/query\.txt has a match in .*c/gallery\.txt \(an image "
                                        r"of its id under another camera\); query ids \[9999\]"):
        evaluate(entry)


def test_queries_whose_id_is_not_in_the_gallery_are_counted_not_dropped(evaluate, five, data_root, tmp_path):
    from ppufo.inference.recognizer import Recognizer
    ce = os.path.join(data_root, "custom_example")
    entry = bad_lists(tmp_path / "d", ce, query={1: lambda line: relabel(line, 9998),
                                                 2: lambda line: relabel(line, 9999)})
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage()) if record.levelno >= logging.WARNING else None
    logging.getLogger("ppufo").addHandler(handler)
    try:
        res = evaluate(entry)
    finally:
        logging.getLogger("ppufo").removeHandler(handler)
    assert (res["num_queries"], res["num_valid_queries"], res["num_queries_without_match"]) == (12, 10, 2)
    assert any("2 of 12 queries" in w and "ids not in the gallery: [9998, 9999]" in w for w in warned), warned
    rec = Recognizer(five[2])
    (qp, qid, qcam), (gp, gid, gcam) = (list_file(str(tmp_path / "d"), f"{s}.txt") for s in ("query", "gallery"))
    exp = reid(rec.features(qp), rec.features(gp), qid, gid, qcam, gcam)
    assert exp["num_queries_without_match"] == 2 and res["headline"] == headline(exp)


def test_the_released_model_starts_a_fifth_task_from_a_named_head(data_root, tmp_path):
    """Fine-tuning from the released checkpoint (simulated at ViT-Tiny size, as test_released_model.py
    does): the logo task takes the neck of the head Global.released_heads.logo names, its classifier
    starts fresh, and its parameters learn at lr_mult x the backbone's lower LR."""
    from released_reference import random_reference, reference_shapes, save_reference
    from ppufo.engine.trainer import Trainer
    from ppufo.utils.errors import ConfigError
    w = random_reference(reference_shapes(2, 192, 5))
    path = save_reference(w, tmp_path / "allinone_tiny.pdmodel")
    over = tiny(data_root, tmp_path / "out", *ALONE, f"Global.pretrained_model={path}", "Tasks.logo.neck.feature_dim=null",
                "Optimizer.lr.learning_rate=1e-4", "Tasks.logo.lr_mult=10", "Global.max_iters=1")
    with pytest.raises(ConfigError, match=r"Global.released_heads.logo: None is not a head of the released checkpoint; "
                                          r"its heads: \['task1', 'task2', 'task3', 'task4'\]"):
        Trainer(load_config(CONFIG, over))
    trainer = Trainer(load_config(CONFIG, over + ["Global.released_heads.logo=task4", "Global.overwrite_output_dir=true"]))
    state = trainer.model.state_dict()
    np.testing.assert_array_equal(state["heads.logo.neck.bn._variance"].numpy(), w["heads.task4.bottleneck.0._variance"])
    np.testing.assert_array_equal(state["backbone.pos_embed"].numpy(), w["backbone.pos_embed"])
    assert trainer.model.heads["logo"].classifier is not None
    # the LR multiplier Paddle applies per parameter (optimizer.py): backbone 1x, the logo head 10x
    assert {p.optimize_attr["learning_rate"] for p in trainer.model.shared_parameters()} == {1.0}
    assert {p.optimize_attr["learning_rate"] for p in trainer.model.task_parameters("logo")} == {10.0}
    trainer.train()
    assert np.isfinite(trainer.model.backbone.pos_embed.numpy()).all()
