"""The UFO reference's released test-set tree (``test_datasets/``), made of the demo sets.

The reference evaluation script (VIMER ``UFO/AllInOne/evaluation_script.py``) reads its test
sets from one root. ``write_ufo_test_datasets`` writes that tree: each reference folder holds
one ppufo demo set (same writer and seed, so the same image bytes) under the reference's folder
name, converted to the lists the reference reads. ``UFO_TEST_SETS`` are the ppufo test-set
entries (``Tasks.<task>.test_sets``) that read the tree, in the reference's order.
"""
import os
import shutil

from ..data.datasets import build_source
from .common import write_lines
from .face import write_verification_filelist

_FACES = ("calfw", "cplfw", "lfw", "cfp_ff", "cfp_fp", "agedb_30")
UFO_TEST_SETS = tuple(
    [("face", {"name": "FaceVerificationFilelist", "root": "faces_emore_val", "set_name": s}) for s in _FACES]
    + [("person", {"name": "Market1501", "root": "Market-1501-v15.09.15"}),
       ("person", {"name": "MSMT17", "root": "MSMT17_V2"}),
       ("vehicle", {"name": "VeRi776", "root": "veri"}),
       ("vehicle", {"name": "VehicleID", "root": "vehicleid", "test_size": 2400}),
       ("vehicle", {"name": "VeRiWild", "root": "VERI-Wild", "test_size": 10000}),
       ("product", {"name": "SOPCsvList", "root": "Stanford_Online_Products"})])


def ufo_test_sets():
    """{task: [test-set entry, ...]} of UFO_TEST_SETS (fresh dicts), roots relative to the tree."""
    out = {}
    for task, entry in UFO_TEST_SETS:
        out.setdefault(task, []).append(dict(entry))
    return out


# ----------------------------------------------------------------------------- conversions

def _faces(path):
    out = {}
    for name in sorted(f[:-4] for f in os.listdir(path) if f.endswith(".bin")):
        out[name] = write_verification_filelist(os.path.join(path, f"{name}.bin"), path, name)
        os.remove(os.path.join(path, f"{name}.bin"))
    return out


def _msmt17_v2(path):
    for v1, v2 in (("train", "mask_train_v2"), ("test", "mask_test_v2")):
        os.replace(os.path.join(path, v1), os.path.join(path, v2))


def _lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _veriwild_id_lists(path):
    """The re-issued test lists the reference reads (``vid/img.jpg vid camid``) in place of the
    original ones; train_list.txt and vehicle_info.txt stay."""
    split = os.path.join(path, "train_test_split")
    cams = dict(line.split(";")[:2] for line in _lines(os.path.join(split, "vehicle_info.txt")))
    for size in (3000, 5000, 10000):
        for old, new in ((f"test_{size}.txt", f"test_{size}_id.txt"),
                         (f"test_{size}_query.txt", f"test_{size}_id_query.txt")):
            keys = _lines(os.path.join(split, old))
            write_lines(os.path.join(split, new), [f"{k}.jpg {int(k.split('/')[0])} {cams[k]}" for k in keys])
            os.remove(os.path.join(split, old))


def _sop_csv(path):
    """Ebay_{train,test}.txt -> {train,test}.txt, lines ``path,class_id`` without a header."""
    out = {}
    for split in ("train", "test"):
        ebay = os.path.join(path, f"Ebay_{split}.txt")
        rows = [line.split() for line in _lines(ebay)[1:]]
        write_lines(os.path.join(path, f"{split}.txt"), [f"{rel},{cls}" for _, cls, _, rel in rows])
        os.remove(ebay)
        out[split] = {"images": len(rows), "classes": len({r[1] for r in rows})}
    return out


# reference folder -> (the demo set it is made of, conversion to the reference's files)
TREE = {"faces_emore_val": ("faces_val", _faces), "Market-1501-v15.09.15": ("market1501", None),
        "MSMT17_V2": ("msmt17", _msmt17_v2), "veri": ("veri776", None), "vehicleid": ("vehicleid", None),
        "VERI-Wild": ("veriwild", _veriwild_id_lists), "Stanford_Online_Products": ("sop", _sop_csv)}


def write_ufo_test_datasets(root, writers, seed=0, reuse=None, folders=None, sizes=None):
    """Write the reference tree into ``root`` (default: all folders of TREE, or ``folders``).

    writers: {demo set: writer(root, seed, **sizes)}, i.e. sets.WRITERS. sizes: {demo set:
    {writer keyword: value}} of the parts drawn here (checked by the caller). reuse: {demo set:
    folder} of demo sets already written with ``seed`` and those sizes; they are copied instead of
    drawn again (identical bytes; a copy takes well under a second, drawing ~16 s, mostly the faces).
    Returns {folder: {"demo_set", "copied_from" or "written", "converted"}}.
    """
    unknown = sorted(set(folders or ()) - set(TREE))
    if unknown:
        raise ValueError(f"unknown reference folder(s) {unknown}; known: {list(TREE)}")
    info = {}
    for folder, (demo_set, convert) in TREE.items():
        if folders is not None and folder not in folders:
            continue
        path = os.path.join(root, folder)
        src = (reuse or {}).get(demo_set)
        if src:
            shutil.copytree(src, path)
            info[folder] = {"demo_set": demo_set, "copied_from": src}
        else:
            written = writers[demo_set](path, seed, **(sizes or {}).get(demo_set, {}))
            info[folder] = {"demo_set": demo_set, "written": written}
        info[folder]["converted"] = convert(path) if convert else None
    return info


def read_back(root):
    """[(task, label, reader, counts)] of every UFO_TEST_SETS entry opened from ``root``."""
    out = []
    for task, entry in UFO_TEST_SETS:
        src = build_source(entry, root)
        if src.protocol == "verification":
            counts = f"{len(src.pairs()[1])} pairs"
        else:
            counts = "; ".join(f"{s} {len(getattr(src, s)())} imgs" for s in ("query", "gallery", "test")
                               if s in src.splits)
        label = entry.get("set_name") or entry["name"] + (f"-{entry['test_size']}" if "test_size" in entry else "")
        out.append((task, label, src.name, f"{entry['root']}/: {counts}"))
    return out
