"""``fairsynth``: the command-line entry point.

Each sub-command lives in its own module of :mod:`simulations` and exposes
``register(subparsers)``, which adds its parser and sets ``func``. User errors
(:class:`common.errors.FairsynthError`) end with their message and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from common.errors import FairsynthError

#: Modules that contribute sub-commands, in help order.
COMMAND_MODULES = [
    "simulations.data_command",
    "simulations.stage1_sweep",
    "simulations.stage2_sweep",
    "simulations.simulate",
    "simulations.compare",
    "simulations.audit",
    "simulations.frontier",
    "simulations.deploy",
    "simulations.settings_command",
    "simulations.schema_command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairsynth",
        description="Fair, private, one-shot collaborative learning through synthetic data.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v: info, -vv: debug)")
    parser.set_defaults(argv=[])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the results' provenance
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FairsynthError as exc:
        print(f"fairsynth {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
