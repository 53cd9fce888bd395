"""Rank-list visualiser: protocol filtering on hand-built features, the drawing, and the tool."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from ppufo.metric.recall import evaluate_recall_at_k
from ppufo.metric.reid import evaluate_reid
from ppufo.metric.vehicleid import evaluate_vehicleid, gallery_draws
from ppufo.metric.visualize import (BORDER, GAP, GREEN, QUERY, RED, SEP, TEXT_H,
                                    draw_rank_list, protocol_rank_lists, row_size, write_rank_lists)
from ppufo.utils.errors import ConfigError, DataError



def at(deg):
    return [np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))]


# query 0: id 1 cam 0; query 1: id 2 cam 0; query 2: distractor id 0; query 3: id 4 (no match)
QF = np.array([at(0), at(12), at(0), at(0)], np.float32)
Q_PIDS, Q_CAMS = np.array([1, 2, 0, 4]), np.array([0, 0, 0, 0])
# g0 same id+cam as query 0 (removed for it), g2 junk (always removed), g6 ties with g5
GF = np.array([at(0), at(10), at(5), at(20), at(30), at(40), at(40)], np.float32)
G_PIDS, G_CAMS = np.array([1, 2, -1, 1, 0, 3, 3]), np.array([0, 1, 0, 2, 1, 0, 0])


def reid_ranks():
    return protocol_rank_lists("reid", (QF, Q_PIDS, Q_CAMS), (GF, G_PIDS, G_CAMS))


def test_reid_lists_drop_same_id_same_camera_and_junk():
    r = reid_ranks()
    top = r.top(0, 10)
    # g0 (same id, same camera) and g2 (junk) never appear; g5/g6 tie -> lower index first
    assert [g for g, *_ in top] == [1, 3, 4, 5, 6]
    assert [rank for _, rank, *_ in top] == [1, 2, 3, 4, 5]
    assert [ok for *_, ok in top] == [False, True, False, False, False]
    np.testing.assert_allclose([s for _, _, s, _ in top], np.cos(np.deg2rad([10, 20, 30, 40, 40])), rtol=1e-6)
    assert [g for g, *_ in r.top(0, 2)] == [1, 3]
    assert r.valid.tolist() == [True, True, False, False]  # distractor and unmatched queries skipped
    np.testing.assert_allclose(r.ap[:2], [0.5, 1.0])
    assert np.mean(r.ap[r.valid]) == pytest.approx(evaluate_reid(QF, GF, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)["mAP"])
    assert r.select(5, "worst").tolist() == [0, 1]
    assert r.select(5, "best").tolist() == [1, 0]
    assert r.select(1, "first").tolist() == [0]
    with pytest.raises(ConfigError, match="order='random'"):
        r.select(1, "random")


def test_lists_without_cameras_or_special_ids_keep_every_gallery_item():
    # a user's own set: no cameras, -1 and 0 are ordinary ids (as the source says)
    r = protocol_rank_lists("reid", (QF, Q_PIDS, None), (GF, G_PIDS, None), junk_pid=None, distractor_pid=None)
    # query 0 now sees g0 (same id, camera unknown) and g2 (id -1, an ordinary id) first
    assert [(g, ok) for g, _, _, ok in r.top(0, 4)] == [(0, True), (2, False), (1, False), (3, True)]
    assert r.valid.tolist() == [True, True, True, False]  # query 2 (id 0) finds g4; query 3 nothing
    rule = dict(junk_pid=None, distractor_pid=None)
    assert np.mean(r.ap[r.valid]) == pytest.approx(
        evaluate_reid(QF, GF, Q_PIDS, G_PIDS, None, None, **rule)["mAP"])
    with pytest.raises(DataError, match="camera ids for the query only; give both"):
        evaluate_reid(QF, GF, Q_PIDS, G_PIDS, Q_CAMS, None)


def test_other_camera_same_id_is_kept_and_correct():
    top = reid_ranks().top(1, 3)
    # query 1 (id 2, cam 0) at 12 deg: g1 (id 2, camera 1) stays; g0 is another id, so kept
    assert [g for g, *_ in top] == [1, 3, 0]
    assert [ok for *_, ok in top] == [True, False, False]


def test_recall_at_k_excludes_the_query_itself():
    f = np.array([at(0), at(30), at(10), at(50)], np.float32)
    labels = np.array([7, 7, 8, 8])
    r = protocol_rank_lists("recall_at_k", (f, labels, np.zeros(4, np.int64)))
    assert [(g, ok) for g, _, _, ok in r.top(0, 3)] == [(2, False), (1, True), (3, False)]
    for q in range(4):
        assert q not in [g for g, *_ in r.top(q, 4)] and len(r.top(q, 4)) == 3
    assert r.ap[0] == pytest.approx(0.5)
    top1 = np.mean([r.top(q, 1)[0][3] for q in range(4)])
    assert top1 == evaluate_recall_at_k(f, labels, ks=(1,))["recall@1"]


def test_vehicleid_lists_use_the_metrics_first_gallery_draw():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((30, 8)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    pids = np.repeat(np.arange(6), 5)
    r = protocol_rank_lists("vehicleid", (f, pids, np.arange(30)), seed=3)
    g = next(gallery_draws(pids, 1, 3))
    assert r.g_ids.tolist() == np.flatnonzero(g).tolist() and r.q_ids.tolist() == np.flatnonzero(~g).tolist()
    assert sorted(r.g_pids.tolist()) == list(range(6))
    assert len(r.top(0, 10)) == 6  # the whole one-per-id gallery, nothing removed
    assert np.mean(r.ap) == pytest.approx(evaluate_vehicleid(f, pids, repeats=1, seed=3)["mAP"])
    with pytest.raises(DataError, match="no gallery and no rank list"):
        protocol_rank_lists("verification", (f, pids, pids))


def solid(colour, hw=(64, 32)):
    return Image.new("RGB", (hw[1], hw[0]), colour)


def tile_x(i, tw):
    return i * (tw + 2 * BORDER + GAP) + (SEP if i else 0)


def test_drawing_size_frames_and_tiles():
    hits = [(solid((0, 0, 255)), ("#1 0.9", "id 1"), True), (solid((0, 0, 255)), ("#2", ""), False),
            (solid((0, 0, 255)), ("#3", ""), True)]
    img = draw_rank_list(solid((255, 255, 0)), hits, (40, 20))
    assert (BORDER, GAP, SEP, TEXT_H) == (4, 4, 12, 28)
    assert img.size == row_size(3, (40, 20)) == (4 * 28 + 3 * 4 + 12, 40 + 8 + 28) == (136, 76)
    px = img.load()
    for i, colour in enumerate([QUERY, GREEN, RED, GREEN]):
        x = tile_x(i, 20)
        assert px[x + 1, 20] == colour and px[x + 27, 45] == colour  # left and lower-right frame
        assert px[x + 14, 24] == ((255, 255, 0) if i == 0 else (0, 0, 255))  # the image inside
    assert px[30, 20] == (255, 255, 255)  # the gap between query and hits


def test_written_png_shows_the_ranked_gallery_images(tmp_path):
    r = reid_ranks()
    colour = lambda i: (20 + 30 * i, 0, 100)  # noqa: E731  gallery item i is drawn in its own colour
    paths = write_rank_lists(r, r.select(2, "worst"), 4, lambda i: solid((0, 200, 200)),
                             lambda i: solid(colour(i)), str(tmp_path), tile_height=40)
    assert [os.path.basename(p) for p in paths] == ["000_query0_ap0.500.png", "001_query1_ap1.000.png"]
    img = Image.open(paths[0])
    assert img.size == (5 * 28 + 4 * 4 + 12, 76)  # query + 4 hits, 40 x 20 tiles (aspect of 64 x 32)
    px = img.convert("RGB").load()
    shown = [(g, RED if not ok else GREEN) for g, *_, ok in r.top(0, 4)]
    assert shown == [(1, RED), (3, GREEN), (4, RED), (5, RED)]
    for i, (g, frame) in enumerate(shown, start=1):
        assert px[tile_x(i, 20) + 1, 20] == frame
        assert px[tile_x(i, 20) + 14, 24] == colour(g)


def run_tool(monkeypatch, *argv):
    from ppufo.cli import visualize_ranks
    monkeypatch.setattr(sys, "argv", ["visualize_ranks.py", *argv])
    visualize_ranks.main()


def test_tool_draws_a_configured_set_and_refuses_others(demo_root, tmp_path, monkeypatch):
    from helpers import tiny_config
    from ppufo.engine.trainer import Trainer
    out = tmp_path / "run"
    Trainer(tiny_config(demo_root, out, ["Global.max_iters=1"])).save(0)
    args = ["-c", str(out / "config.yaml"), "-o", f"Global.pretrained_model={out / 'latest'}"]
    run_tool(monkeypatch, *args, "--set", "Market1501", "--num_queries", "3", "--topk", "5",
             "--order", "best", "--out", str(tmp_path / "ranks"), "--tile_height", "64")
    files = sorted(os.listdir(tmp_path / "ranks"))
    assert len(files) == 3 and files[0].startswith("000_query")
    aps = [float(f.rsplit("_ap", 1)[1][:-4]) for f in files]
    assert aps == sorted(aps, reverse=True)
    assert Image.open(tmp_path / "ranks" / files[0]).size == row_size(5, (64, 32))
    with pytest.raises(SystemExit, match=r"'Nope': not a configured test set; configured: \['lfw', 'cplfw'"):
        run_tool(monkeypatch, *args, "--set", "Nope")
    with pytest.raises(SystemExit, match="protocol 'verification'.*no gallery ranking.*'Market1501'"):
        run_tool(monkeypatch, *args, "--set", "cfp_fp")
