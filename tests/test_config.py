import pytest

from slimpipe.config import fingerprint, parse_override, preset_names, resolve
from slimpipe.errors import ConfigError


def test_presets_resolve_and_validate():
    assert {"slimpajama", "web"} <= set(preset_names())
    cfg = resolve()
    assert cfg["preset"] == "web" and cfg["filters"]["length"]["min_chars"] == 200
    assert resolve("slimpajama")["clean"]["normalization"] == "NFC"


def test_overrides_and_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("filters:\n  length:\n    min_chars: 50\noutput:\n  shard_bytes: 4096\n")
    cfg = resolve(None, str(f), ["filters.length.min_chars=120", "input.source=cc"], ["in/"], "out")
    assert cfg["filters"]["length"]["min_chars"] == 120
    assert cfg["output"]["shard_bytes"] == 4096 and cfg["input"]["source"] == "cc"
    assert cfg["input"]["paths"] == ["in/"] and cfg["output"]["path"] == "out"
    assert parse_override("a.b=true") == {"a": {"b": True}}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'filters.lenght'"):
        resolve(overrides=["filters.lenght.min_chars=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'bogus'"):
        resolve(overrides=["bogus=1"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'filters.length.min_chars'.*not of type 'integer'"):
        resolve(overrides=["filters.length.min_chars=lots"])
    with pytest.raises(ConfigError, match=r"'clean.normalization'"):
        resolve(overrides=["clean.normalization=NFX"])
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve("nope")
    with pytest.raises(ConfigError, match="key=value"):
        resolve(overrides=["novalue"])


def test_fingerprint_ignores_where_and_how_it_runs():
    a = resolve(inputs=["x"], output="o1")
    b = resolve(inputs=["y"], output="o2", address="ray://h:10001")
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(resolve(overrides=["filters.length.min_chars=1"]))


def test_every_filter_setting_is_written_out_and_named_alike():
    """Each filter's constructor, the config schema and the base preset name the same settings,
    and the constructors have no defaults: no behaviour hides outside the resolved config."""
    import inspect
    import json

    from slimpipe.config import load_preset
    from slimpipe.schemas import CONFIG_SCHEMA_PATH
    from slimpipe.stages.filters import FILTERS

    schema = json.loads(CONFIG_SCHEMA_PATH.read_text())["properties"]["filters"]["properties"]
    preset = load_preset("slimpajama")["filters"]
    assert set(FILTERS) == set(schema) == set(preset)
    for name, cls in FILTERS.items():
        params = dict(inspect.signature(cls.__init__).parameters)
        params.pop("self")
        assert {*params, "enabled"} == set(schema[name]["properties"]) == set(schema[name]["required"]), name
        assert set(preset[name]) == set(schema[name]["properties"]), name
        assert all(p.default is inspect.Parameter.empty for p in params.values()), name
    web = resolve("web")
    assert all(set(web["filters"][name]) == set(preset[name]) for name in FILTERS)
