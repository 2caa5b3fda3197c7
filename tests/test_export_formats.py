"""The export format registry is the one list of formats: the CLI offers exactly its formats,
and the config schema's export sections name none of their own."""

import json

from slimpipe.cli import build_parser
from slimpipe.schemas import CONFIG_SCHEMA_PATH
from slimpipe.stages.export import FORMATS, ExportFormat


def _export_format_choices() -> list[str]:
    sub = next(a for a in build_parser()._subparsers._group_actions if a.dest == "command")
    action = next(a for a in sub.choices["export"]._actions if a.dest == "format")
    return list(action.choices)


def _enums(node) -> list[list]:
    if isinstance(node, dict):
        return ([node["enum"]] if "enum" in node else []) + [e for v in node.values() for e in _enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in _enums(v)]
    return []


def test_cli_choices_are_the_registry():
    assert _export_format_choices() == list(FORMATS)
    assert all(issubclass(cls, ExportFormat) for cls in FORMATS.values())


def test_config_schema_names_no_other_export_formats():
    """An enum of the export's config sections that names an export format must list them all."""
    sections = json.loads(CONFIG_SCHEMA_PATH.read_text())["properties"]
    for enum in _enums([sections.get("pack"), sections.get("export")]):
        if set(enum) & set(FORMATS):
            assert sorted(enum) == sorted(FORMATS)
