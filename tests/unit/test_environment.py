"""The test environment is a user's: every module of the project imports, every third-party
package the project imports is named in requirements.txt, and pip sees no broken requirement.
(In CI this runs in a fresh venv built from requirements.txt alone, so a missing requirement
fails here rather than in a user's first supernet run.)"""
import ast
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import ppufo
from helpers import ROOT

WRAPPER_DIRS = ["tools", "deploy/python", "deploy/serving"]  # thin entry points into ppufo.cli
SCRIPT_DIRS = ["benchmark", "test_tipc"]  # standalone scripts
SOURCE_DIRS = ["ppufo", "tests"] + WRAPPER_DIRS + SCRIPT_DIRS


def package_modules():
    return sorted(m.name for m in pkgutil.walk_packages(ppufo.__path__, "ppufo."))


def files_in(dirs):
    return sorted(os.path.join(d, f) for d in dirs for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".py"))


def source_files():
    for d in SOURCE_DIRS:
        for folder, _, files in os.walk(os.path.join(ROOT, d)):
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


def third_party_imports():
    """Every absolute import in the project's sources (function-local ones included) that is
    neither the standard library nor one of the project's own modules or scripts."""
    # the package, the tests' own modules (helpers, conftest, test_*) that tests import by name, and
    # the standalone scripts a sibling script imports (benchmark/val_agreement.py: gpnas_quality)
    local = {"ppufo"} | {os.path.basename(p)[:-3] for p in source_files() if f"{os.sep}tests{os.sep}" in p} \
        | {os.path.basename(p)[:-3] for p in files_in(SCRIPT_DIRS)}
    found = set()
    for path in source_files():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and _catches_import_error(t)
                    for stmt in t.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found.update(n for n in names if n.split(".")[0] not in local | set(sys.stdlib_module_names))
    return sorted(found)


def _catches_import_error(try_node):
    """A version fallback: `except ImportError:` that imports something else instead (a handler
    that only reports the missing package does not make the import optional)."""
    return any(getattr(h.type, "id", None) in ("ImportError", "ModuleNotFoundError")
               and any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(h))
               for h in try_node.handlers)


def requirement_names():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {_canonical(re.split(r"[<>=!~\[; ]", line)[0]) for line in lines if line}


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_module_lists_are_not_empty():
    assert "ppufo.cli.train" in package_modules() and "tools/train.py" in files_in(WRAPPER_DIRS)
    assert "benchmark/train_throughput.py" in files_in(SCRIPT_DIRS)
    assert {"paddleslim.nas", "paddle2onnx", "visualdl"} <= set(third_party_imports())


@pytest.mark.parametrize("name", package_modules())
def test_every_package_module_imports(name):
    importlib.import_module(name)


@pytest.mark.parametrize("path", files_in(WRAPPER_DIRS))
def test_every_entry_point_script_calls_a_cli_main(path):
    """tools/*.py and deploy/*/*.py only import main from a ppufo.cli module and call it."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert len(imports) == 1 and isinstance(imports[0], ast.ImportFrom), path
    assert imports[0].module.startswith("ppufo.cli.") and [a.name for a in imports[0].names] == ["main"]
    assert callable(importlib.import_module(imports[0].module).main)


@pytest.mark.parametrize("path", files_in(SCRIPT_DIRS))
def test_every_standalone_script_imports(path):
    name = "_script_" + re.sub(r"\W", "_", path[:-3])
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # main() is not run


@pytest.mark.parametrize("name", third_party_imports())
def test_every_third_party_import_resolves(name):
    """Function-local imports too (lazy ones run only in some commands), down to the submodule:
    paddleslim.nas.ofa needs `decorator`, which paddleslim does not declare."""
    importlib.import_module(name)


def test_every_third_party_package_is_a_direct_requirement():
    """A package the project imports must be named in requirements.txt, not arrive by chance as
    another package's dependency."""
    providers = importlib.metadata.packages_distributions()
    required = requirement_names()
    missing = {}
    for name in third_party_imports():
        top = name.split(".")[0]
        dists = {_canonical(d) for d in providers.get(top, [])}
        if not dists & required:
            missing[top] = sorted(dists) or ["(no installed distribution)"]
    assert not missing, f"imported but not in requirements.txt: {missing}"


def test_pip_check_finds_no_broken_requirement():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_console_script_names_a_cli_main():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"ppufo-train", "ppufo-eval", "ppufo-export"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module.startswith("ppufo.cli.") and callable(getattr(importlib.import_module(module), func)), name


def pinned(path):
    """{canonical name: requirement line without comment} of a requirements file (options skipped)."""
    with open(os.path.join(ROOT, path)) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {_canonical(re.split(r"[<>=!~\[; ]", line)[0]): line for line in lines if line and not line.startswith("-")}


def test_gpu_requirements_pin_the_same_versions_except_paddle():
    """requirements-gpu.txt is requirements.txt with paddlepaddle-gpu (same version) instead of the
    CPU paddlepaddle, which would otherwise overwrite a GPU build in the same paddle/ folder."""
    cpu, gpu = pinned("requirements.txt"), pinned("requirements-gpu.txt")
    paddle_cpu, paddle_gpu = cpu.pop("paddlepaddle"), gpu.pop("paddlepaddle-gpu")
    assert paddle_cpu.split("==")[1] == paddle_gpu.split("==")[1], (paddle_cpu, paddle_gpu)
    assert "paddlepaddle" not in gpu and "paddlepaddle-gpu" not in cpu
    assert cpu == gpu, {k: (cpu.get(k), gpu.get(k)) for k in set(cpu) | set(gpu) if cpu.get(k) != gpu.get(k)}
    with open(os.path.join(ROOT, "requirements-gpu.txt")) as f:
        options = [line.strip() for line in f if line.startswith("-")]
    assert options == ["--extra-index-url https://www.paddlepaddle.org.cn/packages/stable/cu126/"]


def test_importing_ppufo_silences_paddles_ccache_warning():
    """Paddle warns "No ccache found" on every import (relevant only for building C++ extensions);
    every ppufo command imports ppufo before paddle, so none prints it."""
    proc = subprocess.run([sys.executable, "-c", "import ppufo, paddle; print(paddle.__version__)"],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert proc.returncode == 0, proc.stderr
    assert "ccache" not in proc.stderr, proc.stderr
