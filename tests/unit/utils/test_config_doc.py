"""docs/config.md is generated from the config schema and stays in step with it."""
import subprocess
import sys

from helpers import ROOT
from ppufo.utils.config import REQUIRED, SCHEMA, Field, MapOf
from ppufo.utils.config_doc import COMMAND, NAME_TOKENS, render_reference

DOC = f"{ROOT}/docs/config.md"


def fields(schema, path):
    """(key path, Field) of every fixed key, walked independently of the generator."""
    if isinstance(schema, Field):
        return [(path, schema)]
    if isinstance(schema, MapOf):
        return fields(schema.schema, f"{path}.{NAME_TOKENS.get(path, '<name>')}")
    if schema is dict:
        return []
    return [f for key, sub in schema.items() for f in fields(sub, f"{path}.{key}" if path else key)]


def test_docs_config_md_is_up_to_date():
    with open(DOC) as f:
        on_disk = f.read()
    assert on_disk == render_reference(), f"docs/config.md is stale: regenerate it with `{COMMAND}`"


def test_every_fixed_key_has_one_row_with_its_default_and_choices():
    page = render_reference()
    found = fields(SCHEMA, "")
    assert {p.split(".")[0] for p, _ in found} >= {"Global", "Tasks", "Loss", "DataLoader", "Metric",
                                                   "Supernet", "Extract", "Search", "Export"}
    for path, field in found:
        rows = [line for line in page.splitlines() if line.startswith(f"| `{path}` |")]
        assert len(rows) == 1, f"{path}: {len(rows)} rows in the reference"
        assert ("| required |" in rows[0]) == (field.default is REQUIRED), rows[0]
        assert all(f"`{c}`" in rows[0] for c in field.choices or ()), rows[0]


def test_registry_sections_and_loading_rules_are_described():
    page = render_reference()
    for name in (k for k, v in SCHEMA.items() if v is dict):
        assert f"\n## {name}\n\nRegistry-built" in page, name
    assert "_BASE_: other.yaml" in page and "-o Section.key=value" in page
    assert page.index("_BASE_") < page.index("\n## ")  # both explained before the first section


def test_module_prints_the_page_without_importing_paddle():
    code = ("import runpy, sys; runpy.run_module('ppufo.utils.config_doc', run_name='__main__'); "
            "assert 'paddle' not in sys.modules, 'config_doc imported paddle'")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == render_reference()
