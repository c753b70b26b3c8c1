"""A real Airflow 3 deployment for one test: api-server, scheduler and dag-processor.

LocalExecutor, a fresh PostgreSQL metadata database (created on the running server,
dropped at the end) and a fresh AIRFLOW_HOME. Each component is a process of its own,
in a process group of its own, logging to `<tmp>/<component>.log`; leaving the context
stops them all (SIGTERM, then SIGKILL) and drops the database, also on failure, when
the tail of every log is printed first (pytest shows it with the failure).

Airflow reaches PostgreSQL through psycopg 3 (what recon installs): SQLAlchemy 2 takes
`postgresql+psycopg://` for the sync engine and, with an async engine, psycopg's async
mode; the async URL must be given, since Airflow derives `postgresql+asyncpg://` from
the sync one and asyncpg is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).parent.parent
AIRFLOW = Path(sys.executable).parent / "airflow"
COMPONENTS = ("api-server", "scheduler", "dag-processor")
TERMINAL = {"success", "failed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({exc})"


class AirflowStack:
    """Start with `with AirflowStack(tmp, pg_url, variables) as stack:`; see the module doc."""

    def __init__(self, tmp: Path, pg_url: str, env: dict[str, str], parallelism: int = 2) -> None:
        self.tmp = tmp
        self.home = tmp / "airflow"
        self.port = _free_port()
        self.database = f"airflow_{secrets.token_hex(5)}"
        server = make_url(pg_url)
        self._admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
        self.db_conninfo = (
            server.set(drivername="postgresql", database=self.database)
        ).render_as_string(hide_password=False)
        airflow_url = server.set(drivername="postgresql+psycopg", database=self.database)
        sql_url = airflow_url.render_as_string(hide_password=False)
        # Nothing of the caller's own Airflow (AIRFLOW_HOME, a real metadata DB) leaks in.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": sql_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # >= 64 bytes for HS512
            # Only triggered runs: unpausing a DAG would otherwise also start the scheduled
            # run of its latest interval (catchup=False still runs that one).
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A task's supervisor (airflow.sdk.execution_time.supervisor) that reads EOF on all
            # of the task's sockets before the process can be reaped then sleeps in select()
            # with nothing to watch for [workers] min_heartbeat_interval (default 5 s): the
            # executor slot stays taken (and a failed task's end is reported) that much later.
            # Heavy task processes (pyarrow, duckdb, librdkafka threads) hit it often.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        self.home.mkdir(parents=True)
        try:
            with psycopg.connect(self._admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            t = time.monotonic()
            migrate = self.cli("db", "migrate", timeout=300)
            assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
            self.timings["db migrate"] = time.monotonic() - t
            t = time.monotonic()
            self.start()
            self.wait_healthy()
            self.timings["components healthy"] = time.monotonic() - t
            self.wait_parsed("recon_nightly")
            self.timings["recon_nightly parsed"] = time.monotonic() - t
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is not None:
            print(self.tails())
        t = time.monotonic()
        try:
            self.stop()
        finally:
            self.timings["stop"] = time.monotonic() - t
            with psycopg.connect(self._admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def start(self) -> None:
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler", "--skip-serve-logs"],  # logs are read from local files
            "dag-processor": ["dag-processor"],
        }
        for name, args in commands.items():
            with (self.tmp / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen(
                    [str(AIRFLOW), *args],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: workers die with it
                )

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after `grace` s."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # its workers, or itself
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def tails(self) -> str:
        return "\n".join(
            f"----- {name}.log (last lines) -----\n{_tail(self.tmp / f'{name}.log')}"
            for name in ("migrate", *COMPONENTS)
            if (self.tmp / f"{name}.log").exists()
        )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"airflow {name} exited with {proc.returncode}"

    # --- readiness ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def wait_healthy(self, timeout: float = 120) -> dict[str, Any]:
        """The api-server answers and sees the DB, the scheduler's and the dag-processor's
        heartbeats healthy."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                last = self.health()
            except OSError as exc:
                last = exc
            else:
                parts = ("metadatabase", "scheduler", "dag_processor")
                if all(last[p]["status"] == "healthy" for p in parts):
                    return last
            time.sleep(0.3)
        raise AssertionError(f"not healthy after {timeout} s: {last}")

    def wait_parsed(self, dag_id: str, timeout: float = 120) -> None:
        """The dag-processor stored the DAG (and no DAG file failed to import)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self.query("SELECT filename, stacktrace FROM import_error")
            assert errors == [], errors
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", dag_id):
                return
            time.sleep(0.3)
        raise AssertionError(f"{dag_id} not parsed after {timeout} s")

    # --- using it ----------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`airflow ARGS` against this deployment; a migrate's output goes to migrate.log."""
        proc = subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if args[:2] == ("db", "migrate"):
            (self.tmp / "migrate.log").write_text(proc.stdout + proc.stderr)
        return proc

    def cli_json(self, *args: str) -> Any:
        """`airflow ARGS -o json`: its JSON, the last line of stdout (log lines and warnings
        may precede it)."""
        proc = self.cli(*args, "-o", "json")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the metadata database."""
        with psycopg.connect(self.db_conninfo, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        """Poll the run until it is success or failed; its state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            rows = self.query(
                "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id
            )
            if rows and rows[0][0] in TERMINAL:
                return rows[0][0]
            time.sleep(0.5)
        raise AssertionError(f"{run_id} not finished after {timeout} s: {self.task_states(run_id)}")

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances as Airflow recorded them, by task and map index."""
        rows = self.query(
            "SELECT id, task_id, map_index, state, try_number, duration, queued_dttm, "
            "start_date, end_date FROM task_instance WHERE run_id = %s "
            "ORDER BY task_id, map_index",
            run_id,
        )
        keys = ("id", "task_id", "map_index", "state", "try_number", "duration", "queued")
        return [dict(zip((*keys, "start", "end"), row, strict=True)) for row in rows]

    def task_states(self, run_id: str) -> dict[str, list[str]]:
        states: dict[str, list[str]] = {}
        for ti in self.task_instances(run_id):
            states.setdefault(ti["task_id"], []).append(ti["state"])
        return states

    def task_errors(self, dag_id: str, run_id: str) -> list[str]:
        """The error lines of every attempt's task log of the run (JSON lines)."""
        found = []
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        for log in sorted(folder.rglob("attempt=*.log")):
            for line in log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("level") in {"error", "critical"}:
                        where = log.relative_to(folder).as_posix().removesuffix(".log")
                        found.append(
                            f"{where}: {event.get('event')} {event.get('error_detail', '')}"
                        )
        return found

    def workload_seconds(self) -> dict[str, float]:
        """Per task instance id: how long its supervisor ran ("Workload finished" lines of
        the scheduler's log): the executor slot's time, from fork to process reaped."""
        pattern = re.compile(r"Workload finished.*?duration=([\d.]+).*?workload_id=([0-9a-f-]+)")
        text = (self.tmp / "scheduler.log").read_text(errors="replace")
        return {m.group(2): float(m.group(1)) for m in pattern.finditer(text)}
