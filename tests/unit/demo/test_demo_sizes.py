"""Size knobs of the demo sets: what each writes (read back by ppufo's readers), their validation,
the manifest that records them, Global.demo_sizes, the CLI's --size and the standard-error helper."""
import json
import math
import os

import pytest

from helpers import tree_digest as digest
from ppufo import demo
from ppufo.data.datasets import DATASETS
from ppufo.demo import check_sizes, ensure_demo_data, resolution, scored_count, size_keywords, standard_error
from ppufo.demo.sets import completed_sets
from ppufo.utils.errors import ConfigError, DataError

# the default sizes, as docs/datasets.md states them: a change here changes every demo set
DEFAULTS = {
    "market1501": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=6, queries_per_id=2,
                       num_distractors=4, num_junk=4),
    "dukemtmc": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, queries_per_id=2,
                     num_gallery_only_ids=2),
    "msmt17": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=15, queries_per_id=2, val_per_id=1),
    "veri776": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, queries_per_id=1,
                    num_gallery_only_ids=0),
    "vehicleid": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=4),
    "veriwild": dict(num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=12, queries_per_id=1),
    "sop": dict(num_train_classes=30, num_test_classes=20, imgs_per_class=6),
    "ms1m": dict(num_ids=40, imgs_per_id=10),
    "faces_folder": dict(num_ids=40, imgs_per_id=10),
    "faces_val": dict(lfw=120, cplfw=120, calfw=120, cfp_ff=140, cfp_fp=140, agedb_30=120),
}

# tiny sizes, (nearly) every knob away from its default: written once per module
TINY = {
    "market1501": dict(num_train_ids=3, num_test_ids=4, imgs_per_id=4, num_cams=3, queries_per_id=2,
                       num_distractors=2, num_junk=1),
    "dukemtmc": dict(num_train_ids=2, num_test_ids=3, imgs_per_id=3, num_cams=3, queries_per_id=1,
                     num_gallery_only_ids=3),
    "msmt17": dict(num_train_ids=2, num_test_ids=3, imgs_per_id=4, num_cams=3, queries_per_id=1, val_per_id=2),
    "veri776": dict(num_train_ids=2, num_test_ids=3, imgs_per_id=3, num_cams=3, queries_per_id=2,
                    num_gallery_only_ids=2),
    "vehicleid": dict(num_train_ids=2, num_test_ids=3, imgs_per_id=3, num_cams=2),
    "veriwild": dict(num_train_ids=2, num_test_ids=4, imgs_per_id=3, num_cams=3, queries_per_id=2),
    "sop": dict(num_train_classes=2, num_test_classes=3, imgs_per_class=2),
    "ms1m": dict(num_ids=3, imgs_per_id=2),
    "faces_folder": dict(num_ids=2, imgs_per_id=3),
    "faces_val": dict(lfw=10, cplfw=12, calfw=14, cfp_ff=16, cfp_fp=18, agedb_30=20),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    return root, demo.write_all(root, seed=0, sizes=TINY)


def build(root, name, reader, **kw):
    return DATASETS.build({"name": reader, "root": os.path.join(root, name), **kw})


def test_default_sizes_are_the_documented_ones():
    assert {name: size_keywords(name) for name in demo.WRITERS} == DEFAULTS
    assert demo.FACE_VAL_PAIRS == DEFAULTS["faces_val"]
    assert check_sizes({name: dict(kw) for name, kw in DEFAULTS.items()}) == {}  # defaults are no change


@pytest.mark.parametrize("name", ["market1501", "veri776", "sop"])
def test_explicit_defaults_write_the_same_bytes(tmp_path, name):
    demo.write_all(str(tmp_path / "implicit"), seed=0, sets=[name])
    demo.write_all(str(tmp_path / "explicit"), seed=0, sets=[name], sizes={name: DEFAULTS[name]})
    assert digest(tmp_path / "implicit" / name) == digest(tmp_path / "explicit" / name)
    # and the knob is live: one value off the default changes the bytes
    key = next(iter(DEFAULTS[name]))
    demo.write_all(str(tmp_path / "other"), seed=0, sets=[name], sizes={name: {key: DEFAULTS[name][key] - 1}})
    assert digest(tmp_path / "other" / name) != digest(tmp_path / "implicit" / name)


def test_person_knobs_read_back(tiny):
    root, written = tiny
    m = build(root, "market1501", "Market1501").summary()
    assert m["train"] == {"images": 12, "ids": 3, "cameras": 3}
    assert m["query"] == {"images": 8, "ids": 4, "cameras": 3}
    # 4 ids x 2 gallery images + 2 distractors (pid 0); the junk image is skipped
    assert m["gallery"] == {"images": 10, "ids": 5, "cameras": 3, "skipped": 1}
    d = build(root, "dukemtmc", "DukeMTMC").summary()
    assert d["train"]["images"] == 6 and d["query"]["images"] == 3 and d["query"]["ids"] == 3
    assert d["gallery"]["images"] == 3 * 2 + 3 * 3 and d["gallery"]["ids"] == 6  # + 3 gallery-only ids
    msmt = build(root, "msmt17", "MSMT17")
    assert len(msmt.train()) == 2 * 2 and len(msmt.query()) == 3 and len(msmt.gallery()) == 9
    assert len(build(root, "msmt17", "MSMT17", add_val_to_train=True).train()) == 2 * 4
    for name, reader in (("market1501", "Market1501"), ("dukemtmc", "DukeMTMC"), ("msmt17", "MSMT17")):
        assert len(build(root, name, reader).query()) == scored_count(name, TINY[name])


def test_vehicle_and_product_knobs_read_back(tiny):
    root, _ = tiny
    v = build(root, "veri776", "VeRi776")
    assert len(v.train()) == 6 and len(v.query()) == 3 * 2 and len({r.pid for r in v.query()}) == 3
    gallery_ids = {r.pid for r in v.gallery()}
    assert len(v.gallery()) == 3 * 1 + 2 * 3 and len(gallery_ids) == 5
    assert len(gallery_ids - {r.pid for r in v.query()}) == 2  # the distractors are never queried
    assert len(v.query()) == scored_count("veri776", TINY["veri776"])
    vid = build(root, "vehicleid", "VehicleID")
    assert len(vid.train()) == 6 and len(vid.test()) == 9
    assert len(build(root, "vehicleid", "VehicleID", test_size=800).test()) == 3  # one id of three
    assert scored_count("vehicleid", TINY["vehicleid"]) == 9 - 3  # one gallery image per id
    w = build(root, "veriwild", "VeRiWild")
    assert len(w.train()) == 6 and len(w.query()) == 8 and len(w.gallery()) == 4
    w5 = build(root, "veriwild", "VeRiWild", test_size=5000)
    assert len(w5.query()) == 4 == scored_count("veriwild", TINY["veriwild"], test_size=5000)
    sop = build(root, "sop", "SOP").summary()
    assert sop["train"]["images"] == 4 and sop["train"]["ids"] == 2
    assert sop["test"]["images"] == 6 == scored_count("sop", TINY["sop"]) and sop["test"]["ids"] == 3


def test_face_knobs_read_back(tiny):
    root, _ = tiny
    ms1m = build(root, "ms1m", "MS1MRecordIO").train()
    assert len(ms1m) == 6 and len({r.pid for r in ms1m}) == 3
    folder = build(root, "faces_folder", "ImageFolder").train()
    assert len(folder) == 6 and len({r.pid for r in folder}) == 2
    for set_name, pairs in TINY["faces_val"].items():  # each keyword sizes its own set
        _, issame = build(root, "faces_val", "FaceVerificationBin", set_name=set_name).pairs()
        assert len(issame) == pairs == scored_count("faces_val", TINY["faces_val"], set_name=set_name)


def test_manifest_records_the_non_default_sizes(tiny):
    root, _ = tiny
    done = demo.written_sets(root)
    # queries_per_id=2 is Market1501's default: passing it is no change, so it is not recorded
    assert done["market1501"] == {"seed": 0, "sizes": dict(num_train_ids=3, num_test_ids=4, imgs_per_id=4, num_cams=3,
                                                           num_distractors=2, num_junk=1)}
    assert done["faces_val"] == {"seed": 0, "sizes": TINY["faces_val"]}
    assert set(done) == set(demo.WRITERS)
    assert set(completed_sets(root, 0, TINY)) == set(demo.WRITERS)
    assert completed_sets(root, 0) == {} and completed_sets(root, 1, TINY) == {}


def test_test_only_sets_may_have_no_training_identities(tmp_path):
    demo.write_all(str(tmp_path), sets=["market1501", "sop"],
                   sizes={"market1501": {"num_train_ids": 0, "num_test_ids": 2, "imgs_per_id": 3},
                          "sop": {"num_train_classes": 0, "num_test_classes": 2, "imgs_per_class": 2}})
    m = build(str(tmp_path), "market1501", "Market1501")
    assert m.train() == [] and len(m.query()) == 4
    assert len(build(str(tmp_path), "sop", "SOP").test()) == 4


@pytest.mark.parametrize("sizes, message", [
    ({"cuhk03": {"num_test_ids": 3}}, r"Global\.demo_sizes\.cuhk03: unknown demo set; known: \['market1501'"),
    ({"ufo_test_datasets": {}}, r"Global\.demo_sizes\.ufo_test_datasets: unknown demo set \(sized through its parts"),
    ({"market1501": {"num_test_id": 3}}, r"Global\.demo_sizes\.market1501\.num_test_id: unknown keyword; allowed "
                                         r"for market1501: \['num_train_ids', 'num_test_ids', 'imgs_per_id', "
                                         r"'num_cams', 'queries_per_id', 'num_distractors', 'num_junk'\]"),
    ({"market1501": {"seed": 3}}, r"market1501\.seed: unknown keyword"),
    ({"market1501": 100}, r"Global\.demo_sizes\.market1501: expected a mapping"),
    ({"sop": {"num_test_classes": "20"}}, r"sop\.num_test_classes: expected an integer >= 1, got '20'"),
    ({"sop": {"num_test_classes": 2.0}}, r"sop\.num_test_classes: expected an integer >= 1, got 2\.0"),
    ({"sop": {"num_test_classes": True}}, r"sop\.num_test_classes: expected an integer >= 1, got True"),
    ({"veri776": {"num_test_ids": 0}}, r"veri776\.num_test_ids: expected an integer >= 1, got 0"),
    ({"veri776": {"num_train_ids": -1}}, r"veri776\.num_train_ids: expected an integer >= 0, got -1"),
    ({"sop": {"imgs_per_class": 1}}, r"sop\.imgs_per_class: expected an integer >= 2"),
    ({"faces_val": {"lfw": 9}}, r"faces_val\.lfw: expected an integer >= 10"),
    ({"market1501": {"num_cams": 10}}, r"market1501\.num_cams: expected an integer >= 1 and <= 9, got 10"),
    ({"market1501": {"queries_per_id": 3, "imgs_per_id": 3}},
     r"market1501\.imgs_per_id: 3 is too few; each test identity needs its 3 queries and a gallery image on "
     r"distinct cameras, so >= 4"),
    ({"veri776": {"queries_per_id": 8, "imgs_per_id": 9}}, r"veri776\.num_cams: 8 \(default\) is too few; .* so >= 9"),
    ({"vehicleid": {"imgs_per_id": 1}}, r"vehicleid\.imgs_per_id: 1 is too few; each identity needs images on 2 "
                                        r"distinct cameras, so >= 2"),
    ({"msmt17": {"val_per_id": 8}}, r"msmt17\.val_per_id: 8 leaves no training image of imgs_per_id=8"),
    ({"veri776": {"num_train_ids": 700, "num_gallery_only_ids": 70}},
     r"Global\.demo_sizes\.veri776: num_train_ids 700 \+ num_test_ids 16 \(default\) \+ num_gallery_only_ids 70 "
     r"= 786 identities; the real set's id range holds 776"),
])
def test_bad_sizes_are_refused_naming_the_key(sizes, message):
    with pytest.raises(ConfigError, match=message):
        check_sizes(sizes, "Global.demo_sizes.")


# ----------------------------------------------------------------------------- Global.demo_sizes

@pytest.fixture
def fakes(monkeypatch):
    """WRITERS replaced by two instant writers with one size knob each; calls are recorded."""
    calls = []

    def fake(name):
        def write(root, seed, num_ids=2):
            calls.append((name, seed, num_ids))
            os.makedirs(root)
            open(os.path.join(root, "x.txt"), "w").close()
        return write
    monkeypatch.setattr(demo.sets, "WRITERS", {n: fake(n) for n in ("a", "b")})
    return calls


def config(root, seed=3, sizes=None, generate=True):
    g = {"data_root": str(root), "generate_demo_data": generate, "seed": seed}
    return {"Global": dict(g, demo_sizes=sizes) if sizes is not None else g}


def test_config_sizes_reach_the_writers_and_a_mismatch_is_refused(tmp_path, fakes):
    assert ensure_demo_data(config(tmp_path, sizes={"a": {"num_ids": 5}})) == ["a", "b"]
    assert fakes == [("a", 3, 5), ("b", 3, 2)]
    assert demo.written_sets(str(tmp_path)) == {"a": {"seed": 3, "sizes": {"num_ids": 5}},
                                                "b": {"seed": 3, "sizes": {}}}
    assert ensure_demo_data(config(tmp_path, sizes={"a": {"num_ids": 5}, "b": {"num_ids": 2}})) == []
    assert len(fakes) == 2  # same sizes (b's explicit default included): nothing rewritten
    with pytest.raises(DataError) as e:
        ensure_demo_data(config(tmp_path, sizes={"a": {"num_ids": 6}}))
    text = str(e.value)
    assert "  a: on disk num_ids=5; the config asks for num_ids=6" in text
    assert "Point Global.data_root at another folder" in text and "b:" not in text
    assert f"make_demo_data.py --root {tmp_path} --seed 3 --size a.num_ids=6 --overwrite" in text
    with pytest.raises(DataError, match="a: on disk num_ids=5; the config asks for default sizes"):
        ensure_demo_data(config(tmp_path))
    # another seed reuses the sets (Global.seed is also the model's seed): nothing rewritten, nothing refused
    assert ensure_demo_data(config(tmp_path, seed=4, sizes={"a": {"num_ids": 5}})) == []
    assert len(fakes) == 2
    with pytest.raises(ConfigError, match=r"Global\.demo_sizes\.a\.num_id: unknown keyword; allowed for a: "
                                          r"\['num_ids'\]"):
        ensure_demo_data(config(tmp_path, sizes={"a": {"num_id": 5}}))


def test_an_old_manifest_reads_as_default_sizes(tmp_path, fakes):
    for s in ("a", "b"):
        os.makedirs(tmp_path / s)
    (tmp_path / demo.MANIFEST).write_text(json.dumps({"a": 3, "b": 3}))  # before the size knobs
    assert demo.written_sets(str(tmp_path)) == {"a": {"seed": 3, "sizes": {}}, "b": {"seed": 3, "sizes": {}}}
    assert ensure_demo_data(config(tmp_path)) == [] and fakes == []
    assert set(completed_sets(str(tmp_path), 3)) == {"a", "b"}
    with pytest.raises(DataError, match="a: on disk default sizes; the config asks for num_ids=4"):
        ensure_demo_data(config(tmp_path, sizes={"a": {"num_ids": 4}}))
    (tmp_path / demo.MANIFEST).write_text(json.dumps({"a": "3"}))
    with pytest.raises(DataError, match=r"\.ppufo_demo\.json: entry 'a' is '3'; expected a seed or"):
        demo.written_sets(str(tmp_path))


def test_without_generating_only_the_sizes_are_checked(tmp_path, fakes):
    demo.write_all(str(tmp_path), seed=0, sizes={"a": {"num_ids": 5}})
    # the seed is only the training seed here: any seed trains on the root
    assert ensure_demo_data(config(tmp_path, seed=9, sizes={"a": {"num_ids": 5}}, generate=False)) == []
    with pytest.raises(DataError, match=r"a: on disk num_ids=5; the config asks for default sizes\n") as e:
        ensure_demo_data(config(tmp_path, seed=9, generate=False))
    assert "--seed 0 --overwrite" in str(e.value)  # the fix keeps the data's seed
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "market").mkdir()  # a root of real data: no manifest
    assert ensure_demo_data(config(tmp_path / "real", generate=False)) == []
    with pytest.raises(DataError, match="Global.demo_sizes asks for demo sets of sizes .* has no demo manifest"):
        ensure_demo_data(config(tmp_path / "real", sizes={"a": {"num_ids": 5}}, generate=False))


def test_write_all_refuses_sizes_for_sets_it_does_not_write(tmp_path):
    with pytest.raises(ConfigError, match=r"sizes given for demo set\(s\) \['market1501'\], which are not written"):
        demo.write_all(str(tmp_path), sets=["sop"], sizes={"market1501": {"num_test_ids": 3}})
    assert not os.path.exists(tmp_path / "sop")


def test_global_demo_sizes_is_a_config_key(tmp_path):
    from helpers import ROOT
    from ppufo.utils.config import load_config
    path = os.path.join(ROOT, "configs", "quickstart.yaml")
    assert load_config(path)["Global"]["demo_sizes"] == {}
    cfg = load_config(path, ["Global.demo_sizes.market1501.num_test_ids=100", "Global.demo_sizes.veri776={}"])
    assert cfg["Global"]["demo_sizes"] == {"market1501": {"num_test_ids": 100}, "veri776": {}}
    with pytest.raises(ConfigError, match=r"Global\.demo_sizes: expected dict, got int 3"):
        load_config(path, ["Global.demo_sizes=3"])


def test_ufo_tree_parts_take_their_sizes(tmp_path):
    sop = {"num_train_classes": 2, "num_test_classes": 3, "imgs_per_class": 2}
    demo.write_ufo_test_datasets(str(tmp_path), demo.WRITERS, folders=["Stanford_Online_Products"], sizes={"sop": sop})
    src = DATASETS.build({"name": "SOPCsvList", "root": str(tmp_path / "Stanford_Online_Products")})
    assert len(src.test()) == 6


def test_ufo_tree_copies_only_parts_written_with_the_same_sizes(tiny, tmp_path):
    root, _ = tiny
    for s in demo.WRITERS:
        os.symlink(os.path.join(root, s), tmp_path / s)
    (tmp_path / demo.MANIFEST).write_text(open(os.path.join(root, demo.MANIFEST)).read())
    sizes = {s: TINY[s] for s in demo.sets.EXTRA_PARTS["ufo_test_datasets"]}
    sizes["sop"] = {"num_train_classes": 1, "num_test_classes": 2, "imgs_per_class": 2}  # not what is on disk
    info = demo.write_all(str(tmp_path), sets=["ufo_test_datasets"], sizes=sizes)["ufo_test_datasets"]["info"]
    assert {f for f, i in info.items() if "copied_from" not in i} == {"Stanford_Online_Products"}
    assert len(DATASETS.build({"name": "SOPCsvList", "root": str(tmp_path / "ufo_test_datasets" /
                                                                 "Stanford_Online_Products")}).test()) == 4
    assert len(DATASETS.build({"name": "VeRi776", "root": str(tmp_path / "ufo_test_datasets" / "veri")}).query()) == 6
    assert demo.written_sets(str(tmp_path))["ufo_test_datasets"] == {"seed": 0, "sizes": check_sizes(sizes)}
    assert "queries_per_id" not in check_sizes(sizes)["market1501"]  # Market1501's default: no change


# ----------------------------------------------------------------------------- CLI

def test_cli_size_writes_reports_and_validates(tmp_path, capsys):
    from ppufo.cli import make_demo_data as cli
    out = tmp_path / "demo"
    assert cli.main(["--root", str(out), "--sets", "veri776,sop", "--size", "veri776.num_test_ids=5",
                     "--size", "veri776.num_gallery_only_ids=2", "--size", "sop.num_test_classes=4"]) == 0
    text = capsys.readouterr().out
    assert "(num_test_ids=5, num_gallery_only_ids=2)" in text and "(num_test_classes=4)" in text
    assert "query 5 imgs/5 ids/" in text and "; gallery 51 imgs/7 ids/" in text  # 5 ids x 7 + 2 distractors x 8
    assert "test 24 imgs/4 ids/1 cams" in text
    assert demo.written_sets(str(out))["veri776"] == {"seed": 0, "sizes": {"num_test_ids": 5,
                                                                           "num_gallery_only_ids": 2}}
    before = digest(out)
    for argv, message in [
        (["--size", "veri776.num_test_ids=x"], "--size veri776.num_test_ids=x: expected an integer value, got 'x'"),
        (["--size", "veri776=3"], "--size veri776=3: expected <set>.<keyword>=<integer>"),
        (["--size", "veri776.num_tst_ids=3"], "--size veri776.num_tst_ids: unknown keyword; allowed for veri776"),
        (["--size", "sop.num_test_classes=1", "--size", "sop.num_test_classes=2"],
         "--size sop.num_test_classes is given twice"),
        (["--sets", "sop", "--size", "veri776.num_test_ids=3"],
         "--size: sizes given for demo set(s) ['veri776'], which are not written (sets: ['sop'])")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["--root", str(out), "--overwrite"] + argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert digest(out) == before  # refused before --overwrite deleted anything


def test_standard_error_by_hand():
    assert standard_error(0.5, 32) == pytest.approx(8.838834765)   # the default Market1501: 16 ids x 2 queries
    assert standard_error(0.8, 300) == pytest.approx(2.309401077)  # 100 ids x 3 queries
    assert standard_error(1.0, 5) == 0.0
    assert scored_count("market1501") == 32 and scored_count("dukemtmc") == 32 and scored_count("msmt17") == 32
    assert scored_count("veri776") == 16 and scored_count("veriwild") == 16
    assert scored_count("veriwild", test_size=3000) == 4   # 16 x 3000 // 10000 ids, 1 query each
    assert scored_count("vehicleid") == 16 * 7 and scored_count("vehicleid", test_size=800) == 5 * 7
    assert scored_count("sop") == 120 and scored_count("faces_val", set_name="cfp_fp") == 140
    n, se = resolution("market1501", 0.9, {"num_test_ids": 100, "queries_per_id": 3})
    assert n == 300 and se == pytest.approx(100 * math.sqrt(0.09 / 300)) and se == pytest.approx(1.732050808)
    for call, message in [(lambda: standard_error(80, 300), r"p=80: expected a fraction in \[0, 1\]"),
                          (lambda: standard_error(0.8, 0), "n=0: expected a positive integer"),
                          (lambda: scored_count("ms1m"), "ms1m is a training set"),
                          (lambda: scored_count("faces_val"), r"set_name=None; expected one of \['lfw'"),
                          (lambda: scored_count("market1501", test_size=800), "market1501 has one test list"),
                          (lambda: scored_count("vehicleid", test_size=3000), r"expected one of \(800, 1600, 2400\)"),
                          (lambda: scored_count("market1501", {"num_tst_ids": 3}), "market1501.num_tst_ids: unknown"),
                          (lambda: scored_count("cuhk03"), "unknown demo set 'cuhk03'")]:
        with pytest.raises(ValueError, match=message):
            call()
