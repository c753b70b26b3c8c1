"""Private instances of the project's servers for fault tests: killed, stopped, restarted.

Each instance is started by the project's own `scripts/services.sh`, on ports and in a
state directory of its own, so that a fault never touches the shared servers (5432,
9092) that every other test uses. What the script offers, and how it is used here:

- `kafka-up` / `kafka-down` act on the Kafka of RECON_SERVICES_DIR only (its pid file).
  `kafka-up` wipes the broker's data directory, so a broker that died is started again
  by `Kafka.restart`, which runs the script's own java command on the data it had (a
  crashed broker recovers its logs): the planted topics and committed offsets survive.
- `up` starts PostgreSQL (initdb once, then `pg_ctl start`, which also recovers after a
  crash) and then Kafka. A PostgreSQL-only instance passes its own PostgreSQL port as
  RECON_KAFKA_PORT: by the time the script looks, that port is listening, so the script
  says "Kafka already listening" and starts no broker.
- `down` stops the instance's Kafka (none here: no pid file in its directory) and then
  its PostgreSQL with `pg_ctl -m fast stop`.

RECON_SERVICES_DIR is always set, to a directory under /var/tmp made for the module (the
script's default is the shared servers' directory): `_services` refuses anything else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services.sh"
SHARED_STATE = Path(os.environ.get("RECON_SHARED_SERVICES_DIR", "/var/tmp/recon-services"))
SHARED_PORTS = frozenset({5432, 9092, 9093})
PREFIX = "recon-faults-"


class ServiceError(RuntimeError):
    """A private server did not start or stop; the message holds the script's output."""


def free_port() -> int:
    """A loopback port nothing listens on now (never one of the shared servers')."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `check` every 50 ms until it holds; ServiceError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not within {timeout_s:g}s")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (init reaps those a bit later)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends and workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def make_base() -> Path:
    """A fresh state directory for one module's servers (postgres must traverse it)."""
    base = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    base.chmod(0o755)
    return base


def remove_base(base: Path) -> None:
    """Remove a directory made by `make_base` (and nothing else)."""
    if base.parent == Path("/var/tmp") and base.name.startswith(PREFIX):
        shutil.rmtree(base, ignore_errors=True)


def _services(action: str, env: dict[str, str], timeout_s: float = 180) -> str:
    """Run `scripts/services.sh ACTION` for one private instance; its output, or raise."""
    state = Path(env["RECON_SERVICES_DIR"]).resolve()
    if state == SHARED_STATE.resolve() or not state.parent.name.startswith(PREFIX):
        raise ServiceError(f"refusing to run services.sh {action} on {state}")
    ports = {int(env[k]) for k in env if k.startswith("RECON_") and k.endswith("_PORT")}
    if ports & SHARED_PORTS:
        raise ServiceError(f"refusing to run services.sh {action} on ports {sorted(ports)}")
    with tempfile.TemporaryFile() as out:  # not a pipe: the servers it starts inherit it
        done = subprocess.run(
            ["bash", str(SCRIPT), action],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
        out.seek(0)
        text = out.read().decode(errors="replace")
    if done.returncode != 0:
        raise ServiceError(f"services.sh {action} ({env}) exited {done.returncode}:\n{text}")
    return text


@dataclass
class Postgres:
    """A private PostgreSQL (role and database `recon`), managed by services.sh."""

    state: Path
    port: int

    @property
    def url(self) -> str:
        """The SQLAlchemy URL recon's configs take."""
        return f"postgresql+psycopg://recon@127.0.0.1:{self.port}/recon"

    def env(self) -> dict[str, str]:
        """The script's settings for this instance (RECON_KAFKA_PORT: see the module doc)."""
        port = str(self.port)
        return {
            "RECON_SERVICES_DIR": str(self.state),
            "RECON_PG_PORT": port,
            "RECON_KAFKA_PORT": port,
            "RECON_KAFKA_CONTROLLER_PORT": port,
        }

    def up(self) -> None:
        """Start it (after a stop or a crash: pg_ctl start recovers); no-op when it is up."""
        _services("up", self.env())
        wait_for(lambda: port_open(self.port), 30, f"PostgreSQL on {self.port}")

    def stop(self) -> None:
        """A clean shutdown (`services.sh down`: pg_ctl -m fast stop)."""
        _services("down", self.env())
        wait_for(lambda: not port_open(self.port), 30, f"PostgreSQL on {self.port} stopping")

    def postmaster(self) -> int | None:
        """The postmaster's pid, from its lock file (None: not running)."""
        try:
            pid = int((self.state / "pg" / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process it forked: a crash of the server."""
        pid = self.postmaster()
        if pid is None:
            raise ServiceError(f"PostgreSQL on {self.port} is not running")
        workers = children(pid)
        os.kill(pid, signal.SIGKILL)  # first: it cannot start new workers any more
        for child in workers:
            with contextlib.suppress(ProcessLookupError):  # ended by itself meanwhile
                os.kill(child, signal.SIGKILL)
        for p in workers:
            wait_for(lambda p=p: not alive(p), 30, f"pid {p} dying")
        # Reaped, not only dead: a new postmaster refuses to start while the pid in the
        # lock file exists, and a zombie does (init reaps it a second or so later).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, f"postmaster {pid} reaped")
        wait_for(lambda: not port_open(self.port), 30, f"PostgreSQL on {self.port} dying")

    def down(self) -> None:
        """Stop it whatever its state (teardown)."""
        pid = self.postmaster()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        _services("down", self.env())


def _kafka_version() -> str:
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    found = re.search(r"<kafka.version>(.*)</kafka.version>", pom)
    if found is None:
        raise ServiceError("no <kafka.version> in scripts/kafka/pom.xml")
    return found.group(1)


@dataclass
class Kafka:
    """A private single-node KRaft Kafka, managed by services.sh (restart: see module doc)."""

    state: Path
    port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers for recon's configs."""
        return f"127.0.0.1:{self.port}"

    @property
    def dir(self) -> Path:
        """The script's directory of this broker: server.properties, data, logs, pid."""
        return self.state / "kafka"

    def env(self) -> dict[str, str]:
        """The script's settings for this instance."""
        return {
            "RECON_SERVICES_DIR": str(self.state),
            "RECON_KAFKA_PORT": str(self.port),
            "RECON_KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }

    def up(self) -> None:
        """Start a broker on a fresh data directory (`services.sh kafka-up`)."""
        _services("kafka-up", self.env())

    def stop(self) -> None:
        """A clean shutdown (`services.sh kafka-down`: SIGTERM, then wait for it)."""
        _services("kafka-down", self.env())
        wait_for(lambda: not port_open(self.port), 30, f"Kafka on {self.port} stopping")

    def pid(self) -> int | None:
        """The broker's pid from the script's pid file (None: not running)."""
        try:
            pid = int((self.dir / "kafka.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if alive(pid) else None

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the broker (SIGSTOP freezes it, SIGCONT thaws it)."""
        pid = self.pid()
        if pid is None:
            raise ServiceError(f"Kafka on {self.port} is not running")
        os.kill(pid, sig)

    def kill(self) -> None:
        """SIGKILL the broker: a crash."""
        pid = self.pid()
        if pid is None:
            raise ServiceError(f"Kafka on {self.port} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 30, f"Kafka pid {pid} dying")
        wait_for(lambda: not port_open(self.port), 30, f"Kafka on {self.port} dying")

    def restart(self) -> None:
        """Start the broker again on the data it has: the script's java command, detached.

        `services.sh kafka-up` would format a fresh data directory (the planted topics
        gone); this runs the same `java ... kafka.Kafka server.properties` line as the
        script, with the same jars, options and pid file, and no format.
        """
        if self.pid() is not None:
            raise ServiceError(f"Kafka on {self.port} is still running")
        cache = Path(os.environ.get("RECON_CACHE_DIR", Path.home() / ".cache" / "recon"))
        jars = cache / f"kafka-{_kafka_version()}" / "jars"
        java = [
            "java",
            "-Xms512m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ROOT / 'scripts' / 'kafka' / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{jars}/*",
            "kafka.Kafka",
            str(self.dir / "server.properties"),
        ]
        # As the script does: nohup in the background of a shell that exits, so that the
        # broker is init's child (reaped when it dies), its pid in the same file.
        line = " ".join(f"'{a}'" for a in java)
        subprocess.run(
            [
                "bash",
                "-c",
                f'nohup {line} >>"$1/kafka.out" 2>&1 & echo $! >"$1/kafka.pid"',
                "-",
                self.dir,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=30,
        )
        wait_for(lambda: port_open(self.port), 120, f"Kafka restarting on {self.port}")

    def ready(
        self, highs: dict[str, dict[int, int]], committed: dict[str, tuple[str, dict[int, int]]]
    ) -> None:
        """Wait until the broker serves each topic's planted high watermarks and each group's
        committed offsets: {topic: {partition: high}}, {group: (topic, {partition: offset})}.

        A broker that just (re)started accepts connections before it has loaded its logs
        and its group coordinator.
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        def serving() -> bool:
            for group, (topic, offsets) in committed.items():
                if not self.committed(group, topic, offsets):
                    return False
            consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "ready"})
            try:
                for topic, marks in highs.items():
                    for p, high in marks.items():
                        tp = TopicPartition(topic, p)
                        if consumer.get_watermark_offsets(tp, timeout=5, cached=False) != (0, high):
                            return False
            finally:
                consumer.close()
            return True

        def check() -> bool:
            try:
                return serving()
            except KafkaException:
                return False

        wait_for(check, 120, f"Kafka on {self.port} serving {sorted(highs)}")

    def committed(self, group: str, topic: str, offsets: dict[int, int]) -> bool:
        """Whether `group` has exactly `offsets` committed on `topic` ({partition: offset}).

        Read by a consumer of the group that never joins it, not with the admin API:
        librdkafka 2.16's ListConsumerGroupOffsets crashes the process (SIGSEGV) when the
        coordinator answers NOT_COORDINATOR, as a starting broker does.
        """
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            got = consumer.committed([TopicPartition(topic, p) for p in offsets], timeout=5)
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in got if tp.error is None} == offsets

    def down(self) -> None:
        """Stop it whatever its state (teardown): thaw a frozen broker, then kafka-down."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        _services("kafka-down", self.env())
