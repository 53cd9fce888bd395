"""The demo sets: their writers and readers, their size knobs, the manifest of completely written
sets, and ``write_all``. WRITERS are the default (quickstart) sets; EXTRA_SETS are written only
when named: either made of WRITERS sets (EXTRA_PARTS: their sizes apply) or with a writer and
size knobs of their own (``custom_example``).

Sizes are ``{set: {writer keyword: value}}``; a set's size keywords are the int keywords of its
writer's signature except ``seed`` (``size_keywords``), checked by ``check_sizes``.
"""
import functools
import inspect
import os
import time

from ..utils.errors import ConfigError
from .custom import read_back as read_custom_example
from .custom import write_custom_example
from .face import write_face_folder, write_ms1m_recordio, write_verification_bin
from .manifest import MANIFEST, entry, record_written, written_sets
from .released import TREE, read_back as read_ufo_test_datasets
from .released import write_ufo_test_datasets
from .reid import (ID_RANGE, write_dukemtmc, write_market1501, write_msmt17, write_person_val, write_sop,
                   write_vehicleid, write_veri776, write_veriwild)

__all__ = ["EXTRA_PARTS", "EXTRA_SETS", "FACE_VAL_PAIRS", "MANIFEST", "READERS", "READ_BACK", "WRITERS",
           "check_request", "check_sizes", "completed_sets", "size_keywords", "sized_sets", "write_all",
           "written_sets"]

# the six verification sets of the UFO tables; pair counts keep the real 6,000 : 7,000 ratio
FACE_VAL_PAIRS = {"lfw": 120, "cplfw": 120, "calfw": 120, "cfp_ff": 140, "cfp_fp": 140, "agedb_30": 120}


def _faces_val(root, seed=0, lfw=120, cplfw=120, calfw=120, cfp_ff=140, cfp_fp=140, agedb_30=120):
    """The six verification .bin files; each keyword is that set's number of pairs."""
    pairs = dict(lfw=lfw, cplfw=cplfw, calfw=calfw, cfp_ff=cfp_ff, cfp_fp=cfp_fp, agedb_30=agedb_30)
    return {name: write_verification_bin(os.path.join(root, f"{name}.bin"), num_pairs=pairs[name], seed=seed + 31 * i)
            for i, name in enumerate(FACE_VAL_PAIRS)}  # this order fixes each set's seed


def _writer(fn):
    """fn as a WRITERS entry, called ``writer(root, seed, **sizes)``; its signature stays fn's
    (inspect follows __wrapped__), which is where size_keywords reads the knobs."""
    @functools.wraps(fn)
    def write(root, seed, **sizes):
        return fn(root, seed=seed, **sizes)
    return write


WRITERS = {name: _writer(fn) for name, fn in [
    ("market1501", write_market1501), ("dukemtmc", write_dukemtmc), ("msmt17", write_msmt17),
    ("veri776", write_veri776), ("vehicleid", write_vehicleid), ("veriwild", write_veriwild), ("sop", write_sop),
    ("ms1m", write_ms1m_recordio), ("faces_folder", write_face_folder), ("faces_val", _faces_val)]}


def _ufo_test_datasets(root, seed, sizes):
    reuse = completed_sets(os.path.dirname(root), seed, sizes)
    return write_ufo_test_datasets(root, WRITERS, seed, reuse=reuse, sizes=sizes)


# the UFO reference's released test-set tree (released.py), made of the demo sets above; an
# example of one's own data in the ImageList and ImageFolder layouts (custom.py), with its own knobs;
# the subnet search's person validation set (reid.py), DukeMTMC's layout
EXTRA_SETS = {"ufo_test_datasets": _ufo_test_datasets, "custom_example": _writer(write_custom_example),
              "person_val": _writer(write_person_val)}
# extra set made of demo sets -> those sets (their sizes apply to it)
EXTRA_PARTS = {"ufo_test_datasets": tuple(dict.fromkeys(s for s, _ in TREE.values()))}
# extra set -> [(folder, label, reader, counts)] of its parts opened with ppufo's readers
READ_BACK = {"ufo_test_datasets": read_ufo_test_datasets, "custom_example": read_custom_example}

# demo set -> the reader that opens it (for summaries); face sets are read by data/datasets/face.py
READERS = {"market1501": "Market1501", "dukemtmc": "DukeMTMC", "msmt17": "MSMT17", "veri776": "VeRi776",
           "vehicleid": "VehicleID", "veriwild": "VeRiWild", "sop": "SOP", "faces_folder": "ImageFolder",
           "person_val": "DukeMTMC"}


# ----------------------------------------------------------------------------- size knobs

def sized_sets():
    """{set: writer} of the sets with size knobs of their own: WRITERS and the extra sets that
    are not made of them."""
    return {**WRITERS, **{n: w for n, w in EXTRA_SETS.items() if n not in EXTRA_PARTS}}


def size_keywords(name):
    """{keyword: default} of demo set ``name``'s size knobs (its writer's int keywords but seed)."""
    params = inspect.signature(sized_sets()[name]).parameters.values()
    return {p.name: p.default for p in params if p.name != "seed" and type(p.default) is int}


# lowest value that still gives a usable set (default 1): a set may have no training identities
# (test-only sets) or no distractors; SOP needs a second image per class for a query to match,
# face verification 10 pairs for its 10 folds
_AT_LEAST = {"num_train_ids": 0, "num_train_classes": 0, "num_distractors": 0, "num_junk": 0,
             "num_gallery_only_ids": 0, "val_per_id": 0, "imgs_per_class": 2, **{s: 10 for s in FACE_VAL_PAIRS}}
# highest: Market1501 names hold a one-digit camera; VeRi-Wild draws camera ids from 1..174; face
# identity seeds hold 10**6 identities
_AT_MOST = {("market1501", "num_cams"): 9, ("veriwild", "num_cams"): 174, ("ms1m", "num_ids"): 10 ** 6,
            ("faces_folder", "num_ids"): 10 ** 6}


def _combination(name, full, given, base):
    """The first knob of ``name`` that is wrong together with the others, as an error message
    naming ``<base>.<keyword>``; ``full`` is ``given`` over the defaults."""
    def at(k):
        return f"{base}.{k}"

    def shown(k):
        return f"{full[k]}" + ("" if k in given else " (default)")
    if "num_cams" in full and "imgs_per_id" in full:  # ReID: the writers' camera plans
        need = max(2, full.get("queries_per_id", 1) + 1)
        why = (f"each test identity needs its {full.get('queries_per_id', 1)} queries and a gallery image on "
               f"distinct cameras" if "queries_per_id" in full else "each identity needs images on 2 distinct cameras")
        for k in ("imgs_per_id", "num_cams"):
            if full[k] < need:
                return f"{at(k)}: {shown(k)} is too few; {why}, so >= {need}"
    if name == "msmt17" and full["val_per_id"] >= full["imgs_per_id"]:
        return (f"{at('val_per_id')}: {shown('val_per_id')} leaves no training image of imgs_per_id="
                f"{full['imgs_per_id']}; expected < imgs_per_id")
    ids = [k for k in full if k.startswith("num_") and k.endswith("_ids")]
    id_range = {**ID_RANGE, "person_val": ID_RANGE["dukemtmc"]}.get(name)
    if id_range and sum(full[k] for k in ids) > id_range:
        return (f"{base}: {' + '.join(f'{k} {shown(k)}' for k in ids)} = "
                f"{sum(full[k] for k in ids)} identities; the real set's id range holds {id_range}")
    return None


def check_sizes(sizes, where="sizes."):
    """Validated sizes: {set: {keyword: int}} with only the values that differ from the writer's
    defaults (so {} means the default sets). Errors (ConfigError) name ``<where><set>.<keyword>``."""
    if sizes is None:
        return {}
    if not isinstance(sizes, dict):
        raise ConfigError(f"{where.rstrip('. ')}: expected a mapping {{set: {{keyword: value}}}}, got {sizes!r}")
    out, sized = {}, sized_sets()
    for name, given in sizes.items():
        if name not in sized:
            parts = f" (sized through its parts {list(EXTRA_PARTS[name])})" if name in EXTRA_PARTS else ""
            raise ConfigError(f"{where}{name}: unknown demo set{parts}; known: {list(sized)}")
        known = size_keywords(name)
        if not isinstance(given, dict):
            raise ConfigError(f"{where}{name}: expected a mapping {{keyword: value}} of {list(known)}, got {given!r}")
        for key, value in given.items():
            at = f"{where}{name}.{key}"
            if key not in known:
                raise ConfigError(f"{at}: unknown keyword; allowed for {name}: {list(known)}")
            low, high = _AT_LEAST.get(key, 1), _AT_MOST.get((name, key))
            if type(value) is not int or value < low or (high is not None and value > high):
                bound = f"integer >= {low}" + (f" and <= {high}" if high is not None else "")
                raise ConfigError(f"{at}: expected an {bound}, got {value!r}")
        problem = _combination(name, {**known, **given}, given, f"{where}{name}")
        if problem:
            raise ConfigError(problem)
        changed = {k: given[k] for k in known if k in given and given[k] != known[k]}
        if changed:
            out[name] = changed
    return out


# ----------------------------------------------------------------------------- manifest and writing

def completed_sets(root, seed, sizes=None):
    """{set: folder} of the WRITERS sets completely written into ``root`` with ``seed`` and the
    sizes ``sizes`` asks for ({set: {keyword: value}}; default: the default sizes)."""
    sizes = check_sizes(sizes)
    return {s: os.path.join(root, s) for s, e in written_sets(root).items()
            if s in WRITERS and e == entry(seed, sizes.get(s)) and os.path.isdir(os.path.join(root, s))}


def check_request(sets=None, sizes=None, where="sizes."):
    """(set names, checked sizes) of a write_all call, so a caller can refuse it before touching
    anything. Sizes for a set that is not written (itself or as a part of an extra set) are refused
    rather than ignored: the caller meant them for something."""
    sets = list(WRITERS) if sets is None else list(sets)
    known = {**WRITERS, **EXTRA_SETS}
    unknown = sorted(set(sets) - set(known))
    if unknown:
        raise ValueError(f"unknown demo set(s) {unknown}; known: {list(known)}")
    sizes = check_sizes(sizes, where)
    covered = set(sets).union(*(EXTRA_PARTS.get(s, ()) for s in sets))
    unused = [s for s in sizes if s not in covered]
    if unused:
        raise ConfigError(f"{where.strip(' .')}: sizes given for demo set(s) {unused}, which are not written "
                          f"(sets: {sets})")
    return sets, sizes


def write_all(root, seed=0, sets=None, sizes=None):
    """Write the demo sets (default: all of WRITERS; EXTRA_SETS when named) into ``root/<set>``;
    each finished set is recorded with its seed and non-default sizes in ``root/.ppufo_demo.json``,
    so an interrupted, older or differently sized write is detectable.

    sizes: {set: {writer keyword: value}} (see check_sizes); every set it names must be written
    by this call, itself or as a part of an extra set.
    Returns {set: {"path", "seconds", "info"}} in writing order (iterating gives the names).
    """
    sets, sizes = check_request(sets, sizes)
    out = {}
    for name in sets:
        t = time.time()
        path = os.path.join(root, name)
        if name in EXTRA_PARTS:
            own = {s: v for s, v in sizes.items() if s in EXTRA_PARTS[name]}
            info = EXTRA_SETS[name](path, seed, own)
        else:
            own = sizes.get(name, {})
            info = sized_sets()[name](path, seed, **own)
        record_written(root, name, seed, own)
        out[name] = {"path": path, "seconds": round(time.time() - t, 2), "info": info}
    return out
