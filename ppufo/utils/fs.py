"""Output folders checked before any work starts: a read-only or misplaced folder is one
error naming the config key, not an OSError traceback after minutes of training or tracing."""
import os
import tempfile

from .errors import ConfigError


def check_writable_dir(path, what):
    """ConfigError unless files can be created in folder ``path`` (``what``: the key or option
    that names it, e.g. Global.output_dir). A folder that does not exist yet is not created:
    the nearest existing folder above it must be writable then. Leaves nothing behind."""
    fix = f"pass another {what}" if what.startswith("-") else f"choose another with -o {what}=..."
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{what}={path}: {existing} is a file, not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ppufo-write-check-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        where = "" if existing == target else f" (it would be created in {existing})"
        raise ConfigError(f"{what}={path}: cannot write there{where}: {e.strerror or e}; {fix}") from None
    return path
