"""``fairsynth data fetch NAME``: download a public dataset and verify its SHA-256."""

from __future__ import annotations

from common import datasets


def register(sub) -> None:
    parser = sub.add_parser("data", help="manage datasets")
    data_sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download a public dataset and check its digest")
    fetch.add_argument("name", choices=datasets.fetchable())
    fetch.add_argument("--data-dir",
                       help=f"target folder (default: ${datasets.DATA_ENV} or the user cache)")
    fetch.add_argument("--base-url",
                       help="fetch from this folder URL instead (e.g. a file:// mirror)")
    fetch.set_defaults(func=_fetch)


def _fetch(args) -> int:
    for path in datasets.fetch(args.name, root=args.data_dir, base_url=args.base_url):
        print(f"{path}  ok")
    return 0
