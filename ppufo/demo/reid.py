"""Demo person/vehicle ReID and product-retrieval sets in each dataset's real on-disk layout.

``write_market1501`` ... ``write_sop`` produce the official folder structure, file-name
patterns and list files with small default sizes, drawing their images with
``render_identity``. Everything is deterministic given ``seed``.
"""
import os

import numpy as np

from .common import rng, save_image, write_lines
from .identity import SIZES, identity_traits, render_identity

_DATASET_TAG = {"market1501": 1, "dukemtmc": 2, "msmt17": 3, "veri776": 4, "vehicleid": 5,
                "veriwild": 6, "sop": 7}
_SPLIT_TAG = {"train": 0, "test": 1, "junk": 2, "distractor": 3}
# identities are drawn from the real set's id range (so names look real): its size bounds the
# identities a demo set can hold
ID_RANGE = {"market1501": 1501, "dukemtmc": 7140, "veri776": 776, "veriwild": 40671}


def identity_seed(seed, dataset, split, pid):
    """Identity seed of ``pid`` in ``split`` of demo ``dataset``: distinct across datasets and
    train/test splits, so merged demo sets never share an appearance."""
    return ((int(seed) * 16 + _DATASET_TAG[dataset]) * 4 + _SPLIT_TAG[split]) * 10 ** 7 + int(pid)


def camera_seed(seed, dataset, cam):
    return (int(seed) * 16 + _DATASET_TAG[dataset]) * 1000 + int(cam)


def _draw(seed, dataset, split, pid, view, cam, style):
    return render_identity(identity_seed(seed, dataset, split, pid), view, SIZES[style], style,
                           camera_seed(seed, dataset, cam))


def _camera_plan(r, num_ids, imgs_per_id, num_cams, min_cams):
    """Cameras of each identity's images (0-based): the first ``min_cams`` (or more) images are
    on distinct cameras, the rest on cameras already used by that identity."""
    if num_cams < min_cams:
        raise ValueError(f"num_cams={num_cams}: need at least {min_cams} cameras")
    if imgs_per_id < min_cams:
        raise ValueError(f"imgs_per_id={imgs_per_id}: need at least {min_cams} images per identity")
    plan = []
    for _ in range(num_ids):
        k = int(r.integers(min_cams, min(num_cams, imgs_per_id, min_cams + 2) + 1))
        cams = r.choice(num_cams, size=k, replace=False)
        plan.append([int(c) for c in cams] + [int(c) for c in r.choice(cams, imgs_per_id - k)])
    return plan


def _folders(root, *names):
    """Create the split folders up front, so a split with no identity (e.g. num_train_ids=0 for a
    test-only set) is an empty folder its reader can list, not a missing one."""
    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)


def _shots(r, jobs, imgs_per_id, num_cams):
    """(split, pid, n, cam) of every image in writing order. ``jobs``: (split, pids, min_cams);
    each job's camera plan is drawn from ``r`` when the job is reached."""
    for split, pids, min_cams in jobs:
        plan = _camera_plan(r, len(pids), imgs_per_id, num_cams, min_cams)
        for pid, cams in zip(pids, plan):
            for n, cam in enumerate(cams):
                yield split, pid, n, cam


# the test lists of VehicleID and VeRi-Wild (named by their size in the real sets)
VEHICLEID_LISTS, VERIWILD_LISTS = (800, 1600, 2400), (3000, 5000, 10000)


def kept_ids(num_ids, size, sizes):
    """How many of ``num_ids`` test identities the ``size`` list of ``sizes`` holds: in proportion
    size / max(sizes), at least one."""
    return max(1, num_ids * size // max(sizes))


def _nested(ids, sizes):
    """{size: the first kept_ids ids}: the smaller test lists hold a subset of the identities of
    the larger ones, as in the real sets."""
    ids = sorted(ids)
    return {size: set(ids[:kept_ids(len(ids), size, sizes)]) for size in sizes}


def write_market1501(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=6, seed=0,
                     queries_per_id=2, num_distractors=4, num_junk=4):
    """bounding_box_train/, query/ (``queries_per_id`` per test id, distinct cameras) and
    bounding_box_test/ (the rest, plus distractors 0000_* and junk -1_*)."""
    r = rng(seed, _DATASET_TAG["market1501"])
    pids = r.choice(np.arange(1, ID_RANGE["market1501"] + 1), num_train_ids + num_test_ids, replace=False)
    train_ids, test_ids = sorted(pids[:num_train_ids]), sorted(pids[num_train_ids:])
    counts = {"bounding_box_train": 0, "query": 0, "bounding_box_test": 0}
    _folders(root, *counts)
    jobs = [("train", train_ids, queries_per_id + 1), ("test", test_ids, queries_per_id + 1)]
    for split, pid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        folder = "bounding_box_train" if split == "train" else ("query" if n < queries_per_id else "bounding_box_test")
        seq, frame, box = int(r.integers(1, 7)), 100 * (n + 1) + int(r.integers(100)), int(r.integers(1, 4))
        save_image(os.path.join(root, folder, f"{pid:04d}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg"),
                   _draw(seed, "market1501", split, pid, n, cam, "person"))
        counts[folder] += 1
    for split, num, first, offset in [("distractor", num_distractors, "0000", 0), ("junk", num_junk, "-1", 1)]:
        for n in range(num):
            cam = (n + offset) % num_cams
            save_image(os.path.join(root, "bounding_box_test", f"{first}_c{cam + 1}s1_{100 * (n + 1):06d}_00.jpg"),
                       _draw(seed, "market1501", split, n, 0, cam, "person"))
    counts["bounding_box_test"] += num_distractors + num_junk
    return {"images": counts, "train_ids": num_train_ids, "test_ids": num_test_ids,
            "distractors": num_distractors, "junk": num_junk}


def write_dukemtmc(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, seed=0,
                   queries_per_id=2, num_gallery_only_ids=2):
    """bounding_box_train/, query/, bounding_box_test/ with ``0001_c2_f0046182.jpg`` names; like
    the real set, some identities appear only in the gallery."""
    r = rng(seed, _DATASET_TAG["dukemtmc"])
    n_all = num_train_ids + num_test_ids + num_gallery_only_ids
    pids = sorted(r.choice(np.arange(1, ID_RANGE["dukemtmc"] + 1), n_all, replace=False))
    order = r.permutation(n_all)
    train_ids = sorted(pids[i] for i in order[:num_train_ids])
    test_ids = sorted(pids[i] for i in order[num_train_ids:num_train_ids + num_test_ids])
    extra_ids = sorted(pids[i] for i in order[num_train_ids + num_test_ids:])
    counts = {"bounding_box_train": 0, "query": 0, "bounding_box_test": 0}
    _folders(root, *counts)
    jobs = [("train", train_ids, 2), ("test", test_ids, max(2, queries_per_id + 1)), ("test", extra_ids, 2)]
    queried = set(test_ids)
    for split, pid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        folder = "bounding_box_train" if split == "train" else (
            "query" if n < queries_per_id and pid in queried else "bounding_box_test")
        frame = 1000 * (n + 1) + int(r.integers(1000))
        save_image(os.path.join(root, folder, f"{pid:04d}_c{cam + 1}_f{frame:07d}.jpg"),
                   _draw(seed, "dukemtmc", split, pid, n, cam, "person"))
        counts[folder] += 1
    return {"images": counts, "train_ids": num_train_ids, "test_ids": num_test_ids,
            "gallery_only_ids": num_gallery_only_ids}


# the person_val set's seed offset: other draws than the dukemtmc test set of the same Global.seed
PERSON_VAL_SEED = 7919


def write_person_val(root, num_test_ids=1024, imgs_per_id=6, queries_per_id=2, num_gallery_only_ids=85,
                     num_cams=8, seed=0):
    """The subnet search's person validation set (Search.val_sets): DukeMTMC's layout with test
    identities only, none of which any demo set trains on. Its default size serves the search's
    score, mAP averaged over disjoint galleries of 16 of its identities (ReIDMetric split_ids): two
    independent such sets rank 60 demo subnets at Kendall tau 0.82-0.84, against 0.72-0.73 for one
    256-identity gallery, a paired gain of +0.09 [+0.02, +0.17] (docs/chip_search.md, 2026-12-06)."""
    return write_dukemtmc(root, num_train_ids=0, num_test_ids=num_test_ids, imgs_per_id=imgs_per_id,
                          num_cams=num_cams, seed=seed + PERSON_VAL_SEED, queries_per_id=queries_per_id,
                          num_gallery_only_ids=num_gallery_only_ids)


def write_msmt17(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=15, seed=0,
                 queries_per_id=2, val_per_id=1, version="V1"):
    """train/ + test/ (V1; V2: mask_train_v2/ + mask_test_v2/) with <pid>/<file> images and
    list_{train,val,query,gallery}.txt; val holds ``val_per_id`` images of every training id.
    Test pids restart at 0, as in the official lists."""
    r = rng(seed, _DATASET_TAG["msmt17"])
    folders = {"train": "train", "test": "test"} if version == "V1" else {"train": "mask_train_v2",
                                                                            "test": "mask_test_v2"}
    lists = {"train": [], "val": [], "query": [], "gallery": []}
    _folders(root, *folders.values())
    tods = ("morning", "noon", "afternoon")
    jobs = [("train", range(num_train_ids), 2), ("test", range(num_test_ids), queries_per_id + 1)]
    for split, pid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        day = f"{int(r.integers(3, 5)):02d}{int(r.integers(1, 29)):02d}{tods[int(r.integers(3))]}"
        frame, k = int(r.integers(1, 9999)), int(r.integers(0, 3))
        rel = f"{pid:04d}/{pid:04d}_{n:03d}_{cam + 1:02d}_{day}_{frame:04d}_{k}.jpg"
        save_image(os.path.join(root, folders[split], rel), _draw(seed, "msmt17", split, pid, n, cam, "person"))
        if split == "train":
            lists["val" if n >= imgs_per_id - val_per_id else "train"].append(f"{rel} {pid}")
        else:
            lists["query" if n < queries_per_id else "gallery"].append(f"{rel} {pid}")
    for name, lines in lists.items():
        write_lines(os.path.join(root, f"list_{name}.txt"), lines)
    return {"images": {k: len(v) for k, v in lists.items()}, "train_ids": num_train_ids, "test_ids": num_test_ids}


def write_veri776(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=8, seed=0,
                  queries_per_id=1, num_gallery_only_ids=0):
    """image_train/, image_query/, image_test/ + name_{train,query,test}.txt; the
    ``num_gallery_only_ids`` distractor vehicles appear in image_test/ only."""
    r = rng(seed, _DATASET_TAG["veri776"])
    n_test = num_train_ids + num_test_ids
    # drawn in one go, so the default (no distractors) draws exactly what it always did
    vids = r.choice(np.arange(1, ID_RANGE["veri776"] + 1), n_test + num_gallery_only_ids, replace=False)
    names = {"train": [], "query": [], "test": []}
    _folders(root, *(f"image_{part}" for part in names))
    jobs = [("train", sorted(vids[:num_train_ids]), queries_per_id + 1),
            ("test", sorted(vids[num_train_ids:n_test]), queries_per_id + 1),
            ("test", sorted(vids[n_test:]), 2)]
    queried = set(vids[num_train_ids:n_test])
    for split, vid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        part = "train" if split == "train" else ("query" if n < queries_per_id and vid in queried else "test")
        name = f"{vid:04d}_c{cam + 1:03d}_{1000 * (n + 1) + int(r.integers(1000)):08d}_{int(r.integers(2))}.jpg"
        save_image(os.path.join(root, f"image_{part}", name), _draw(seed, "veri776", split, vid, n, cam, "vehicle"))
        names[part].append(name)
    for part, files in names.items():
        write_lines(os.path.join(root, f"name_{part}.txt"), files)
    return {"images": {k: len(v) for k, v in names.items()}, "train_ids": num_train_ids, "test_ids": num_test_ids,
            "gallery_only_ids": num_gallery_only_ids}


def write_vehicleid(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=4, seed=0):
    """image/<image_id>.jpg + train_test_split/train_list.txt and test_list_{800,1600,2400}.txt
    (lines ``image_id vehicle_id``); the smaller test lists hold a subset of the identities of
    the larger ones (800/2400, 1600/2400 of them), as in the real set."""
    r = rng(seed, _DATASET_TAG["vehicleid"])
    n_img = (num_train_ids + num_test_ids) * imgs_per_id
    image_ids = iter(sorted(r.choice(np.arange(1, 10 * n_img + 1), n_img, replace=False)))
    vids = r.permutation(np.arange(1, num_train_ids + num_test_ids + 1))
    rows = {"train": [], "test": []}
    jobs = [("train", sorted(vids[:num_train_ids]), 2), ("test", sorted(vids[num_train_ids:]), 2)]
    for split, vid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        img = next(image_ids)
        save_image(os.path.join(root, "image", f"{img:07d}.jpg"),
                   _draw(seed, "vehicleid", split, vid, n, cam, "vehicle"))
        rows[split].append((f"{img:07d}", int(vid)))
    write_lines(os.path.join(root, "train_test_split", "train_list.txt"), [f"{i} {v}" for i, v in rows["train"]])
    sizes = {}
    for size, keep in _nested({v for _, v in rows["test"]}, VEHICLEID_LISTS).items():
        lines = [f"{i} {v}" for i, v in rows["test"] if v in keep]
        write_lines(os.path.join(root, "train_test_split", f"test_list_{size}.txt"), lines)
        sizes[size] = {"images": len(lines), "ids": len(keep)}
    return {"images": {"train": len(rows["train"]), "test": len(rows["test"])}, "train_ids": num_train_ids,
            "test_lists": sizes}


_MODELS = ("Volkswagen Lavida", "Buick Excelle", "Toyota Corolla", "Honda Accord", "Wuling Hongguang",
           "Hyundai Elantra", "Nissan Sylphy", "Ford Focus")
_TYPES = ("sedan", "SUV", "MPV", "truck", "bus")
_COLOURS = {"black": (20, 20, 20), "white": (235, 235, 235), "gray": (128, 128, 128), "red": (200, 30, 30),
            "blue": (40, 70, 190), "green": (40, 150, 60), "yellow": (220, 200, 40), "brown": (120, 80, 40)}


def _vehicle_info(seed, split, vid):
    """``model;type;colour`` of a demo VeRi-Wild vehicle (the colour nearest its body paint)."""
    a = identity_traits(identity_seed(seed, "veriwild", split, vid), "vehicle")
    names = list(_COLOURS)
    ref = np.array([_COLOURS[n] for n in names], np.float32)
    colour = names[int(np.argmin(((ref - a["c"][0]) ** 2).sum(1)))]
    return f"{_MODELS[int(vid) % len(_MODELS)]};{_TYPES[a['kind']]};{colour}"


def write_veriwild(root, num_train_ids=24, num_test_ids=16, imgs_per_id=8, num_cams=12, seed=0,
                   queries_per_id=1, list_style="original"):
    """images/<vid>/<img>.jpg, train_test_split/vehicle_info.txt and the split lists.

    list_style "original": train_list.txt, test_<n>.txt (gallery) and test_<n>_query.txt with
    lines ``vid/img``. list_style "id" (the re-issued lists used by fast-reid):
    train_list_start0.txt, test_<n>_id.txt and test_<n>_id_query.txt with lines
    ``vid/img.jpg pid camid`` (train pids relabelled from 0). n in 3000/5000/10000 keep
    3/10, 1/2 and all of the test identities.
    """
    if list_style not in ("original", "id"):
        raise ValueError(f"list_style={list_style!r}: expected 'original' or 'id'")
    r = rng(seed, _DATASET_TAG["veriwild"])
    vids = r.choice(np.arange(1, ID_RANGE["veriwild"] + 1), num_train_ids + num_test_ids, replace=False)
    info, rows, img_no = [], {"train": [], "query": [], "gallery": []}, 0
    cam_ids = sorted(r.choice(np.arange(1, 175), num_cams, replace=False))
    jobs = [("train", sorted(vids[:num_train_ids]), queries_per_id + 1),
            ("test", sorted(vids[num_train_ids:]), queries_per_id + 1)]
    for split, vid, n, cam in _shots(r, jobs, imgs_per_id, num_cams):
        img_no += 1
        key = f"{vid:05d}/{img_no:06d}"
        save_image(os.path.join(root, "images", key + ".jpg"), _draw(seed, "veriwild", split, vid, n, cam, "vehicle"))
        day, hh, mm, ss = (int(r.integers(1, 29)), int(r.integers(6, 20)), int(r.integers(60)), int(r.integers(60)))
        stamp = f"2018-03-{day:02d} {hh:02d}:{mm:02d}:{ss:02d}"
        info.append(f"{key};{cam_ids[cam]};{stamp};{_vehicle_info(seed, split, vid)}")
        part = "train" if split == "train" else ("query" if n < queries_per_id else "gallery")
        rows[part].append((key, int(vid), int(cam_ids[cam])))
    split_dir = os.path.join(root, "train_test_split")
    write_lines(os.path.join(split_dir, "vehicle_info.txt"), info)
    if list_style == "original":
        write_lines(os.path.join(split_dir, "train_list.txt"), [k for k, _, _ in rows["train"]])
    else:
        relabel = {v: i for i, v in enumerate(sorted({v for _, v, _ in rows["train"]}))}
        write_lines(os.path.join(split_dir, "train_list_start0.txt"),
                    [f"{k}.jpg {relabel[v]} {c}" for k, v, c in rows["train"]])
    sizes = {}
    for size, keep in _nested({v for _, v, _ in rows["query"]}, VERIWILD_LISTS).items():
        q = [row for row in rows["query"] if row[1] in keep]
        g = [row for row in rows["gallery"] if row[1] in keep]
        for part, sel in (("query", q), ("gallery", g)):
            if list_style == "original":
                name = f"test_{size}_query.txt" if part == "query" else f"test_{size}.txt"
                lines = [k for k, _, _ in sel]
            else:
                name = f"test_{size}_id_query.txt" if part == "query" else f"test_{size}_id.txt"
                lines = [f"{k}.jpg {v} {c}" for k, v, c in sel]
            write_lines(os.path.join(split_dir, name), lines)
        sizes[size] = {"query": len(q), "gallery": len(g), "ids": len(keep)}
    return {"images": {"train": len(rows["train"]), "test": len(rows["query"]) + len(rows["gallery"])},
            "train_ids": num_train_ids, "test_lists": sizes, "list_style": list_style}


_SUPER = ("bicycle", "cabinet", "chair", "coffee_maker", "fan", "kettle", "lamp", "mug", "sofa",
          "stapler", "table", "toaster")


def write_sop(root, num_train_classes=30, num_test_classes=20, imgs_per_class=6, seed=0):
    """Ebay_train.txt / Ebay_test.txt (header ``image_id class_id super_class_id path``) and
    images at <super>_final/<product>_<n>.JPG; class ids continue from train into test and
    consecutive classes share a super class, as in the real set."""
    counts = {}
    for split, first, n_cls in [("train", 1, num_train_classes), ("test", num_train_classes + 1, num_test_classes)]:
        lines, image_id = [], 1
        for c in range(first, first + n_cls):
            sup = (c - first) * len(_SUPER) // n_cls
            for n in range(imgs_per_class):
                rel = f"{_SUPER[sup]}_final/{c}_{n}.JPG"
                save_image(os.path.join(root, rel),
                           render_identity(identity_seed(seed, "sop", split, c), n, SIZES["product"], "product",
                                           camera_seed(seed, "sop", c * 100 + n)))
                lines.append(f"{image_id} {c} {sup + 1} {rel}")
                image_id += 1
        write_lines(os.path.join(root, f"Ebay_{split}.txt"), lines, header="image_id class_id super_class_id path")
        counts[split] = len(lines)
    return {"images": counts, "train_classes": num_train_classes, "test_classes": num_test_classes}
