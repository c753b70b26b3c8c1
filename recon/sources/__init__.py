"""The source registry: one module per ledger kind, each with `Config`, `read`, `describe`.

Adding a kind is one module plus one line here.
"""

from __future__ import annotations

from types import ModuleType

from recon.model import LedgerRead, Window
from recon.sources import files, kafka, parquet, sql
from recon.sources.base import SourceConfig

REGISTRY: dict[str, ModuleType] = {m.KIND: m for m in (sql, kafka, parquet, files)}


def read_ledger(cfg: SourceConfig, window: Window) -> LedgerRead:
    """Read one stage's (or dead-letter sink's) rows for `window` with its kind's reader."""
    read: LedgerRead = REGISTRY[cfg.source].read(cfg, window)
    return read


def count_ledger_windows(cfg: SourceConfig, windows: list[Window]) -> list[int]:
    """Rows per window by the kind's cheap count (offsets, footers, count(*)), else a read.

    Kinds with `count_many` count every window on one connection or consumer.
    """
    module = REGISTRY[cfg.source]
    if hasattr(module, "count_many"):
        return [int(n) for n in module.count_many(cfg, windows)]
    if hasattr(module, "count"):
        return [int(module.count(cfg, w)) for w in windows]
    return [module.read(cfg, w).table.num_rows for w in windows]


def check_reachable(sources: list[SourceConfig]) -> None:
    """Check each source whose kind can tell cheaply that it is reachable (`reachable`).

    Once per run, before any window is read: the first that is not raises its SourceError.
    """
    for cfg in sources:
        module = REGISTRY[cfg.source]
        if hasattr(module, "reachable"):
            module.reachable(cfg)
