"""Demo data: deterministic, learnable, in the real layouts, protocols satisfied; the CLI."""
import hashlib
import json
import os
import time

import numpy as np
import pytest

from ppufo import demo
from ppufo.data.datasets import DATASETS
from helpers import ROOT, tree_digest
from ppufo.demo import SIZES, render_identity, write_all



def test_render_identity_shapes_and_determinism():
    for style, size in SIZES.items():
        a = render_identity(11, 2, size, style, camera=5)
        assert a.shape == size + (3,) and a.dtype == np.uint8
        assert np.array_equal(a, render_identity(11, 2, size, style, camera=5))
        assert not np.array_equal(a, render_identity(11, 2, size, style, camera=6))   # lighting/scene
        assert not np.array_equal(a, render_identity(11, 3, size, style, camera=5))   # view
        assert not np.array_equal(a, render_identity(12, 2, size, style, camera=5))   # identity
        assert a.std() > 20  # not a flat image
    assert render_identity(1, 1, (50, 30), "vehicle").shape == (50, 30, 3)
    with pytest.raises(ValueError, match="style 'face'"):
        render_identity(1, 1, (64, 64), "face")


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(num_train_ids=3, num_test_ids=2, imgs_per_id=4)
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        demo.write_market1501(tmp_path / name / "m", seed=seed, num_distractors=1, num_junk=1, **kw)
        demo.write_veriwild(tmp_path / name / "w", seed=seed, **kw)
        demo.write_sop(tmp_path / name / "s", seed=seed, num_train_classes=2, num_test_classes=2, imgs_per_class=2)
    a, b, c = (tree_digest(tmp_path / n) for n in "abc")
    assert a == b and a != c
    # a different seed changes the pixels too, not only the names
    f = sorted(os.listdir(tmp_path / "a" / "s" / "bicycle_final"))[0]
    assert (tmp_path / "a" / "s" / "bicycle_final" / f).read_bytes() != \
           (tmp_path / "c" / "s" / "bicycle_final" / f).read_bytes()


@pytest.mark.parametrize("style", sorted(SIZES))
def test_identities_are_learnable_but_not_trivial(style):
    """Across cameras, an identity is closer to itself than to others (pooled 8x8-block
    colours), and raw-pixel nearest-neighbour retrieval is far above chance yet imperfect."""
    n_ids, views = 40, 4
    h, w = SIZES[style]
    x = np.stack([render_identity(500 + i, v, SIZES[style], style, camera=10 * v + i % 3)
                  for i in range(n_ids) for v in range(views)]).astype(np.float32)
    ids = np.repeat(np.arange(n_ids), views)
    feat = x.reshape(len(x), h // 8, 8, w // 8, 8, 3).mean((2, 4)).reshape(len(x), -1)
    feat -= feat.mean(1, keepdims=True)
    feat /= np.linalg.norm(feat, axis=1, keepdims=True)
    dist = 1 - feat @ feat.T
    same = ids[:, None] == ids[None, :]
    off = ~np.eye(len(x), dtype=bool)  # every pair of views of one identity is on two cameras
    ratio = dist[same & off].mean() / dist[~same].mean()
    assert ratio < 0.75, ratio
    np.fill_diagonal(dist, np.inf)
    rank1 = np.mean(ids[dist.argmin(1)] == ids)
    assert 10 / n_ids < rank1 < 0.97, rank1  # chance is 1/40


def test_default_layouts_satisfy_their_protocols(tmp_path):
    t = time.time()
    written = write_all(str(tmp_path), seed=0, sets=["dukemtmc", "msmt17", "vehicleid", "veriwild"])
    assert list(written) == ["dukemtmc", "msmt17", "vehicleid", "veriwild"]
    assert time.time() - t < 30
    summaries = {}
    for name in ("dukemtmc", "msmt17", "veriwild"):
        src = DATASETS.build({"name": demo.READERS[name], "root": written[name]["path"]})
        query, gallery = src.query(), src.gallery()
        for q in query:  # every query has a true match under another camera
            assert any(g.pid == q.pid and g.camid != q.camid for g in gallery), (name, q)
        assert not {r.pid for r in src.train()} & {r.pid for r in query} or name == "msmt17"
        summaries[name] = src.summary()
    duke = summaries["dukemtmc"]
    assert duke["train"] == {"images": 192, "ids": 24, "cameras": 8}
    assert duke["query"]["images"] == 32 and duke["query"]["ids"] == 16 and duke["query"]["cameras"] >= 2
    assert duke["gallery"] == {"images": 96 + 16, "ids": 18, "cameras": 8}  # + 2 gallery-only ids
    assert summaries["msmt17"]["train"]["images"] == 24 * 7 and summaries["msmt17"]["gallery"]["images"] == 16 * 6
    assert written["msmt17"]["info"]["images"] == {"train": 168, "val": 24, "query": 32, "gallery": 96}
    vid = DATASETS.build({"name": "VehicleID", "root": written["vehicleid"]["path"]})
    counts = np.bincount([r.pid for r in vid.test()])
    assert len(vid.test()) == 128 and counts[counts > 0].min() >= 2  # a query left after the gallery draw
    assert written["vehicleid"]["info"]["test_lists"] == {
        800: {"images": 40, "ids": 5}, 1600: {"images": 80, "ids": 10}, 2400: {"images": 128, "ids": 16}}
    with pytest.raises(ValueError, match=r"unknown demo set\(s\) \['cuhk03'\]"):
        write_all(str(tmp_path), sets=["cuhk03"])


def test_person_val_is_a_sized_test_only_dukemtmc_set_drawn_apart_from_dukemtmc(tmp_path):
    sizes = {"person_val": {"num_test_ids": 20, "num_gallery_only_ids": 3}, "dukemtmc": {"num_test_ids": 20}}
    written = write_all(str(tmp_path), seed=5, sets=["dukemtmc", "person_val"], sizes=sizes)
    val = DATASETS.build({"name": demo.READERS["person_val"], "root": written["person_val"]["path"]})
    query, gallery = val.query(), val.gallery()
    assert not val.train()
    assert len(query) == 40 and len({r.pid for r in query}) == 20  # 2 queries per identity
    assert len({r.pid for r in gallery if r.pid > 0}) == 23  # + the gallery-only identities
    for q in query:  # every query has a true match under another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery), q
    duke = DATASETS.build({"name": "DukeMTMC", "root": written["dukemtmc"]["path"]})
    def digests(records):
        return {hashlib.sha256(open(r.key, "rb").read()).hexdigest() for r in records}
    assert not digests(query) & digests(duke.query() + duke.gallery())  # other draws than dukemtmc
    with pytest.raises(Exception, match="person_val: num_test_ids 8000 .* id range holds 7140"):
        demo.check_sizes({"person_val": {"num_test_ids": 8000}})


def test_quickstart_sets_read_back(demo_root):
    """The session demo (conftest) includes the face sets written through ppufo.demo.face."""
    ms1m = DATASETS.build({"name": "MS1MRecordIO", "root": os.path.join(demo_root, "ms1m")})
    assert len(ms1m.train()) == 400 and len({r.pid for r in ms1m.train()}) == 40
    assert sorted(os.listdir(os.path.join(demo_root, "faces_val"))) == [
        "agedb_30.bin", "calfw.bin", "cfp_ff.bin", "cfp_fp.bin", "cplfw.bin", "lfw.bin"]
    firsts = set()
    for name, pairs in [("lfw", 120), ("cplfw", 120), ("calfw", 120), ("cfp_ff", 140), ("cfp_fp", 140),
                        ("agedb_30", 120)]:
        src = DATASETS.build({"name": "FaceVerificationBin", "root": os.path.join(demo_root, "faces_val"),
                              "set_name": name})
        records, issame = src.pairs()
        assert len(records) == 2 * pairs and len(issame) == pairs and int(issame.sum()) == pairs // 2
        assert src.read(records[-1]).size == (112, 112)
        firsts.add(src._load()[0][0])
    assert len(firsts) == 6  # six different sets, not one file copied
    m = DATASETS.build({"name": "Market1501", "root": os.path.join(demo_root, "market1501")})
    assert m.summary()["gallery"] == {"images": 100, "ids": 17, "cameras": 6, "skipped": 4}


def load_cli():
    from ppufo.cli import make_demo_data
    return make_demo_data


def test_cli_writes_reports_and_refuses_to_overwrite(tmp_path, capsys):
    cli = load_cli()
    out = tmp_path / "demo"
    assert cli.main(["--root", str(out), "--sets", "sop,veri776", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    assert "train 180 imgs/30 ids/1 cams; test 120 imgs/20 ids/1 cams" in text
    assert "train 192 imgs/24 ids/8 cams; query 16 imgs/16 ids/" in text
    assert "wrote 2 demo set(s)" in text and sorted(os.listdir(out)) == [".ppufo_demo.json", "sop", "veri776"]
    assert demo.written_sets(str(out)) == {"sop": {"seed": 2, "sizes": {}}, "veri776": {"seed": 2, "sizes": {}}}
    with pytest.raises(SystemExit) as e:
        cli.main(["--root", str(out), "--sets", "sop"])
    assert e.value.code == 2 and "not empty; pass --overwrite" in capsys.readouterr().err
    assert cli.main(["--root", str(out), "--sets", "sop", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == [".ppufo_demo.json", "sop"]
    assert demo.written_sets(str(out)) == {"sop": {"seed": 0, "sizes": {}}}
    with pytest.raises(SystemExit):
        cli.main(["--root", str(tmp_path / "x"), "--sets", "market1501,nope"])
    assert "unknown set(s) ['nope']" in capsys.readouterr().err


def test_demo_setup_writes_only_missing_sets_and_refuses_stale_folders(tmp_path, monkeypatch):
    from ppufo import demo
    from ppufo.demo import ensure_demo_data
    from ppufo.utils.errors import DataError
    calls = []

    def fake(name):
        def write(root, seed):
            calls.append(name)
            os.makedirs(root)
            open(os.path.join(root, "x.txt"), "w").close()
        return write
    monkeypatch.setattr(demo.sets, "WRITERS", {n: fake(n) for n in ("a", "b", "c")})
    cfg = {"Global": {"data_root": str(tmp_path / "demo"), "generate_demo_data": True, "seed": 3}}
    demo.write_all(cfg["Global"]["data_root"], seed=3, sets=["a"])
    assert ensure_demo_data(cfg) == ["b", "c"] and calls == ["a", "b", "c"]
    assert demo.written_sets(cfg["Global"]["data_root"]) == {s: {"seed": 3, "sizes": {}} for s in "abc"}
    assert ensure_demo_data(cfg) == [] and len(calls) == 3  # complete: nothing rewritten
    os.makedirs(tmp_path / "old" / "b")  # a set folder no manifest vouches for (older or interrupted write)
    cfg["Global"]["data_root"] = str(tmp_path / "old")
    with pytest.raises(DataError, match=r"demo set folder\(s\) \['b'\] are not listed as complete"):
        ensure_demo_data(cfg)
    cfg["Global"].update(generate_demo_data=False, data_root=str(tmp_path / "none"))
    with pytest.raises(DataError, match="Global.data_root not found or empty"):
        ensure_demo_data(cfg)


@pytest.mark.slow
def test_demo_data_is_written_by_the_first_process_while_the_others_wait(tmp_path):
    """Two processes of one launch ask for the same demo root at once: exactly one writes and the
    other returns after it with nothing to write (and no half-written set seen as stale)."""
    import subprocess
    import sys
    code = ("import sys, json; from ppufo.demo import ensure_demo_data; "
            "cfg = {'Global': {'data_root': sys.argv[1], 'generate_demo_data': True, 'seed': 0}}; "
            "print(json.dumps(ensure_demo_data(cfg)))")
    import ppufo.demo as d
    root = str(tmp_path / "demo")
    procs = [subprocess.Popen([sys.executable, "-c", code, root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in results]
    written = sorted(json.loads(out.strip().splitlines()[-1]) for out, _ in results)
    assert written == [[], list(d.WRITERS)]
    assert set(d.written_sets(root)) == set(d.WRITERS)
