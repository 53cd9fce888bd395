"""Markdown reference of the YAML config, generated from SCHEMA (ppufo/utils/config.py).

    python -m ppufo.utils.config_doc > docs/config.md

tests/test_config_doc.py fails when docs/config.md differs from render_reference().
"""
import yaml

from .config import BASE_KEY, REQUIRED, SCHEMA, Field, MapOf

COMMAND = "python -m ppufo.utils.config_doc > docs/config.md"

# Registries live in modules that import Paddle, so their names are described, not listed.
REGISTRY_DOCS = {
    "Arch": "Registry-built, so not in the table schema: `Arch.name` picks a registered model class "
            "(registry `ARCHS`, ppufo/arch/) and `Arch.Backbone` a registered backbone by its `name` "
            "(registry `BACKBONES`, ppufo/arch/backbone/); `Arch` allows no other keys. The other "
            "`Arch.Backbone` keys are checked against the signature of the named backbone when the model "
            "is built: an unknown or missing argument is an error listing the accepted ones.",
    "Optimizer": "Registry-built, so not in the table schema: `Optimizer.name` picks a registered "
                 "optimizer (registry `OPTIMIZERS`, ppufo/optimizer/optimizer.py); the section takes "
                 "`lr` (a registered schedule, registry `LR_SCHEDULERS`, ppufo/optimizer/lr.py), "
                 "`weight_decay`, `no_weight_decay`, `clip_grad` and the named optimizer's own arguments, "
                 "checked against its signature when it is built.",
}
REGISTRY_DEFAULT = "Registry-built: checked against the signature of the class its `name` registers."
NAME_TOKENS = {"Tasks": "<task>"}  # how a MapOf's user-chosen names are written in key paths

INTRO = f"""# Config reference

<!-- Generated from SCHEMA in ppufo/utils/config.py by `{COMMAND}`; do not edit by hand. -->

A config is a YAML file of sections (`python tools/train.py -c <file>`). Sections with a fixed
shape are checked against the tables below when the file is loaded: an unknown key, a value of
another type, one outside the choices or a number outside the range (inclusive bounds) is an
error naming the key, the value and what is allowed; a key left out takes its
default (a `required` key has none). `float` keys accept integers; `null` in a type means the key
may be null. Unknown names in registry-built sections (and in entries such as `datasets`,
`sampler`, `neck`, `head`, `loss`, `transforms`) are errors listing the registered ones.

**Inheritance (`{BASE_KEY}`).** A file may say `{BASE_KEY}: other.yaml` (or a list of files) at
its top level, relative to the file that names it. The bases are loaded recursively (bases of bases),
merged in order, then the file's own keys are deep-merged on top: mappings merge key by key;
lists and scalars replace. A cycle or a missing base file is an error naming the files. The
merged result is validated as one file; `{BASE_KEY}` is not part of the loaded config, so the
`config.yaml` a run saves is self-contained. Example: configs/supernet_quickstart.yaml.

**Overrides (`-o`).** `-o Section.key=value` (repeatable, e.g.
`-o Global.max_iters=50 Tasks.person.datasets.0.root=market`) applies after the bases are merged
and before validation. Values are typed as YAML (`3`, `0.5`, `1e-3`, `true`, `null`,
`[3, 64, 64]`); a number in the path indexes a list.

Sections: {", ".join(f"`{name}`" for name in SCHEMA)}.
"""

HEADER = "| Key | Type | Default | Choices | Range | Description |\n|---|---|---|---|---|---|"


def _text(text):
    """Plain text for a table cell or heading: '|' would split the cell, '<x>' read as HTML."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _code(value):
    """A value as YAML flow text, in backticks (where only '|' needs escaping)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    text = text[:-3].strip() if text.endswith("...") else text
    return f"`{text.replace('|', chr(92) + '|')}`"


def _row(path, field):
    types = "/".join("null" if t is type(None) else t.__name__ for t in field.types)
    default = "required" if field.default is REQUIRED else _code(field.default)
    choices = ", ".join(_code(c) for c in field.choices) if field.choices else ""
    return f"| `{path}` | {types} | {default} | {choices} | {_text(field.range_text())} | {_text(field.doc)} |"


def _section(path, schema, level):
    """Markdown lines of one section and its subsections."""
    lines = [f"{'#' * level} {_text(path)}", ""]
    if schema is dict:
        return lines + [REGISTRY_DOCS.get(path, REGISTRY_DEFAULT), ""]
    if isinstance(schema, MapOf):
        token = NAME_TOKENS.get(path, "<name>")
        lines += [f"One entry per {token.strip('<>')}, named freely (at least one); each entry:", ""]
        return lines + _section(f"{path}.{token}", schema.schema, level + 1)
    fields = [(k, v) for k, v in schema.items() if isinstance(v, Field)]
    if fields:
        lines += [HEADER] + [_row(f"{path}.{k}", f) for k, f in fields] + [""]
    for key, sub in schema.items():
        if not isinstance(sub, Field):
            lines += _section(f"{path}.{key}", sub, level + 1)
    return lines


def render_reference():
    """The whole reference page (Markdown)."""
    lines = [INTRO]
    for name, schema in SCHEMA.items():
        lines += _section(name, schema, 2)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
