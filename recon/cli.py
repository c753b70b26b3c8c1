"""The `recon` command line. Errors are caught here, once, and become exit codes."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from recon.errors import ConfigError, ReconError
from recon.logs import configure as configure_logging
from recon.timeutil import iso, parse_instant

if TYPE_CHECKING:
    # Imported where used: `recon check` must not pay for DuckDB, GX or SQLAlchemy's ORM.
    from recon.config import PipelineConfig
    from recon.engine.runner import RunReport
    from recon.store import ResultStore


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Version(argparse.Action):
    """`--version`: the installed distribution's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print recon's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        # Imported here: importlib.metadata scans sys.path, which no other command needs.
        from importlib.metadata import PackageNotFoundError, version

        import recon

        try:
            found = version("recon")
        except PackageNotFoundError:  # run from a source tree that is not installed
            found = recon.__version__
        print(f"recon {found}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as exit code 2 through our error path."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options (kept in one place; a test checks them against the config model)."""
    parser = _Parser(prog="recon", description="Per-stage, per-window event loss reconciliation")
    parser.add_argument("--version", action=_Version)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object a line"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="reconcile every window of [start, end)")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--start", required=True, type=_instant, help="ISO 8601; no offset = UTC")
    run.add_argument("--end", required=True, type=_instant)
    run.add_argument("--json", type=Path, help="also write the JSON report to this file")
    run.add_argument("--jobs", type=int, default=1, help="windows reconciled in parallel")
    run.add_argument("--no-store", action="store_true", help="do not write the results store")
    run.add_argument(
        "--timings", type=Path, help="write wall time and seconds per phase (JSON) to this file"
    )
    run.add_argument(
        "--quiet", action="store_true", help="print only the summary (no tables, no progress)"
    )
    run.add_argument(
        "--now",
        type=_instant,
        help="judge settle and stall as of this time (default: the clock), to reproduce a verdict",
    )

    exp_ = sub.add_parser("explain", help="trace one event across the stages")
    exp_.add_argument("event_id")
    exp_.add_argument("--config", required=True, type=Path)
    exp_.add_argument(
        "--around",
        type=_instant,
        help="a time in its window (default: from the results store, for a missing event)",
    )
    exp_.add_argument("--json", type=Path)

    dash = sub.add_parser("dashboard", help="read-only web dashboard over the results store")
    where_ = dash.add_mutually_exclusive_group(required=True)
    where_.add_argument("--config", type=Path, help="also enables live event traces")
    where_.add_argument("--url", help="results store URL")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8765)
    dash.add_argument(
        "--token",
        default=os.environ.get("RECON_DASHBOARD_TOKEN"),
        help="required for a non-loopback --host (or RECON_DASHBOARD_TOKEN)",
    )

    chk = sub.add_parser("check", help="intraday early warning from counts only (no IDs)")
    chk.add_argument("--config", required=True, type=Path)
    chk.add_argument(
        "--hours", type=float, default=3, help="how far back from --end (whole windows)"
    )
    chk.add_argument("--end", type=_instant, help="default: now (down to a window's start)")
    chk.add_argument(
        "--max-drop", type=float, help="flag a hop whose drop is above this (default 0.05)"
    )
    chk.add_argument("--json", type=Path)

    db = sub.add_parser("db", help="results store maintenance")
    db.add_argument("action", choices=["upgrade"])
    where = db.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path)
    where.add_argument("--url")

    exp = sub.add_parser("expectations", help="show or regenerate the pipeline's GX suite")
    exp.add_argument("--config", required=True, type=Path)
    exp.add_argument("--write", action="store_true")

    demo = sub.add_parser("demo", help="plant the 30%% incident into the servers and reconcile it")
    demo.add_argument("--workdir", type=Path, default=Path("demo-work"))
    demo.add_argument(
        "--name",
        default="demo_payments",
        help="the demo pipeline's name: its table and topics; never replaces another's",
    )
    demo.add_argument("--events-per-hour", type=int, default=20_000)
    demo.add_argument(
        "--pg-url",
        default=os.environ.get("RECON_PG_URL", "postgresql+psycopg://recon@127.0.0.1:5432/recon"),
    )
    demo.add_argument("--bootstrap", default=os.environ.get("RECON_KAFKA", "127.0.0.1:9092"))
    demo.add_argument(
        "--schema-registry",
        help="a Confluent-compatible schema registry's URL (default: $RECON_SCHEMA_REGISTRY, "
        "else Apicurio's as scripts/services.sh starts it)",
    )
    return parser


def _store(config_path: Path, results: str | None) -> ResultStore:
    from recon.store import ResultStore, store_url

    return ResultStore(store_url(results, config_path.resolve().parent))


def cmd_run(args: argparse.Namespace) -> int:
    """`recon run`: reconcile, print a table per window and a summary, optionally JSON."""
    from recon.config import load_config
    from recon.engine.heap import tune_process
    from recon.engine.runner import run
    from recon.report import run_summary, window_table

    tune_process()  # before any thread allocates
    cfg = load_config(args.config)
    if args.end <= args.start:
        raise ConfigError("--end must be after --start")
    store = None if args.no_store else _store(args.config, cfg.results)
    with _progress(cfg, args) as progress:
        report = run(
            cfg,
            args.start,
            args.end,
            store,
            jobs=args.jobs,
            now=args.now,
            keep_missing=False,
            progress=progress,
        )
    colour = sys.stdout.isatty()
    if not args.quiet:
        for window in report.windows:
            sys.stdout.write(window_table(window, colour) + "\n")
    where = []
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        tmp.replace(args.json)
        where.append(f"JSON: {args.json}")
    if args.timings:
        timings = {"jobs": args.jobs, "windows": len(report.windows), **report.timings()}
        args.timings.write_text(json.dumps(timings, indent=2) + "\n")
    if store is not None:
        where.append(f"results: {store.describe()} (run {report.run_id})")
    if report.data_docs is not None:
        where.append(f"Great Expectations Data Docs: {report.data_docs}")
    sys.stdout.write(run_summary(report.windows, report.wall_s, where))
    if store is not None:
        after_run(cfg, report, store, args.now)
    return report.exit_code


@contextmanager
def _progress(cfg: PipelineConfig, args: argparse.Namespace) -> Iterator[Callable[[Any], None]]:
    """A progress bar on a terminal (windows, events/s, ETA); else a log line per window."""
    log = logging.getLogger("recon.run")
    pipeline = cfg.pipeline
    total = len(cfg.window.cut(args.start, args.end))
    if args.quiet:
        yield lambda result: None
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        # A terminal that reports no size (a pty without one) still gets a bar: tqdm
        # hides bars below a screen height of 0.
        size = shutil.get_terminal_size()
        with tqdm(
            total=total,
            unit="window",
            desc=pipeline,
            file=sys.stderr,
            ncols=size.columns,
            nrows=size.lines,
        ) as bar:
            events = 0

            def tick(result: Any) -> None:
                nonlocal events
                events += result.events or 0
                rate = events / max(bar.format_dict["elapsed"], 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} events/s", refresh=False)
                bar.update(1)

            yield tick
        return

    def line(result: Any) -> None:
        e2e = result.end_to_end
        log.info(
            "window %s %s events=%s lost=%s",
            result.window,
            result.status,
            result.events,
            e2e.lost if e2e is not None else None,
            extra={
                "pipeline": pipeline,
                "window": str(result.window),
                "run_id": result.run_id,
                "status": result.status,
            },
        )

    yield line


def after_run(
    cfg: PipelineConfig, report: RunReport, store: ResultStore, now: datetime | None = None
) -> None:
    """Publish the pipeline's metrics and send the notices its state calls for.

    Both are attempted whatever the other did (a metrics outage must not suppress a
    page); a failure of either raises once both were tried.
    """
    from recon.alerts.dispatch import publish_and_notify

    sent = publish_and_notify(cfg, store, now or datetime.now(UTC), report.run_id)
    for notice in sent:
        logging.getLogger("recon.alerts").info(
            "sent %s for %s", notice.action, notice.dedup_key, extra={"pipeline": cfg.pipeline}
        )


def cmd_explain(args: argparse.Namespace) -> int:
    """`recon explain`: where one event was seen, dead-lettered, or vanished."""
    from recon.config import load_config
    from recon.engine.explain import explain, stored_outcomes, window_of

    cfg = load_config(args.config)
    store = _store(args.config, cfg.results)
    window = window_of(cfg, args.event_id, args.around, store)
    trace = explain(cfg, args.event_id, window)
    assert trace.read_at is not None
    print(f"{trace.summary}   (window {window}; live sources read at {iso(trace.read_at)})")
    stored = stored_outcomes(store, cfg.pipeline, args.event_id, window)
    conflict = trace.disagreement(stored) if stored is not None else None
    if conflict:
        print(f"  warning: {conflict}")
    for s in trace.sightings:
        where = f"dead letter {s.sink} of {s.stage}" if s.sink else s.stage
        error = f"  error: {s.error}" if s.error else ""
        schema = f"  schema id {s.schema_id}" if s.schema_id is not None else ""
        print(f"  {iso(s.time)}  {where:28} {s.location}{schema}{error}")
    if args.json:
        args.json.write_text(json.dumps(trace.as_dict(), indent=2) + "\n")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """`recon dashboard`: serve the read-only dashboard."""
    from recon.config import load_config
    from recon.store import ResultStore, store_url
    from recon.web.app import Dashboard, serve

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        raise ConfigError(f"--host {args.host} is not loopback: give --token")
    cfg = load_config(args.config) if args.config else None
    url = store_url(cfg.results, args.config.resolve().parent) if cfg else args.url
    store = ResultStore(url, read_only=True)  # it only reads: no migration, no lock files
    store.require_current()
    serve(Dashboard(store, cfg, args.token), args.host, args.port)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """`recon check`: count-only drop detection over the last hours; exit 1 when flagged."""
    from recon.config import load_config
    from recon.engine.early_warning import check, check_table, last_hours

    cfg = load_config(args.config)
    start, end = last_hours(cfg, args.end or datetime.now(UTC), args.hours)
    windows = check(cfg, start, end, args.max_drop)
    sys.stdout.write(check_table(windows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"pipeline": cfg.pipeline, "windows": [w.as_dict() for w in windows]}, indent=2
            )
        )
    return 1 if any(w.alarming for w in windows) else 0


def cmd_db(args: argparse.Namespace) -> int:
    """`recon db upgrade`: apply the results-store migrations."""
    from recon.config import load_config
    from recon.store import ResultStore

    if args.url:
        store = ResultStore(args.url)
    else:
        store = _store(args.config, load_config(args.config).results)
    print(f"results store at schema version {store.upgrade()}")
    return 0


def cmd_expectations(args: argparse.Namespace) -> int:
    """`recon expectations`: print (and with --write regenerate) the suite."""
    from recon.checks.expectations import ensure_suite, suite_path
    from recon.config import load_config

    cfg = load_config(args.config)
    spec = ensure_suite(cfg, write=args.write)
    print(f"# {suite_path(cfg)}")
    print(json.dumps(spec, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`recon demo`: the incident, planted into the real servers, then reconciled."""
    from recon.simulate.demo import DEFAULT_REGISTRY, run_demo

    return run_demo(
        args.workdir,
        args.events_per_hour,
        args.pg_url,
        args.bootstrap,
        args.name,
        args.schema_registry or DEFAULT_REGISTRY,
    )


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "explain": cmd_explain,
    "dashboard": cmd_dashboard,
    "db": cmd_db,
    "expectations": cmd_expectations,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `recon` console script."""
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args.log_level, args.log_format)
        return COMMANDS[args.command](args)
    except ReconError as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:  # noqa: BLE001 - reported in full, never as a breach
        # Python's own exit status for an uncaught exception is 1, which to a DAG or an
        # alert means "breach". A failure recon did not foresee is an error (3): no
        # numbers were produced that anyone should trust.
        traceback.print_exc()
        print("recon: error: unexpected failure (traceback above)", file=sys.stderr)
        return ReconError.exit_code


def entry() -> NoReturn:
    """The `recon` command's process: `main`, then exit without a last collection.

    At exit Python would collect and tear down every object the run made (Great
    Expectations alone makes hundreds of thousands): a second or so after the
    work is done and stored (bench/README.md). Frozen, they are left to the OS.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
