"""1,200 generated bad configurations: each is exit 2 naming the file and key, or valid.

Mutations of one valid config (every source kind, alerts, metrics): keys deleted, types
swapped, numbers huge, negative, NaN or infinite, unknown keys, duplicate keys, YAML
alias bombs, odd strings, malformed `${...}`. Never a traceback, a hang, or a config
that is wrong and accepted: the mutations that are always wrong must be refused.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from recon.config import load_config
from recon.errors import ConfigError

BASE: dict[str, Any] = {
    "pipeline": "payments",
    "window": {"size": "1h", "grace": "30m", "settle": "2h", "skew": "1m", "stall": "24h"},
    "thresholds": {"loss_rate": 0.0001, "max_lost": 100, "min_events": {"00:00": 10}},
    "results": "results.sqlite",
    "stages": [
        {"name": "webhook", "source": "sql", "url": "postgresql+psycopg://u@h/db",
         "table": "receipts", "id": "event_id", "time": "received_at"},
        {"name": "bus", "source": "kafka", "bootstrap": "127.0.0.1:9092", "topic": "events",
         "id": "json:a.b", "consumer_group": "loader", "timeout_s": 5, "out_of_order": "5m"},
        {"name": "lake", "source": "parquet", "path": "lake", "time": "ingested_at",
         "thresholds": {"loss_rate": 0.01}},
    ],
    "dead_letters": [
        {"name": "dlq", "stage": "lake", "source": "files", "path": "dead/*.jsonl"},
    ],
    "alerts": {"renotify": "4h", "routes": [
        {"kind": "webhook", "url": "https://ops.example/recon", "attempts": 3},
        {"kind": "pagerduty", "routing_key": "rk"},
    ]},
    "metrics": {"textfile": "metrics/recon.prom"},
}  # fmt: skip

# Fields that no value outside their range may pass: (path, kind).
NUMBERS = [
    (("window", "size"), "duration"),
    (("window", "grace"), "duration"),
    (("window", "skew"), "duration"),
    (("window", "stall"), "duration"),
    (("alerts", "renotify"), "duration"),
    (("thresholds", "loss_rate"), "rate"),
    (("stages", 1, "timeout_s"), "seconds"),
    (("alerts", "routes", 0, "attempts"), "count"),
]
REQUIRED = [
    ("pipeline",),
    ("stages",),
    ("stages", 0, "name"),
    ("stages", 0, "source"),
    ("stages", 0, "url"),
    ("stages", 1, "bootstrap"),
    ("stages", 1, "topic"),
    ("stages", 2, "path"),
    ("dead_letters", 0, "stage"),
    ("alerts", "routes", 0, "url"),
    ("alerts", "routes", 1, "routing_key"),
]
ODD = ["", " ", "\x00", "é" * 300, "../../etc/passwd", "${HOME", "a\nb", "' OR 1=1 --", "🙂"]


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [(*at, k), *_paths(v, (*at, k))]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in [(*at, i), *_paths(v, (*at, i))]]
    return []


def _set(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _delete(data: Any, path: tuple) -> None:
    for key in path[:-1]:
        data = data[key]
    del data[path[-1]]


def _mutants(rng: random.Random) -> list[tuple[str, bool, str]]:
    """(kind, must be refused, YAML text) for every mutation."""
    out: list[tuple[str, bool, str]] = []
    leaves = [p for p in _paths(BASE) if not isinstance(_get(BASE, p), dict | list)]

    def dump(data: Any) -> str:
        return yaml.safe_dump(data, allow_unicode=True)

    for path in REQUIRED:
        data = copy.deepcopy(BASE)
        _delete(data, path)
        out.append(("required key deleted", True, dump(data)))
    for path, kind in NUMBERS:
        bad = [-1, -0.5, math.nan, math.inf, -math.inf, 2**70, 1e300]
        if kind == "duration":
            bad += ["-5m", "99999999999d", "1e400s", "5 parsecs", [], {}]
        for value in bad:
            data = copy.deepcopy(BASE)
            _set(data, path, value)
            out.append((f"{kind} out of range", True, dump(data)))
    for _ in range(500):
        data = copy.deepcopy(BASE)
        path = rng.choice(leaves)
        value = rng.choice([[], {}, [1, 2], {"a": 1}, True, None, 0, -7, 1.5, *ODD])
        _set(data, path, value)
        out.append(("type or value swapped", False, dump(data)))
    for _ in range(250):
        data = copy.deepcopy(BASE)
        path = rng.choice(_paths(BASE))
        parent = path[:-1]
        target = _get(data, parent) if parent else data
        if isinstance(target, dict):
            target[f"unknown_{rng.randrange(1000)}"] = 1
            out.append(("unknown key", True, dump(data)))
        else:
            _delete(data, path)
            out.append(("entry deleted", False, dump(data)))
    text = dump(BASE)
    lines = text.splitlines()
    for _ in range(150):
        i = rng.randrange(len(lines))
        if ":" in lines[i] and not lines[i].lstrip().startswith("-"):
            doubled = [*lines[: i + 1], lines[i], *lines[i + 1 :]]
            out.append(("duplicate key", True, "\n".join(doubled) + "\n"))
    for depth in (8, 12, 20):
        bomb = ["a: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        bomb += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, depth)]
        out.append(("alias bomb", True, "\n".join(bomb) + "\n" + text))
    for bad in ("${1BAD}", "${}", "${A-B}", "${NOT_SET_ANYWHERE_123}"):
        data = copy.deepcopy(BASE)
        data["stages"][0]["url"] = f"postgresql+psycopg://u:{bad}@h/db"
        out.append(("bad ${...}", True, dump(data)))
    for size in ("1ms", "0.5s", "0s"):
        data = copy.deepcopy(BASE)
        data["window"]["size"] = size
        out.append(("window too small", True, dump(data)))
    for thresholds in ({}, {"max_unreadable_rate": 0.1}):
        data = copy.deepcopy(BASE)
        data["thresholds"] = thresholds
        out.append(("no limit at all", True, dump(data)))
    for url in ("file:///etc/passwd", "not a url", "ftp://x/y", "http://"):
        data = copy.deepcopy(BASE)
        data["alerts"]["routes"][0]["url"] = url
        out.append(("route url not http(s)", True, dump(data)))
    for name in ("../../x", "/abs", "a/b", "", ".hidden"):
        data = copy.deepcopy(BASE)
        data["pipeline"] = name
        out.append(("pipeline name not a safe name", True, dump(data)))
    for raw in ("[1, 2", "a: b: c", "\t- x", "{", "- just\n- a list", "42", "", "~"):
        out.append(("not a mapping or not YAML", True, raw))
    return out


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def test_every_generated_configuration_is_refused_by_name_or_valid(tmp_path: Path) -> None:
    mutants = _mutants(random.Random(19))
    assert len(mutants) >= 1000
    outcomes: Counter[tuple[str, str]] = Counter()
    slowest = 0.0
    for n, (kind, must_refuse, text) in enumerate(mutants):
        path = tmp_path / f"c{n}.yaml"
        path.write_text(text)
        started = time.perf_counter()
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), (kind, str(exc)[:200])
            outcomes[(kind, "exit 2")] += 1
        else:
            assert not must_refuse, f"{kind} accepted:\n{text[:2000]}"
            outcomes[(kind, "valid")] += 1
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 2.0, slowest
    print(f"{len(mutants)} configurations, slowest {slowest:.3f}s")
    for (kind, outcome), count in sorted(outcomes.items()):
        print(f"  {kind:32} {outcome:7} {count}")
