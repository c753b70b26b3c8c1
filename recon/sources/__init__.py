"""The source registry: one module per ledger kind, each ending with its `KIND`.

Adding a kind is one module plus one line here (or `config.register_kind` it, as the
tests' own kind does); the engine asks kinds for capabilities, never names.
"""

from __future__ import annotations

from typing import Any

from recon.model import LedgerRead, Shard, Window
from recon.sources import files, kafka, parquet, sharding, sql
from recon.sources.base import SourceConfig
from recon.sources.kind import Kind

KINDS: tuple[Kind[Any], ...] = (sql.KIND, kafka.KIND, parquet.KIND, files.KIND)
REGISTRY: dict[str, Kind[Any]] = {k.name: k for k in KINDS}


def kind_of(cfg: SourceConfig) -> Kind[Any]:
    """The kind of a stage's or dead-letter sink's config."""
    return REGISTRY[cfg.source]


def read_ledger(cfg: SourceConfig, window: Window, shard: Shard | None = None) -> LedgerRead:
    """Read one stage's (or dead-letter sink's) rows for `window` with its kind's reader.

    With a `shard`, only the rows of its events (and its unreadable rows,
    `sharding.keep`), read through the kind's `read_shard` where it has one.
    """
    kind = kind_of(cfg)
    if shard is None or shard.count == 1:
        read: LedgerRead = kind.read(cfg, window)
        return read
    reader = kind.read_shard
    whole: LedgerRead = reader(cfg, window, shard) if reader is not None else kind.read(cfg, window)
    return sharding.keep(whole, shard)


def countable(cfg: SourceConfig) -> bool:
    """Whether the kind counts rows per window without reading them."""
    return kind_of(cfg).count_many is not None


def count_ledger_windows(cfg: SourceConfig, windows: list[Window]) -> list[int]:
    """Rows per window by the kind's cheap count (offsets, footers, count(*)), else a read.

    A kind's count takes every window on one connection or consumer.
    """
    kind = kind_of(cfg)
    if kind.count_many is not None:
        return [int(n) for n in kind.count_many(cfg, windows)]
    return [kind.read(cfg, w).table.num_rows for w in windows]


def check_reachable(sources: list[SourceConfig]) -> None:
    """Check each source whose kind can tell cheaply that it is reachable (`reachable`).

    Once per run, before any window is read: the first that is not raises its SourceError.
    """
    for cfg in sources:
        kind = kind_of(cfg)
        if kind.reachable is not None:
            kind.reachable(cfg)
