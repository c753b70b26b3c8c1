"""The shipped docs cannot drift from the code: every configuration key is documented."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from recon.config import (
    AlertsConfig,
    MetricsConfig,
    PipelineConfig,
    Route,
    ShardsConfig,
    WindowConfig,
)
from recon.sources import KINDS
from recon.sources.base import SourceConfig, Thresholds

DOCS = Path(__file__).parent.parent / "docs"


def _section(text: str, heading: str) -> str:
    """The text under `heading` up to the next heading."""
    match = re.search(rf"^#+ {re.escape(heading)}\s*$", text, re.M)
    assert match, f"docs/configuration.md has no section {heading!r}"
    rest = text[match.end() :]
    end = re.search(r"^#+ ", rest, re.M)
    return rest[: end.start()] if end else rest


def _keys(section: str) -> set[str]:
    """The keys of a section's table: the first cell of each row, in backquotes."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


def _fields(model: type[BaseModel], without: type[BaseModel] | None = None) -> set[str]:
    inherited = set(without.model_fields) if without else set()
    return set(model.model_fields) - inherited


def test_every_configuration_key_is_documented_and_nothing_else() -> None:
    text = (DOCS / "configuration.md").read_text()
    sections = {
        "Top level": _fields(PipelineConfig),
        "`window`": _fields(WindowConfig),
        "`thresholds`": _fields(Thresholds),
        "Every stage and dead-letter sink": _fields(SourceConfig),
        "`alerts`": _fields(AlertsConfig),
        "`alerts.routes[]`": _fields(Route),
        "`metrics`": _fields(MetricsConfig),
        "`shards`": _fields(ShardsConfig),
    }
    for kind in KINDS:  # the built-in kinds (a test registers one of its own)
        heading = next(
            h for h in re.findall(r"^### (.+)$", text, re.M) if f"`source: {kind.name}`" in h
        )
        # `id` has a kind's own default: documented again under the kind.
        sections[heading] = _fields(kind.config, SourceConfig) - {"source"} | (
            {"id"} if "`id`" in _section(text, heading) else set()
        )
    for heading, fields in sections.items():
        assert _keys(_section(text, heading)) == fields, heading


def test_the_readme_links_the_docs() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    for page in ("docs/semantics.md", "docs/configuration.md", "docs/operations.md"):
        assert page in readme and (DOCS.parent / page).exists()
