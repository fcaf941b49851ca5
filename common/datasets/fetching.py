"""``fairsynth data fetch NAME``: download a named dataset's public files, verify SHA-256."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from common.datasets.base import data_dir
from common.datasets.registry import fetchable, get
from common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def fetch(name: str, *, root: str | os.PathLike | None = None,
          base_url: str | None = None) -> list[Path]:
    """Download ``name``'s files into the data directory and verify their SHA-256.

    ``base_url`` replaces each file's public folder (e.g. a ``file://`` mirror). A file that is
    already present with the right digest is kept. A digest mismatch deletes the download and
    raises, so nothing unverified is left behind.
    """
    dataset = get(name)
    if not dataset.sources:
        raise ConfigError(f"nothing to fetch for {name!r} (it is generated); choose one of "
                          f"{list(fetchable())}.")
    target = data_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for source in dataset.sources:
        dest = target / source.filename
        if dest.is_file() and sha256(dest) == source.sha256:
            out.append(dest)
            continue
        url = source.url
        if base_url:
            url = base_url.rstrip("/") + "/" + source.filename
        logger.info("fetching %s", url)
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    shutil.copyfileobj(resp, tmp)
            except OSError as exc:
                tmp.close()
                os.unlink(tmp.name)
                raise DataError(f"could not download {url} ({exc}); check the network or "
                                "--base-url.") from exc
        got = sha256(Path(tmp.name))
        if got != source.sha256:
            os.unlink(tmp.name)
            raise DataError(
                f"{source.filename} from {url} has SHA-256 {got}, expected {source.sha256}; "
                "the download was discarded. The source may have changed: fetch it by hand and "
                "compare."
            )
        os.replace(tmp.name, dest)
        out.append(dest)
    return out


def sha256(path: Path) -> str:
    """The SHA-256 hex digest of the file ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
