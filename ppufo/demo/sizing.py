"""How finely a demo test set resolves a score: the number of items its protocol scores, and the
binomial standard error, in points, of a proportion (rank-1, Recall@1, verification accuracy)
measured on that many items. An experiment states "this test set resolves X points" with it.

The binomial error counts the test set's sampling only, and items as independent: queries of one
identity are not quite, so the true error is somewhat larger; VehicleID averages 10 gallery draws,
which makes it somewhat smaller. mAP is not a proportion; its error is of the same order.
"""
import math

from .reid import VEHICLEID_LISTS, VERIWILD_LISTS, kept_ids
from .sets import WRITERS, check_sizes, size_keywords

_QUERIES = ("market1501", "dukemtmc", "msmt17", "veri776")  # num_test_ids x queries_per_id


def scored_count(name, sizes=None, test_size=None, set_name=None):
    """Items the protocol of demo set ``name`` scores, given its sizes ({keyword: value}; others
    default): ReID queries (VehicleID: every image of the test list but the one gallery image per
    identity; ``test_size`` picks VehicleID's or VeRi-Wild's list, default the largest), SOP test
    images (each queries all the others), face verification pairs of ``set_name``."""
    if name not in WRITERS:
        raise ValueError(f"unknown demo set {name!r}; known: {list(WRITERS)}")
    s = {**size_keywords(name), **check_sizes({name: sizes or {}}).get(name, {})}
    lists = {"vehicleid": VEHICLEID_LISTS, "veriwild": VERIWILD_LISTS}.get(name)
    if test_size is not None and (lists is None or test_size not in lists):
        raise ValueError(f"test_size={test_size!r}: " + (f"expected one of {lists} for {name}" if lists
                                                           else f"{name} has one test list"))
    if name in _QUERIES:
        return s["num_test_ids"] * s["queries_per_id"]
    if lists:
        ids = kept_ids(s["num_test_ids"], test_size or max(lists), lists)
        return ids * (s["queries_per_id"] if name == "veriwild" else s["imgs_per_id"] - 1)
    if name == "sop":
        return s["num_test_classes"] * s["imgs_per_class"]
    if name == "faces_val":
        if set_name not in s:
            raise ValueError(f"faces_val: set_name={set_name!r}; expected one of {list(s)}")
        return s[set_name]
    raise ValueError(f"{name} is a training set; no protocol scores it")


def standard_error(p, n):
    """Binomial standard error in points (of 100) of a proportion ``p`` (a fraction in [0, 1])
    measured on ``n`` items: 100 * sqrt(p (1 - p) / n)."""
    if not 0 <= p <= 1:
        raise ValueError(f"p={p!r}: expected a fraction in [0, 1] (0.8, not 80)")
    if type(n) is not int or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer count")
    return 100 * math.sqrt(p * (1 - p) / n)


def resolution(name, p, sizes=None, test_size=None, set_name=None):
    """(items scored, standard error in points of a proportion ``p``) of demo set ``name``."""
    n = scored_count(name, sizes, test_size, set_name)
    return n, standard_error(p, n)
