"""``fairsynth settings``: every setting of a run, from its one declaration
(:mod:`common.run_config`).

``--markdown`` prints the configuration reference (``docs/configuration.md``); ``--toml`` the
``[tool.flwr.app.config]`` table of ``pyproject.toml`` with every default; ``--write`` rewrites
both files of the source tree (after a setting is declared or changed). Tests keep both files
equal to this output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ConfigError
from common.run_config import GROUPS, RunConfig, key_of, settings
from simulations import options


def register(sub) -> None:
    parser = sub.add_parser("settings", help="every run setting: key, default, valid values")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true",
                      help="the configuration reference (docs/configuration.md)")
    form.add_argument("--toml", action="store_true",
                      help="the [tool.flwr.app.config] table with every default")
    form.add_argument("--write", action="store_true",
                      help="rewrite docs/configuration.md and pyproject.toml's table in the "
                           "source tree")
    parser.set_defaults(func=run)


def toml_table() -> str:
    """``[tool.flwr.app.config]``: every key with its default, grouped."""
    lines = ["[tool.flwr.app.config]"]
    group = None
    for field in settings():
        if field.metadata["group"] != group:
            group = field.metadata["group"]
            lines.append(f"# {group}")
        value = getattr(RunConfig(), field.name)
        lines.append(f"{key_of(field.name)} = {options.json_value(value)}")
    return "\n".join(lines) + "\n"


#: The source tree whose files ``--write`` rewrites.
ROOT = Path(__file__).resolve().parent.parent
TABLE = "[tool.flwr.app.config]"


def write_generated(root: Path = ROOT) -> list[Path]:
    """Rewrite ``root/docs/configuration.md`` and the body of ``root/pyproject.toml``'s
    ``[tool.flwr.app.config]`` table (its leading comment lines kept) from the declaration."""
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    if TABLE not in text:
        raise ConfigError(f"{pyproject} has no {TABLE} table to rewrite.")
    head, rest = text.split(TABLE + "\n", 1)
    lines = rest.splitlines()
    comment = []
    while lines and lines[0].startswith("#") and lines[0][2:] not in GROUPS:
        comment.append(lines.pop(0))
    end = next((i for i, line in enumerate(lines) if line.startswith("[")), len(lines))
    tail = "\n".join(lines[end:])
    body = toml_table().split("\n", 1)[1]
    pyproject.write_text(head + TABLE + "\n" + "".join(c + "\n" for c in comment) + body
                         + ("\n" + tail + "\n" if tail else ""))
    page = root / "docs" / "configuration.md"
    page.write_text(options.settings_markdown())
    return [pyproject, page]


def run(args: argparse.Namespace) -> int:
    if args.write:
        for path in write_generated():
            print(f"wrote {path}")
    elif args.markdown:
        print(options.settings_markdown(), end="")
    elif args.toml:
        print(toml_table(), end="")
    else:
        for field in settings():
            value = options.json_value(getattr(RunConfig(), field.name))
            print(f"{key_of(field.name):22} {value:22} {field.metadata['help']}")
    return 0
