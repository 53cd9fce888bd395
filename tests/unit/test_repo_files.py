"""What git holds must work on any machine: no link out of the repository, no path of one machine.

A committed link to /tmp/clone1/data once made the README's main job fail in every fresh clone but
on the machine that held the link's target; only a check of the tracked files can see that.
"""
import os
import re
import subprocess

import pytest

from helpers import ROOT

# an absolute path that exists only on some machine: /tmp/<name>, /home/<user>, /root/...
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:tmp/[\w.-]+|home/[\w.-]+|root/)")


def tracked():
    """[(mode, path)] of every file git tracks in the repository."""
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(os.path.join(ROOT, ".git")):
        pytest.skip(f"{ROOT} is not a git checkout")
    out = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    entries = []
    for item in out.decode().split("\0"):
        if item:
            meta, path = item.split("\t", 1)
            entries.append((meta.split()[0], path))
    return entries


def test_tracked_links_stay_inside_the_repository():
    bad = []
    for mode, path in tracked():
        if mode != "120000":
            continue
        target = os.readlink(os.path.join(ROOT, path)) if os.path.islink(os.path.join(ROOT, path)) else \
            subprocess.run(["git", "cat-file", "-p", f":{path}"], cwd=ROOT, capture_output=True, text=True).stdout
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), target))
        if os.path.isabs(target) or os.path.relpath(resolved, ROOT).startswith(".."):
            bad.append(f"{path} -> {target}")
    assert not bad, f"tracked symbolic links that leave the repository: {bad}"


def test_no_tracked_file_outside_the_tests_names_a_path_of_one_machine():
    bad = []
    for mode, path in tracked():
        if mode == "120000" or path.startswith("tests/"):
            continue
        try:
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary files; a deleted file is not in the commit CI checks out
        for n, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                bad.append(f"{path}:{n}: {line.strip()[:100]}")
    assert not bad, "machine-specific absolute paths in tracked files:\n" + "\n".join(bad)


@pytest.mark.parametrize("line, machine", [
    ("data -> /tmp/clone1/data", True), ("pip install -r /tmp/requirements-gpu.txt", True),
    ("cd /home/alice/ppufo", True), ("/root/.cache/paddle", True), ("left ~0.5 GB in /tmp each", False),
    ("tempfile under $TMPDIR/tmp/x", False), ("./output/tmp/x", False), ("/dev/shm holds batches", False)])
def test_machine_path_pattern(line, machine):
    assert bool(MACHINE_PATH.search(line)) == machine
