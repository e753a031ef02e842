"""Read ``loopline.yaml``: ``${VAR}`` interpolation, env overrides, errors with YAML paths.

>>> import os, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "loopline.yaml").write_text("project: shop\\n")
>>> load_config(d / "loopline.yaml").project
'shop'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from loopline.config.project import LooplineConfig
from loopline.errors import ConfigError

CONFIG_FILENAME = "loopline.yaml"
STORE_ENV = {
    "metadata_url": "LOOPLINE_METADATA_URL",
    "warehouse_url": "LOOPLINE_WAREHOUSE_URL",
    "lake_url": "LOOPLINE_LAKE_URL",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"environment variable {name} is not set",
                path=path,
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _VAR.sub(replace, node)
    return node


def _yaml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        # Discriminated unions add the tag (e.g. 'file') to loc; keep it, it tells which kind.
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f"; got {got!r}"
        lines.append(f"  {_yaml_path(err['loc'])}: {err['msg']}{shown}")
    return "\n".join(lines)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    project_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    origin: str = "configuration",
) -> LooplineConfig:
    """Validate a mapping as loopline configuration (the Python twin of :func:`load_config`)."""
    env = os.environ if env is None else env
    raw = _interpolate(dict(data), "", env)
    stores = dict(raw.get("stores") or {})
    for field, var in STORE_ENV.items():
        if env.get(var):
            stores[field] = env[var]
    if stores:
        raw["stores"] = stores
    if env.get("LOOPLINE_TRACKING_URI"):
        raw["tracking"] = {**(raw.get("tracking") or {}), "uri": env["LOOPLINE_TRACKING_URI"]}
    serve = raw.get("serve")
    state_url = env.get("LOOPLINE_RECOMMENDER_STATE_URL")
    if state_url and isinstance(serve, dict) and isinstance(serve.get("recommender"), dict):
        serve["recommender"] = {**serve["recommender"], "state_url": state_url}
    if project_dir is not None:
        raw["project_dir"] = project_dir
    try:
        return LooplineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{origin} is invalid:\n{_describe(exc)}",
            hint="see docs/configuration.md for every field",
        ) from exc


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> LooplineConfig:
    """Load ``loopline.yaml`` (a file, or a folder holding one; the current folder by default)."""
    p = Path(path) if path is not None else Path.cwd()
    if p.is_dir():
        p = p / CONFIG_FILENAME
    if not p.is_file():
        raise ConfigError(
            f"no configuration file at {p}", hint="run 'loopline init DIR' to create a project"
        )
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top, got {type(data).__name__}")
    return config_from_dict(data, project_dir=p.parent.resolve(), env=env, origin=str(p))
