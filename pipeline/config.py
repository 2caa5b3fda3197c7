"""Configuration: a preset, a YAML file and `--set key=value` overrides, validated before any work."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from slimpipe.errors import ConfigError
from slimpipe.schemas import CONFIG_SCHEMA_PATH

PRESET_DIR = Path(__file__).with_name("presets")
DEFAULT_PRESET = "web"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    data = yaml.safe_load(path.read_text()) or {}
    parent = data.pop("extends", None)
    base = load_preset(parent) if parent else {}
    merged = merge(base, data)
    merged["preset"] = name
    return merged


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict:
    """`a.b.c=value` -> {"a": {"b": {"c": value}}}; the value is read as a YAML scalar."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    dotted, raw = item.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set has an empty key in {item!r}")
    value: Any = yaml.safe_load(raw) if raw.strip() else None
    for key in reversed(keys):
        value = {key: value}
    return value


def _schema() -> dict:
    return json.loads(CONFIG_SCHEMA_PATH.read_text())


def validate(config: dict) -> None:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(known))
        key = ".".join([*map(str, err.absolute_path), unknown[0]]) if unknown else where
        raise ConfigError(f"unknown config key {key!r} (known keys here: {', '.join(known)})")
    raise ConfigError(f"config key {where!r}: {err.message}")


def resolve(
    preset: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
    address: str | None = None,
) -> dict:
    """Build the run's config in order of precedence: preset < file < --set < explicit flags."""
    file_data: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            file_data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if not isinstance(file_data, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping at the top level")
    name = preset or file_data.pop("preset", None) or DEFAULT_PRESET
    file_data.pop("preset", None)
    config = merge(load_preset(name), file_data)
    for item in overrides or []:
        config = merge(config, parse_override(item))
    if inputs:
        config["input"]["paths"] = list(inputs)
    if output:
        config["output"]["path"] = output
    if address:
        config["ray"]["address"] = address
    validate(config)
    return config


def later_config(run_config: dict, overrides: list[str] | None = None) -> dict:
    """The config of a step after `slimpipe run`: the run's own, completed by its preset's
    defaults for keys it lacks (a run made before a step existed), then `--set` overrides."""
    config = merge(load_preset(run_config.get("preset") or DEFAULT_PRESET), run_config)
    for item in overrides or []:
        config = merge(config, parse_override(item))
    validate(config)
    return config


# Settings of the steps after `slimpipe run`: they do not shape RUN/documents, so changing them
# never conflicts with the run; each of those steps records what it used.
LATER_STEPS = ("tokenizer", "tokenize", "pack")


def fingerprint(config: dict) -> str:
    """Hash of everything that shapes the output; where it lives and how it runs are left out."""
    shaping = {k: v for k, v in config.items() if k not in ("ray", "preset", *LATER_STEPS)}
    shaping["output"] = {k: v for k, v in config["output"].items() if k != "path"}
    shaping["input"] = {k: v for k, v in config["input"].items() if k != "paths"}
    blob = json.dumps(shaping, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
