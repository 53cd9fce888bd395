"""Resuming under a multi-process launch: every rank reads Global.checkpoints itself (only rank 0
writes checkpoints), so every rank must see the same files. A rank that cannot stops the launch
with an error naming it, its host and the path, instead of leaving the other ranks waiting in
their next collective."""
from ..utils.dist import failed_ranks, process_group
from ..utils.errors import ConfigError

SHARED = ("every rank reads the checkpoint, and only rank 0 writes it: keep Global.output_dir on storage "
          "every node mounts at the same path, or copy the checkpoint (the latest pointer and the "
          "iter_<n> files it names) to that path on every node")


def on_every_rank(fn, path, what="Global.checkpoints"):
    """fn() (reading checkpoint ``path``) on every rank; its result when it worked everywhere.
    A ConfigError or OSError on any rank becomes one ConfigError on every rank naming each rank
    that failed and its host (this rank's own error too, where it failed)."""
    error, result = None, None
    try:
        result = fn()
    except (ConfigError, OSError) as e:
        error = e
    failed = failed_ranks(error is not None)
    if not failed:
        return result
    if process_group()[1] == 1:
        raise error
    who = ", ".join(f"rank {r} on host {h}" for r, h in failed)
    why = (f"; on this rank ({process_group()[0]}): {error}" if error is not None
           else " (the log of each says why)")
    raise ConfigError(f"{what}={path}: cannot be read by {who}{why}. Under a multi-process launch "
                      f"{SHARED}") from None
