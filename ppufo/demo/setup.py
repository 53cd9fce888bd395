"""Generate the demo data before training when the config asks for it; never create other roots;
never train on demo sets of other sizes than the config's."""
import os
import time

from ..utils.dist import exclusive
from ..utils.errors import ConfigError, DataError
from ..utils.logger import get_logger
from . import sets

LOCK = ".ppufo_demo.lock"  # beside the manifest: one process per machine writes, the others wait


def ensure_demo_data(config):
    """With Global.generate_demo_data, write every demo set missing from Global.data_root (the
    default sets and the extra ones Global.demo_sets names) with Global.seed and Global.demo_sizes
    (before training, so a stale root fails now rather than at the final evaluation). Returns the
    sets written by this process: under a multi-process launch the first process writes, the
    others wait for it and then read.

    The sets the root's manifest lists must have been written with the sizes Global.demo_sizes asks
    for. Sets written with another seed are reused (logged): Global.seed is also the model's seed,
    and a second run with another seed must not need new data. A study that wants each seed to
    draw its own data gives each seed its own data_root (ppufo-ablate does)."""
    g = config["Global"]
    root = g["data_root"]
    wanted = _wanted(g.get("demo_sets") or [])
    sizes = sets.check_sizes(g.get("demo_sizes"), "Global.demo_sizes.")
    if not g["generate_demo_data"]:
        if os.path.isdir(root) and os.listdir(root):
            if sizes and not os.path.isfile(os.path.join(root, sets.MANIFEST)):
                raise DataError(f"Global.demo_sizes asks for demo sets of sizes {sizes}, but {root} has no demo "
                                f"manifest ({sets.MANIFEST}) to check them against; set Global.generate_demo_data"
                                f"=true, or write the sets with: {_command(root, g['seed'], sizes, wanted=wanted)}")
            _check_written(root, None, sizes, wanted)
            return []
        raise DataError(f"Global.data_root not found or empty: {root} (point it at your datasets, "
                        f"or run: {_command(root, g['seed'], sizes, wanted=wanted)})")
    log = get_logger()
    with exclusive(os.path.join(root, LOCK), f"writing demo data into {root}", log):
        return _write_missing(root, g["seed"], sizes, wanted, log)


def _wanted(extra):
    """The sets a config reads: WRITERS, then the extra sets Global.demo_sets names. Only extra sets
    with a writer of their own qualify: one made of demo sets (ufo_test_datasets) is a data_root."""
    known = [n for n in sets.EXTRA_SETS if n not in sets.EXTRA_PARTS]
    unknown = [s for s in extra if s not in known]
    if unknown:
        raise ConfigError(f"Global.demo_sets: unknown extra demo set(s) {unknown}; expected some of {known} "
                          f"(the default sets {list(sets.WRITERS)} are always written)")
    return list(sets.WRITERS) + list(dict.fromkeys(extra))


def _command(root, seed, sizes, overwrite=False, wanted=()):
    extra = [s for s in wanted if s not in sets.WRITERS]
    flags = f" --sets {','.join(wanted)}" if extra else ""
    flags += "".join(f" --size {s}.{k}={v}" for s, kv in sizes.items() for k, v in kv.items())
    return f"python tools/make_demo_data.py --root {root} --seed {seed}{flags}" + (" --overwrite" if overwrite else "")


def _shown(seed, sizes):
    text = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "default sizes"
    return text if seed is None else f"seed {seed}, {text}"


def _check_written(root, seed, sizes, wanted):
    """DataError if a set of ``wanted`` the manifest lists was written with other sizes (or, unless
    ``seed`` is None, another seed) than asked for. The fix it prints keeps the seed on disk when
    ``seed`` is None."""
    wrong, disk_seed = [], None
    for name, e in sets.written_sets(root).items():
        if name not in wanted:  # e.g. an extra set the config does not read
            continue
        want = sizes.get(name, {})
        if e["sizes"] != want or (seed is not None and e["seed"] != seed):
            disk_seed = e["seed"] if disk_seed is None else disk_seed
            wrong.append(f"  {name}: on disk {_shown(None if seed is None else e['seed'], e['sizes'])}; "
                         f"the config asks for {_shown(seed, want)}")
    if wrong:
        raise DataError(f"{root}: demo set(s) written with other sizes than the config (Global.demo_sizes) "
                        f"asks for; training on them would train and score on other data:\n" + "\n".join(wrong)
                        + f"\nPoint Global.data_root at another folder (the sets are generated there), or "
                          f"rewrite this one: {_command(root, disk_seed if seed is None else seed, sizes, True, wanted)}")


def _write_missing(root, seed, sizes, wanted, log):
    done = sets.written_sets(root)
    stale = [s for s in wanted if s not in done and os.path.exists(os.path.join(root, s))]
    if stale:
        raise DataError(f"{root}: demo set folder(s) {stale} are not listed as complete in {sets.MANIFEST} "
                        f"(interrupted, or written by an older ppufo); delete them and they are "
                        f"regenerated, or run: python tools/make_demo_data.py --root {root} --overwrite")
    _check_written(root, None, sizes, wanted)
    other = sorted(n for n, e in done.items() if n in wanted and e["seed"] != seed)
    if other:
        log.info(f"{root}: reusing demo sets {other} drawn with seed {done[other[0]]['seed']} "
                 f"(Global.seed={seed} seeds the model and sampler; another data_root draws new data)")
    missing = [s for s in wanted if s not in done]
    if missing:
        log.info(f"generating demo sets {missing} into {root} (Global.generate_demo_data=True) ...")
        t = time.time()
        sets.write_all(root, seed=seed, sets=missing, sizes={s: v for s, v in sizes.items() if s in missing})
        log.info(f"demo data written in {time.time() - t:.1f}s")
    return missing
