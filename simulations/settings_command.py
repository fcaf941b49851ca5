"""``fairsynth settings``: every setting of a run, from its one declaration
(:mod:`common.run_config`).

``--markdown`` prints the configuration reference (``docs/configuration.md``); ``--toml`` the
``[tool.flwr.app.config]`` table of ``pyproject.toml`` with every default. Tests keep both
files equal to this output.
"""

from __future__ import annotations

import argparse

from common.run_config import RunConfig, key_of, settings
from simulations import options


def register(sub) -> None:
    parser = sub.add_parser("settings", help="every run setting: key, default, valid values")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--markdown", action="store_true",
                      help="the configuration reference (docs/configuration.md)")
    form.add_argument("--toml", action="store_true",
                      help="the [tool.flwr.app.config] table with every default")
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


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(options.settings_markdown(), end="")
    elif args.toml:
        print(toml_table(), end="")
    else:
        for field in settings():
            value = options.json_value(getattr(RunConfig(), field.name))
            print(f"{key_of(field.name):22} {value:22} {field.metadata['help']}")
    return 0
