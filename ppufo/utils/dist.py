"""Process topology from paddle.distributed.launch's environment, the few collectives outside the
training step (a barrier, which ranks failed a check), and first-use file writing that is safe
when several processes of one machine start at once."""
import contextlib
import os
import socket
import time

try:
    import fcntl
except ImportError:  # Windows: no multi-process launch there, so no lock is needed
    fcntl = None


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def process_group():
    """(rank, world size) of an initialised multi-process group, else (0, 1): collectives are
    safe only then (a launched process before init_parallel_env has no group yet)."""
    import paddle.distributed as pdist
    if pdist.get_world_size() > 1 and pdist.is_initialized():
        return pdist.get_rank(), pdist.get_world_size()
    return 0, 1


def barrier():
    """Wait until every rank of an initialised process group is here (one process: return)."""
    if process_group()[1] > 1:
        import paddle.distributed as pdist
        pdist.barrier()


_HOST_BYTES = 64


def failed_ranks(failed):
    """[(rank, host name)] of the ranks where ``failed`` is true. A collective: every rank of an
    initialised group calls it (one process: this process alone). Host names travel as integers
    in one all_gather (no pickled objects from other processes)."""
    host = socket.gethostname()
    rank, world = process_group()
    if world == 1:
        return [(rank, host)] if failed else []
    import numpy as np
    import paddle
    import paddle.distributed as pdist
    name = host.encode()[:_HOST_BYTES]
    mine = np.frombuffer(bytes([int(bool(failed)), len(name)]) + name.ljust(_HOST_BYTES, b"\0"), np.uint8)
    parts = []
    pdist.all_gather(parts, paddle.to_tensor(mine.astype(np.int32)))
    out = []
    for r, part in enumerate(parts):
        v = part.numpy()
        if v[0]:
            out.append((r, v[2:2 + v[1]].astype(np.uint8).tobytes().decode(errors="replace")))
    return out


@contextlib.contextmanager
def exclusive(lock_path, what, log=None):
    """Hold an exclusive lock on ``lock_path`` for the block: the first process to arrive writes
    the shared files while the others wait here, then find them written. A lock (not a collective
    barrier) needs no process group, and a writer that dies or fails releases it instead of
    leaving the others waiting forever."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
        fh = open(lock_path, "a") if fcntl else None
    except OSError:  # a read-only folder: nobody can write there, so there is nothing to order
        fh = None
    if fh is None:
        yield
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            t = time.time()
            if log:
                log.info(f"waiting for another process to finish {what} ({lock_path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
            if log:
                log.info(f"{what}: the other process let go after {time.time() - t:.1f}s")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
