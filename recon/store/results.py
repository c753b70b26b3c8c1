"""Reading and writing results in PostgreSQL (production) or an embedded SQLite file."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, cast, overload

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from recon import __version__
from recon.config import DEFAULT_SQLITE
from recon.errors import StoreError
from recon.model import AlertState, RunStatus, WindowResult
from recon.store import schema as t

# What a store can raise: SQLAlchemy's errors (a conflict, a missing privilege, a lost
# connection), and the drivers' own from the raw COPY cursor, which SQLAlchemy does
# not wrap. Each one fails the run as a store error (exit 3), never as a breach.
# A run beats each time it stores a window (a big one takes well under a minute); one
# silent this long was killed.
ABANDONED_AFTER = timedelta(hours=1)
STORE_ERRORS = (sa.exc.SQLAlchemyError, psycopg.Error, sqlite3.Error)


def _reason(exc: BaseException) -> str:
    """The driver's message where SQLAlchemy wraps one (it names the table or constraint)."""
    return str(getattr(exc, "orig", None) or exc)


def store_url(results: str | None, base: Path | None = None) -> str:
    """A SQLAlchemy URL: the configured one, a bare path as SQLite, or the default file."""
    if results and "://" in results:
        return results
    path = Path(results or (base or Path.cwd()) / DEFAULT_SQLITE)
    return f"sqlite:///{path}"


# A migration is NNNN_name.sql, run on every database, or NNNN_name.<dialect>.sql, run
# only on that SQLAlchemy dialect ("postgresql", "sqlite"): where one engine needs DDL the
# other cannot run (a hash index), each gets its own file under the same version number.
_MIGRATION = re.compile(r"^(\d{4})_[^.]+(?:\.([a-z]+))?\.sql$")


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, SQL) of every migration in sql/ for `dialect`, in version order.

    A version with files for some dialects only must have one for `dialect` too (it may
    hold only comments), so that no store skips a version silently.
    """
    files = resources.files("recon.store").joinpath("sql")
    if not files.is_dir():
        # recon installed without its SQL (package data): say so, not FileNotFoundError.
        raise StoreError(f"no migrations at {files}: recon is installed without its SQL")
    found: dict[int, dict[str | None, str]] = {}
    for entry in files.iterdir():
        if not (entry.name.endswith(".sql") and entry.name[:4].isdigit()):
            continue
        match = _MIGRATION.match(entry.name)
        if match is None:
            raise StoreError(f"migration {entry.name}: not NNNN_name[.dialect].sql")
        version, only = int(match.group(1)), match.group(2)
        scripts = found.setdefault(version, {})
        if only in scripts or (scripts and (only is None or None in scripts)):
            raise StoreError(
                f"migration {version:04d}: give one portable file or one file per dialect"
            )
        scripts[only] = entry.read_text(encoding="utf-8")
    if not found:
        # Without any, upgrade() would create no tables and the first write would fail,
        # far from the cause.
        raise StoreError(f"no migrations at {files}: recon is installed without its SQL")
    ordered: list[tuple[int, str]] = []
    for version, scripts in sorted(found.items()):
        script = scripts.get(None, scripts.get(dialect))
        if script is None:
            raise StoreError(f"migration {version:04d} has no file for {dialect}")
        ordered.append((version, script))
    return ordered


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _naive_utc(value: datetime) -> datetime:
    # SQLite has no time zones; PostgreSQL gets timestamptz. Both store UTC.
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


class ResultStore:
    """The results database; every method raises StoreError when it cannot be reached."""

    def __init__(self, url: str, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        try:
            self.engine: Engine = _engine(url, read_only)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"results store URL {self._safe_url}: {exc}") from exc
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_sqlite:
            pragmas = _sqlite_reader_pragmas if read_only else _sqlite_pragmas
            sa.event.listen(self.engine, "connect", pragmas)

    def version(self) -> int:
        """The schema version the store is at (0: none yet)."""
        try:
            with self.engine.connect() as conn:
                if not sa.inspect(conn).has_table(t.schema_version.name):
                    return 0
                found = conn.execute(sa.select(sa.func.max(t.schema_version.c.version))).scalar()
        except STORE_ERRORS as exc:
            raise StoreError(f"results store {self._safe_url}: {_reason(exc)}") from exc
        return int(found or 0)

    def require_current(self) -> None:
        """Refuse a store older than this recon (a reader must not migrate it)."""
        latest = migrations(self.engine.dialect.name)[-1][0]
        found = self.version()
        if found < latest:
            raise StoreError(
                f"results store {self._safe_url} is at schema version {found}, this recon "
                f"needs {latest}: run `recon db upgrade --config <pipeline.yaml>` first"
            )

    @property
    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def describe(self) -> str:
        """The store's URL, password hidden."""
        return self._safe_url

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError as exc:
            text = str(exc)  # PostgreSQL names the index, SQLite its columns
            if "recon_windows_one_latest" not in text and "failed: recon_windows." not in text:
                raise StoreError(f"results store {self._safe_url}: {_reason(exc)}") from exc
            raise StoreError(
                f"results store {self._safe_url}: another run stored the same window at the "
                "same time; this run's result of it was not stored (re-run it to restate)"
            ) from exc
        except STORE_ERRORS as exc:
            raise StoreError(f"results store {self._safe_url}: {_reason(exc)}") from exc

    def upgrade(self, target: int | None = None) -> int:
        """Apply the migrations not applied yet, up to version `target` (default: all).

        Returns the schema version the store is at.
        """
        with self._begin() as conn:
            t.schema_version.create(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(t.schema_version.c.version))).scalar()
            current = current or 0
            for version, script in migrations(self.engine.dialect.name):
                if version <= current or (target is not None and version > target):
                    continue
                for statement in _statements(script):
                    conn.exec_driver_sql(statement)
                conn.execute(
                    t.schema_version.insert().values(
                        version=version, applied_at=_naive_utc(datetime.now(UTC))
                    )
                )
                current = version
        return current

    def start_run(self, pipeline: str, start: datetime, end: datetime, digest: str) -> str:
        """Record the start of a run; returns its id.

        Runs of the pipeline still `running` whose heartbeat (or start) is older than
        ABANDONED_AFTER died without a word (killed): they are marked `abandoned`.
        """
        run_id = str(uuid.uuid4())
        now = _naive_utc(datetime.now(UTC))
        r = t.runs.c
        stale = _naive_utc(datetime.now(UTC) - ABANDONED_AFTER)
        beats = "heartbeat_at" in r  # a store still at version 5 or older has none
        with self._begin() as conn:
            if beats:
                conn.execute(
                    t.runs.update()
                    .where(
                        (r.pipeline == pipeline)
                        & (r.status == RunStatus.RUNNING)
                        & (sa.func.coalesce(r.heartbeat_at, r.started_at) < stale)
                    )
                    .values(status=RunStatus.ABANDONED, finished_at=now)
                )
            conn.execute(
                t.runs.insert().values(
                    run_id=run_id,
                    pipeline=pipeline,
                    range_start=_naive_utc(start),
                    range_end=_naive_utc(end),
                    started_at=now,
                    **({"heartbeat_at": now} if beats else {}),
                    status=RunStatus.RUNNING,
                    config_digest=digest,
                    recon_version=__version__,
                )
            )
        return run_id

    def runs(self, pipeline: str) -> pd.DataFrame:
        """The pipeline's runs, newest first.

        A `running` one without a heartbeat for ABANDONED_AFTER reads `abandoned`.
        """
        frame = self._frame(
            sa.select(t.runs)
            .where(t.runs.c.pipeline == pipeline)
            .order_by(t.runs.c.started_at.desc())
        )
        if not frame.empty:
            beat = frame["heartbeat_at"].fillna(frame["started_at"])
            gone = (frame["status"] == RunStatus.RUNNING) & (
                beat < datetime.now(UTC) - ABANDONED_AFTER
            )
            frame.loc[gone, "status"] = RunStatus.ABANDONED.value
        return frame

    def finish_run(self, run_id: str, status: RunStatus, data_docs: Path | None = None) -> None:
        """Record how a run ended, and where its Data Docs are (if it built them)."""
        docs = {"data_docs": str(data_docs)} if data_docs is not None else {}
        with self._begin() as conn:
            conn.execute(
                t.runs.update()
                .where(t.runs.c.run_id == run_id)
                .values(status=status, finished_at=_naive_utc(datetime.now(UTC)), **docs)
            )

    def mark_failed(self, run_id: str) -> None:
        """Mark a run that died as failed, if the store can still be written.

        Called while another error propagates: a store that cannot be reached now
        cannot record it either, and that first error is the one reported.
        """
        try:
            self.finish_run(run_id, RunStatus.FAILED)
        except StoreError:
            return

    def save_window(self, result: WindowResult, thresholds: dict[str, Any]) -> str:
        """Store one window's result in one transaction, superseding the previous one.

        Superseded are the pipeline's latest results of every window that overlaps this
        one, whatever its size: after a change of `window.size` the newest results
        cover each instant once (the older ones stay in the history).
        """
        window_id = str(uuid.uuid4())
        w = t.windows.c
        overlapping = (
            (w.pipeline == result.pipeline)
            & (w.window_start < _naive_utc(result.window.end))
            & (w.window_end > _naive_utc(result.window.start))
        )
        with self._begin() as conn:
            conn.execute(
                t.windows.update().where(overlapping & w.is_latest).values(is_latest=False)
            )
            conn.execute(
                t.windows.insert().values(
                    window_id=window_id,
                    run_id=result.run_id,
                    pipeline=result.pipeline,
                    window_start=_naive_utc(result.window.start),
                    window_end=_naive_utc(result.window.end),
                    status=result.status,
                    events=result.events,
                    error=result.error,
                    computed_at=_naive_utc(datetime.now(UTC)),
                    is_latest=True,
                    # A store still at version 4 or older has no notes yet: upgrade() adds them.
                    **({"notes": json.dumps(result.notes)} if "notes" in t.windows.c else {}),
                )
            )
            if result.error is None:
                self._save_metrics(conn, window_id, result, thresholds)
            if result.run_id is not None and "heartbeat_at" in t.runs.c:  # the run is alive
                conn.execute(
                    t.runs.update()
                    .where(t.runs.c.run_id == result.run_id)
                    .values(heartbeat_at=_naive_utc(datetime.now(UTC)))
                )
        return window_id

    def _save_metrics(
        self, conn: Connection, window_id: str, result: WindowResult, thresholds: dict[str, Any]
    ) -> None:
        rows = []
        assert result.end_to_end is not None
        for position, m in enumerate([*result.stages, result.end_to_end]):
            th = thresholds.get(m.stage)
            rows.append(
                {
                    "window_id": window_id,
                    "position": position,
                    "stage": m.stage,
                    **{c: getattr(m, c) for c in t.COUNTER_COLUMNS},
                    "loss_rate": m.loss_rate,
                    **{f"latency_{k}_ms": v for k, v in m.latency_ms.items()},
                    "threshold_loss_rate": th.loss_rate if th else None,
                    "threshold_max_lost": th.max_lost if th else None,
                    "breach": m.breach,
                }
            )
        conn.execute(t.stage_metrics.insert(), rows)
        if result.expectations:
            conn.execute(
                t.expectation_results.insert(),
                [
                    {
                        "window_id": window_id,
                        "stage": e.stage,
                        "expectation": e.expectation,
                        "column_name": e.column,
                        "threshold": e.threshold,
                        "observed": e.observed,
                        "success": e.success,
                        "name": e.name,
                    }
                    for e in result.expectations
                ],
            )
        errors = [
            {"window_id": window_id, "stage": stage, "error": text, "events": n}
            for stage, by_error in result.dead_letter_errors.items()
            for text, n in by_error.items()
        ]
        if errors:
            conn.execute(t.dead_letter_errors.insert(), errors)
        if result.missing is not None and result.missing.num_rows:
            self._save_missing(conn, window_id, result.missing)
        if result.schema_ids:
            conn.execute(
                t.window_schema_ids.insert(),
                [
                    {
                        "window_id": window_id,
                        **dataclasses.asdict(u),
                        "first_time": None if u.first_time is None else _naive_utc(u.first_time),
                        "last_time": None if u.last_time is None else _naive_utc(u.last_time),
                    }
                    for u in result.schema_ids
                ],
            )

    def _save_missing(self, conn: Connection, window_id: str, missing: pa.Table) -> None:
        table = missing.select(
            [
                "stage",
                "event_id",
                "outcome",
                "origin_time",
                "last_stage",
                "last_seen_at",
                "last_location",
            ]
        )
        if self.is_sqlite:
            # Arrow formats the times as SQLAlchemy's SQLite DateTime stores them ("%S" keeps
            # the microseconds); the driver's executemany takes plain tuples.
            columns = [
                pc.strftime(table[c], "%Y-%m-%d %H:%M:%S")
                if pa.types.is_timestamp(table[c].type)
                else table[c]
                for c in table.column_names
            ]
            rows = list(
                zip([window_id] * table.num_rows, *(c.to_pylist() for c in columns), strict=True)
            )
            names = ", ".join(table.column_names)
            marks = ", ".join("?" * (table.num_columns + 1))
            conn.exec_driver_sql(
                f"INSERT INTO recon_missing_events (window_id, {names}) VALUES ({marks})", rows
            )
            return
        # PostgreSQL: one COPY inside the window's transaction; Arrow writes the CSV,
        # 100 k rows at a time (a whole breached 5 M-event window would be ~450 MB, and
        # its window_id column alone 54 MB).
        # Times go as UTC wall-clock read in UTC: Arrow formats a zoned timestamp ~25x
        # slower than a naive one (151 k missing events: 0.31 s of CSV, now 0.02 s).
        naive = pa.schema(
            [
                pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
                for f in table.schema
            ]
        )
        conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")  # this transaction only
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        copied = ", ".join(["window_id", *table.column_names])
        with cursor.copy(f"COPY recon_missing_events ({copied}) FROM STDIN (FORMAT csv)") as copy:
            for batch in table.to_batches(max_chunksize=100_000):
                batch = batch.cast(naive).add_column(
                    0, "window_id", pa.repeat(window_id, batch.num_rows)
                )
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, pacsv.WriteOptions(include_header=False))
                copy.write(buffer.getbuffer())

    def missing_event(self, event_id: str) -> tuple[datetime, datetime] | None:
        """The window (start, end) of the latest stored result that lists `event_id` missing."""
        me, w = t.missing_events.c, t.windows.c
        with self._begin() as conn:
            row = conn.execute(
                sa.select(w.window_start, w.window_end)
                .join_from(t.missing_events, t.windows, me.window_id == w.window_id)
                .where((me.event_id == event_id) & w.is_latest)
                .order_by(w.computed_at.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return _aware(row[0]), _aware(row[1])

    # -- alert state -----------------------------------------------------------------

    def alert_state(self, pipeline: str, stage: str, route: str) -> AlertState:
        """What `route` was last told about (pipeline, stage).

        A route without a row of its own takes the state recon kept before delivery
        was tracked per route (version 2), so an upgrade does not page twice.
        """
        d, a = t.alert_delivery.c, t.alert_state.c
        with self._begin() as conn:
            row = conn.execute(
                sa.select(d.firing, d.last_notified_at).where(
                    (d.pipeline == pipeline) & (d.stage == stage) & (d.route == route)
                )
            ).first()
            if row is None:
                row = conn.execute(
                    sa.select(a.firing, a.last_notified_at).where(
                        (a.pipeline == pipeline) & (a.stage == stage)
                    )
                ).first()
        if row is None:
            return AlertState()
        return AlertState(bool(row.firing), _aware(row.last_notified_at))

    def save_alert_state(
        self,
        pipeline: str,
        stage: str,
        route: str,
        firing: bool,
        notified_at: datetime,
        window_id: str | None,
    ) -> None:
        """Record a notice delivered to `route` (one transaction)."""
        d = t.alert_delivery.c
        key = (d.pipeline == pipeline) & (d.stage == stage) & (d.route == route)
        with self._begin() as conn:
            old = conn.execute(sa.select(d.firing, d.opened_at).where(key)).first()
            conn.execute(t.alert_delivery.delete().where(key))
            opened = old.opened_at if old is not None and old.firing and firing else None
            conn.execute(
                t.alert_delivery.insert().values(
                    pipeline=pipeline,
                    stage=stage,
                    route=route,
                    firing=firing,
                    opened_at=opened or (_naive_utc(notified_at) if firing else None),
                    last_notified_at=_naive_utc(notified_at),
                    resolved_at=None if firing else _naive_utc(notified_at),
                    last_window_id=window_id,
                )
            )

    def last_error(self, pipeline: str) -> datetime | None:
        """When the pipeline's last run that could not read a source (or store) finished."""
        r = t.runs.c
        with self._begin() as conn:
            value = conn.execute(
                sa.select(sa.func.max(r.finished_at)).where(
                    (r.pipeline == pipeline) & (r.status == RunStatus.ERROR)
                )
            ).scalar()
        return _aware(value)

    def last_success(self, pipeline: str) -> datetime | None:
        """When the pipeline's last run that computed its windows finished."""
        r = t.runs.c
        with self._begin() as conn:
            value = conn.execute(
                sa.select(sa.func.max(r.finished_at)).where(
                    (r.pipeline == pipeline)
                    & (r.status != RunStatus.ERROR)
                    & (r.status != RunStatus.RUNNING)
                )
            ).scalar()
        return _aware(value)

    # -- reading -------------------------------------------------------------------------

    def _of_window(self, query: sa.Select[Any], window_id: str, *order: Any) -> pd.DataFrame:
        """`query`'s rows of one stored window (its table has a window_id), in `order`."""
        table = query.get_final_froms()[0]
        return self._frame(query.where(table.c.window_id == window_id).order_by(*order))

    def _frame(self, query: sa.Select[Any]) -> pd.DataFrame:
        try:
            with self.engine.connect() as conn:
                result = conn.execute(query)
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        except STORE_ERRORS as exc:
            raise StoreError(f"results store {self._safe_url}: {_reason(exc)}") from exc
        for column in frame.columns:
            if column.endswith(("_start", "_end", "_at", "_time")):
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def windows(self, pipeline: str | None = None, latest: bool = True) -> pd.DataFrame:
        """Window results (the latest per window, or the whole history)."""
        q = sa.select(t.windows).order_by(t.windows.c.window_start, t.windows.c.computed_at)
        if latest:
            q = q.where(t.windows.c.is_latest)
        if pipeline:
            q = q.where(t.windows.c.pipeline == pipeline)
        return self._frame(q)

    def stage_metrics(
        self,
        pipeline: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pd.DataFrame:
        """Latest per-stage metrics, one row per window and stage, in pipeline order."""
        w, m = t.windows.c, t.stage_metrics.c
        q = (
            sa.select(w.pipeline, w.window_start, w.window_end, w.status, w.run_id, t.stage_metrics)
            .join_from(t.stage_metrics, t.windows, m.window_id == w.window_id)
            .where(w.is_latest)
            .order_by(w.window_start, m.position)
        )
        if pipeline:
            q = q.where(w.pipeline == pipeline)
        if start:
            q = q.where(w.window_start >= _naive_utc(start))
        if end:
            q = q.where(w.window_start < _naive_utc(end))
        return self._frame(q)

    def window(self, window_id: str) -> dict[str, Any] | None:
        """One stored window row."""
        frame = self._frame(sa.select(t.windows).where(t.windows.c.window_id == window_id))
        # The frame's columns are the query's column names: str.
        return None if frame.empty else cast(dict[str, Any], frame.iloc[0].to_dict())

    def notes(self, window_id: str) -> list[str]:
        """The notes stored with one window (none for windows stored before version 5)."""
        found = self.window(window_id)
        text = found.get("notes") if found else None
        return list(json.loads(text)) if isinstance(text, str) and text else []

    def schema_ids(self, window_id: str) -> pd.DataFrame:
        """The schema IDs of one stored window's Kafka stages (model.SchemaIdUse)."""
        s = t.window_schema_ids.c
        return self._of_window(sa.select(t.window_schema_ids), window_id, s.stage, s.schema_id)

    def schema_ids_before(self, pipeline: str, before: datetime) -> dict[tuple[str, str], set[int]]:
        """(stage, topic) -> schema IDs with messages in the latest windows before `before`.

        Windows that start before it: with windows stored in order, every earlier one.
        """
        s, w = t.window_schema_ids.c, t.windows.c
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(s.stage, s.topic, s.schema_id)
                .distinct()
                .join_from(t.window_schema_ids, t.windows, s.window_id == w.window_id)
                .where(
                    w.is_latest
                    & (w.pipeline == pipeline)
                    & (w.window_start < _naive_utc(before))
                    & (s.messages > 0)
                )
            ).fetchall()
        known: dict[tuple[str, str], set[int]] = {}
        for stage, topic, sid in rows:
            known.setdefault((stage, topic), set()).add(int(sid))
        return known

    def window_metrics(self, window_id: str) -> pd.DataFrame:
        """The per-stage metrics of one stored window, in pipeline order."""
        return self._of_window(sa.select(t.stage_metrics), window_id, t.stage_metrics.c.position)

    def expectations(self, window_id: str) -> pd.DataFrame:
        """The expectation results of one stored window."""
        e = t.expectation_results.c
        return self._of_window(sa.select(t.expectation_results), window_id, e.stage, e.column_name)

    def dead_letter_errors(self, window_id: str) -> pd.DataFrame:
        """One stored window's dead-lettered events per stage and error, most first."""
        d = t.dead_letter_errors.c
        query = sa.select(d.stage, d.error, d.events)
        return self._of_window(query, window_id, d.stage, d.events.desc(), d.error)

    def data_docs(self, run_id: str) -> Path | None:
        """The index page of a run's Great Expectations Data Docs, if it built them."""
        found = self._frame(sa.select(t.runs.c.data_docs).where(t.runs.c.run_id == run_id))
        return (
            Path(found["data_docs"].iloc[0]) if len(found) and found["data_docs"].iloc[0] else None
        )

    def history(self, window_id: str) -> pd.DataFrame:
        """Every stored result of the same pipeline and window (restatements), oldest first."""
        w = t.windows.c
        one = (
            sa.select(w.pipeline, w.window_start, w.window_end)
            .where(w.window_id == window_id)
            .subquery()
        )
        return self._frame(
            sa.select(t.windows)
            .join(
                one,
                (w.pipeline == one.c.pipeline)
                & (w.window_start == one.c.window_start)
                & (w.window_end == one.c.window_end),
            )
            .order_by(w.computed_at)
        )

    def missing_records(self, event_id: str) -> pd.DataFrame:
        """Where the latest results list `event_id` as missing."""
        me, w = t.missing_events.c, t.windows.c
        return self._frame(
            sa.select(
                w.pipeline,
                w.window_start,
                w.window_id,
                me.stage,
                me.outcome,
                me.origin_time,
                me.last_stage,
                me.last_location,
            )
            .join_from(t.missing_events, t.windows, me.window_id == w.window_id)
            .where((me.event_id == event_id) & w.is_latest)
            .order_by(w.window_start)
        )

    def missing(self, window_id: str, stage: str | None = None) -> pd.DataFrame:
        """The missing events of one stored window."""
        me = t.missing_events.c
        q = (
            sa.select(t.missing_events)
            .where(me.window_id == window_id)
            .order_by(me.stage, me.event_id)
        )
        if stage:
            q = q.where(me.stage == stage)
        return self._frame(q)

    def pipelines(self) -> pd.DataFrame:
        """Every pipeline with a stored result: its latest window's start (dashboard list)."""
        w = t.windows.c
        return self._frame(
            sa.select(w.pipeline, sa.func.max(w.window_start).label("last_start"))
            .where(w.is_latest)
            .group_by(w.pipeline)
            .order_by(w.pipeline)
        )

    def windows_between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Latest results of every pipeline's windows starting in [start, end), errors too."""
        w = t.windows.c
        return self._frame(
            sa.select(t.windows)
            .where(
                w.is_latest
                & (w.window_start >= _naive_utc(start))
                & (w.window_start < _naive_utc(end))
            )
            .order_by(w.pipeline, w.window_start)
        )


def _engine(url: str, read_only: bool) -> Engine:
    """An engine; read-only: SQLite opened with mode=ro, PostgreSQL read-only transactions."""
    if not read_only:
        return sa.create_engine(url, pool_pre_ping=True)
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        if not path.is_file():
            raise StoreError(f"results store {path}: no such file")
        target = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(target, uri=True, check_same_thread=False),
        )
    options = {"options": "-c default_transaction_read_only=on"}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=options)


def _sqlite_reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=30000")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # A rollback journal, not WAL: a read-only reader (the dashboard) of a WAL database
    # leaves its -wal and -shm files behind. Readers wait out a write instead.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=DELETE")
    cursor.close()


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
