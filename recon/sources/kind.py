"""A ledger kind: the config it takes, how it is read, and what else it can do.

Each source module ends with its `KIND`; `recon.sources.REGISTRY` lists them.
The engine asks a kind for a capability, never for its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from recon.model import LedgerRead, Shard, Window
from recon.sources.base import SourceConfig

C = TypeVar("C", bound=SourceConfig)


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One kind of ledger (`source:` in the config)."""

    name: str
    config: type[C]  # its `source` field is Literal[name]
    read: Callable[[C, Window], LedgerRead]
    # Rows per window without reading them (offsets, footers, count(*)), all windows on
    # one connection; None: counting means reading.
    count_many: Callable[[C, list[Window]], list[int]] | None = None
    # Whether the source answers at all, checked once before a run reads anything.
    reachable: Callable[[C], None] | None = None
    # A row is in [a, b) and [b, c) exactly when it is in [a, c): a read may take over
    # the rows of the read before it (engine/carry.py) and read only the rest.
    exact_ranges: bool = False
    # Config keys holding a local path: relative ones are relative to the config file.
    paths: tuple[str, ...] = ()
    # A row's headers by partition and offset (a dead letter's error text, for explain).
    headers_at: Callable[[C, int, int], dict[str, str]] | None = None
    # The same for many rows at once, by (partition, offset) (dead letters' errors per window).
    headers_many: (
        Callable[[C, list[tuple[int, int]]], dict[tuple[int, int], dict[str, str]]] | None
    ) = None
    # Reads a window's rows of one shard's events, or a superset of them (a predicate
    # pushed into the source): `read_ledger` keeps exactly the shard's after it. None:
    # the whole window is read and filtered.
    read_shard: Callable[[C, Window, Shard], LedgerRead] | None = None


# The headers a dead letter's error text is read from, in this order.
ERROR_HEADERS = ("error", "x-error", "exception")


def error_text(headers: dict[str, str]) -> str | None:
    """A dead letter's error: its first non-empty error header, if any.

    A NUL becomes U+FFFD: PostgreSQL's text refuses it, and a stored window must
    never depend on what a producer put in a header.
    """
    text = next((headers[h] for h in ERROR_HEADERS if headers.get(h)), None)
    return None if text is None else text.replace("\x00", "\ufffd")
