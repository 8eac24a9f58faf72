"""docs/configuration.md is generated from the config table; it must match nerve/config.py."""

from __future__ import annotations

from nerve import configdoc
from nerve.config import BROKER_CONFIGS, TOPIC_CONFIGS


def test_configuration_doc_matches_the_config_table() -> None:
    text = configdoc.render()
    current = configdoc.DOC.read_text() if configdoc.DOC.exists() else ""
    assert current == text, (
        f"docs/configuration.md differs from nerve/config.py: run `{configdoc.REGENERATE}` "
        "and commit the result")


def test_every_setting_is_in_the_doc_with_its_default() -> None:
    text = configdoc.render()
    for d in (*BROKER_CONFIGS.values(), *TOPIC_CONFIGS.values()):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{d.name}` |"))
        assert f"| {d.type} | {d.default if d.default not in (None, '') else '-'} |" in row
