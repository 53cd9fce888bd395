"""The demo sets: their writers and readers, the manifest of completely written sets, and
``write_all``. WRITERS are the default (quickstart) sets; EXTRA_SETS are written only when named."""
import json
import os
import time

from .face import write_face_folder, write_ms1m_recordio, write_verification_bin
from .released import write_ufo_test_datasets
from .reid import (write_dukemtmc, write_market1501, write_msmt17, write_sop, write_vehicleid, write_veri776,
                   write_veriwild)

# the six verification sets of the UFO tables; pair counts keep the real 6,000 : 7,000 ratio
FACE_VAL_PAIRS = {"lfw": 120, "cplfw": 120, "calfw": 120, "cfp_ff": 140, "cfp_fp": 140, "agedb_30": 120}


def _faces_val(root, seed):
    return {name: write_verification_bin(os.path.join(root, f"{name}.bin"), num_pairs=n, seed=seed + 31 * i)
            for i, (name, n) in enumerate(FACE_VAL_PAIRS.items())}


WRITERS = {
    "market1501": lambda root, seed: write_market1501(root, seed=seed),
    "dukemtmc": lambda root, seed: write_dukemtmc(root, seed=seed),
    "msmt17": lambda root, seed: write_msmt17(root, seed=seed),
    "veri776": lambda root, seed: write_veri776(root, seed=seed),
    "vehicleid": lambda root, seed: write_vehicleid(root, seed=seed),
    "veriwild": lambda root, seed: write_veriwild(root, seed=seed),
    "sop": lambda root, seed: write_sop(root, seed=seed),
    "ms1m": lambda root, seed: write_ms1m_recordio(root, num_ids=40, imgs_per_id=10, seed=seed),
    "faces_folder": lambda root, seed: write_face_folder(root, num_ids=40, imgs_per_id=10, seed=seed),
    "faces_val": _faces_val,
}


def _ufo_test_datasets(root, seed):
    return write_ufo_test_datasets(root, WRITERS, seed, reuse=completed_sets(os.path.dirname(root), seed))


# the UFO reference's released test-set tree (released.py), made of the demo sets above
EXTRA_SETS = {"ufo_test_datasets": _ufo_test_datasets}

# demo set -> the reader that opens it (for summaries); face sets are read by data/datasets/face.py
READERS = {"market1501": "Market1501", "dukemtmc": "DukeMTMC", "msmt17": "MSMT17", "veri776": "VeRi776",
           "vehicleid": "VehicleID", "veriwild": "VeRiWild", "sop": "SOP", "faces_folder": "ImageFolder"}


MANIFEST = ".ppufo_demo.json"  # beside the set folders, so no reader ever lists it


def written_sets(root):
    """{set: seed} of the demo sets completely written into ``root`` (from its manifest)."""
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def completed_sets(root, seed):
    """{set: folder} of the WRITERS sets completely written into ``root`` with ``seed``."""
    return {s: os.path.join(root, s) for s, sd in written_sets(root).items()
            if sd == seed and s in WRITERS and os.path.isdir(os.path.join(root, s))}


def _record_written(root, name, seed):
    done = written_sets(root)
    done[name] = seed
    tmp = os.path.join(root, MANIFEST + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(done, f)
    os.replace(tmp, os.path.join(root, MANIFEST))


def write_all(root, seed=0, sets=None):
    """Write the demo sets (default: all of WRITERS; EXTRA_SETS when named) into ``root/<set>``;
    each finished set is recorded in ``root/.ppufo_demo.json``, so an interrupted or older write
    is detectable.

    Returns {set: {"path", "seconds", "info"}} in writing order (iterating gives the names).
    """
    sets = list(WRITERS) if sets is None else list(sets)
    known = {**WRITERS, **EXTRA_SETS}
    unknown = sorted(set(sets) - set(known))
    if unknown:
        raise ValueError(f"unknown demo set(s) {unknown}; known: {list(known)}")
    out = {}
    for name in sets:
        t = time.time()
        path = os.path.join(root, name)
        info = known[name](path, seed)
        _record_written(root, name, seed)
        out[name] = {"path": path, "seconds": round(time.time() - t, 2), "info": info}
    return out
