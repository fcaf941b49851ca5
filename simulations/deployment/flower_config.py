"""The files Flower reads in a deployment: run and node config overrides (TOML), the ``flwr``
CLI's connection (``$FLWR_HOME/config.toml``) and the Flower app folder (``pyproject.toml``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import tomllib

from common.errors import ConfigError

#: Name of the ``flwr`` CLI connection written into ``$FLWR_HOME/config.toml``.
CONNECTION = "fairsynth-local"
#: Environment that keeps Flower from installing packages, phoning home or checking updates.
FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}
#: The folder of fairsynth's own pyproject.toml (simulations/deployment/ is two levels down).
SOURCE_TREE = Path(__file__).resolve().parents[2]


def write_connection(flwr_home: Path, *, address: str, ca_cert: Path) -> Path:
    """Write ``flwr_home/config.toml``: the connection :data:`CONNECTION` (the default one) to
    the SuperLink at ``address``, trusting ``ca_cert``. Returns the file."""
    path = Path(flwr_home) / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{address}"\nroot-certificates = {json.dumps(str(ca_cert))}\n'
    )
    return path


def toml_table(values: Mapping[str, object]) -> str:
    """``key = value`` lines (bool, int, float, str) — a run or node config override file."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        elif isinstance(value, str):
            text = json.dumps(value)  # a JSON string is a TOML basic string
        else:
            raise ConfigError(f"run config {key!r}: {value!r} is not a bool, number or string.")
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings → a mapping; a value is read as TOML, else kept as a string."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--run-config expects KEY=VALUE pairs, got {pair!r}.")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out[key.strip()] = value
    return out


def app_dir(explicit: Path | None) -> Path:
    """The Flower app to run: ``explicit``, else this source tree (its pyproject.toml)."""
    root = Path(explicit) if explicit else SOURCE_TREE
    pyproject = root / "pyproject.toml"
    try:
        config = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pyproject} is missing or unreadable ({exc}); pass --app with the "
                          "folder of fairsynth's pyproject.toml.") from exc
    if "app" not in config.get("tool", {}).get("flwr", {}):
        raise ConfigError(f"{pyproject} has no [tool.flwr.app] table; pass --app with the "
                          "folder of fairsynth's pyproject.toml.")
    return root.resolve()

