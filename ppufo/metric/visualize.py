"""Rank lists as images (as fast-reid's visualizer): a query, then its top-k gallery hits,
each framed green (same identity) or red (different), with its rank and score below.

The lists follow the protocol the metric scores (so the picture shows what was counted):
ReID drops gallery items with the query's id AND camera (sets with cameras) and junk ids (-1),
and skips queries without a valid match (e.g. distractor id 0); VehicleID uses one seeded
gallery draw (the metric's first repeat); Recall@K (SOP) excludes the query itself. Ranking: score descending,
ties by lower gallery index, as everywhere in ppufo.metric. Works on numpy features and image
loaders, so it needs no model.
"""
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from ..utils.errors import ConfigError, DataError
from .reid import reid_query_stats
from .search import as_features, as_ids
from .vehicleid import gallery_draws

GREEN, RED, QUERY = (0, 170, 0), (220, 0, 0), (70, 70, 70)
BORDER = 4    # frame width around every tile
GAP = 4       # between tiles
SEP = 12      # extra space between the query and its hits
TEXT_H = 28   # two lines of text under every tile
ORDERS = ("worst", "best", "first")


class RankLists:
    """Queries ranked against a gallery with the ReID rule (see the module doc).

    q_ids / g_ids map query / gallery positions to indices of the caller's records (for the
    image loaders); ``ap`` and ``valid`` are the metric's per-query values.
    """

    def __init__(self, qf, gf, q_pids, g_pids, q_cams, g_cams, junk_pid=-1, distractor_pid=0,
                 q_ids=None, g_ids=None, chunk_size=256):
        where = "RankLists"
        self.qf, self.gf = as_features(qf, "qf", where), as_features(gf, "gf", where)
        nq, ng = len(self.qf), len(self.gf)
        self.q_pids, self.g_pids = as_ids(q_pids, nq, "q_pids", where), as_ids(g_pids, ng, "g_pids", where)
        self.cameras = q_cams is not None  # None (both): no camera, nothing removed, as the metric
        self.q_cams = as_ids(q_cams, nq, "q_cams", where) if self.cameras else None
        self.g_cams = as_ids(g_cams, ng, "g_cams", where) if g_cams is not None else None
        self.junk_pid = junk_pid
        self.q_ids = np.arange(nq) if q_ids is None else np.asarray(q_ids)
        self.g_ids = np.arange(ng) if g_ids is None else np.asarray(g_ids)
        self.valid, _, self.ap, _ = reid_query_stats(self.qf, self.gf, self.q_pids, self.g_pids,
                                                     self.q_cams, self.g_cams, chunk_size,
                                                     junk_pid=junk_pid, distractor_pid=distractor_pid,
                                                     where=where)

    def select(self, num, order="worst"):
        """Positions of up to ``num`` valid queries: lowest AP first ("worst"), highest AP
        first ("best") or in query order ("first"); AP ties by query position."""
        if order not in ORDERS:
            raise ConfigError(f"order={order!r}: expected one of {ORDERS}")
        pos = np.flatnonzero(self.valid)
        if order != "first":
            key = self.ap[pos] if order == "worst" else -self.ap[pos]
            pos = pos[np.argsort(key, kind="stable")]
        return pos[:num]

    def top(self, q, k):
        """Top ``k`` kept gallery items of query position ``q``: [(gallery position, rank,
        score, correct)], rank 1-based among kept items."""
        keep = np.ones(len(self.g_pids), bool)
        if self.cameras:
            keep &= ~((self.g_pids == self.q_pids[q]) & (self.g_cams == self.q_cams[q]))
        if self.junk_pid is not None:
            keep &= self.g_pids != self.junk_pid
        cand = np.flatnonzero(keep)
        scores = self.gf[cand] @ self.qf[q]
        best = np.lexsort((cand, -scores))[:k]
        return [(int(cand[i]), n + 1, float(scores[i]), bool(self.g_pids[cand[i]] == self.q_pids[q]))
                for n, i in enumerate(best)]


def protocol_rank_lists(protocol, query, gallery=None, seed=0, chunk_size=256, junk_pid=-1,
                        distractor_pid=0):
    """RankLists of a test set under its protocol.

    query = (features, pids, cams): the query split ("reid") or the whole test set
    ("vehicleid", "recall_at_k"); gallery = (features, pids, cams) for "reid" only (cams None
    in both: no cameras). seed: the VehicleID metric's seed (its first gallery draw is used).
    junk_pid / distractor_pid: the reid rule's, as the source gives them (None: no such id).
    """
    f, pids, cams = query
    if protocol == "reid":
        if gallery is None:
            raise DataError("protocol_rank_lists: the reid protocol needs a gallery")
        return RankLists(f, gallery[0], pids, gallery[1], cams, gallery[2], junk_pid, distractor_pid,
                         chunk_size=chunk_size)
    if protocol == "verification":
        raise DataError("protocol 'verification' scores image pairs; it has no gallery and no "
                        "rank list to draw")
    pids = as_ids(pids, len(f), "pids", f"protocol_rank_lists[{protocol}]")
    if protocol == "vehicleid":
        g = next(gallery_draws(pids, 1, seed))
        q = ~g
        # no cameras in VehicleID: query cam 0 vs gallery cam 1 removes nothing
        return RankLists(f[q], f[g], pids[q], pids[g], np.zeros(q.sum(), np.int64),
                         np.ones(g.sum(), np.int64), None, None, np.flatnonzero(q), np.flatnonzero(g),
                         chunk_size)
    if protocol == "recall_at_k":
        idx = np.arange(len(f))  # a unique "camera" per item: same id + camera = the query itself
        return RankLists(f, f, pids, pids, idx, idx, None, None, chunk_size=chunk_size)
    raise DataError(f"protocol_rank_lists: unknown protocol {protocol!r}; expected reid, "
                    f"vehicleid or recall_at_k")


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def row_size(k, tile_hw):
    """(width, height) of a rank-list image with ``k`` hits of tiles ``tile_hw`` = (h, w)."""
    cell_w, cell_h = tile_hw[1] + 2 * BORDER, tile_hw[0] + 2 * BORDER + TEXT_H
    return (k + 1) * cell_w + k * GAP + SEP, cell_h


def draw_rank_list(query, hits, tile_hw, query_text=("query", "")):
    """One PIL image: the query tile (grey frame), then every hit (image, text lines, correct)
    framed green/red. Images are resized to ``tile_hw`` = (h, w)."""
    th, tw = tile_hw
    width, height = row_size(len(hits), tile_hw)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font()
    tiles = [(query, query_text, QUERY)] + [(img, text, GREEN if ok else RED) for img, text, ok in hits]
    for i, (img, text, colour) in enumerate(tiles):
        x = i * (tw + 2 * BORDER + GAP) + (SEP if i else 0)
        draw.rectangle([x, 0, x + tw + 2 * BORDER - 1, th + 2 * BORDER - 1], fill=colour)
        canvas.paste(img.convert("RGB").resize((tw, th), Image.BILINEAR), (x + BORDER, BORDER))
        for n, line in enumerate(text):
            draw.text((x + 1, th + 2 * BORDER + 1 + n * (TEXT_H // 2)), line, fill="black", font=font)
    return canvas


def write_rank_lists(ranks, queries, k, load_query, load_gallery, out_dir, tile_height=128):
    """Draw the rank list of every query position in ``queries`` into ``out_dir``; returns
    the PNG paths. load_query(i) / load_gallery(i): PIL image of record i (ranks.q_ids /
    ranks.g_ids). Tile width follows the first query's aspect ratio."""
    os.makedirs(out_dir, exist_ok=True)
    paths, tile_hw = [], None
    for n, q in enumerate(tqdm(queries, desc="rank lists", disable=None)):
        qi = int(ranks.q_ids[q])
        qimg = load_query(qi)
        if tile_hw is None:
            tile_hw = (tile_height, max(16, round(tile_height * qimg.width / qimg.height)))
        hits = [(load_gallery(int(ranks.g_ids[g])), (f"#{rank}: {score:.3f}", f"id {ranks.g_pids[g]}"), ok)
                for g, rank, score, ok in ranks.top(q, k)]
        img = draw_rank_list(qimg, hits, tile_hw,
                             (f"query id {ranks.q_pids[q]}", f"AP {ranks.ap[q]:.3f}"))
        path = os.path.join(out_dir, f"{n:03d}_query{qi}_ap{ranks.ap[q]:.3f}.png")
        img.save(path)
        paths.append(path)
    return paths
