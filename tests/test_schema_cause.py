"""The cause, shown: a new schema ID on a Kafka topic, and the loss at the hop after it.

Planted by the simulator into PostgreSQL, Kafka (Avro values in Confluent wire
format, schemas in the real registry) and a parquet lake: 4 hours x 1,000 events
on 2 partitions (seed 11). Events received from 02:30 on are written with schema
v2; the lake loader loses 100 events an hour from hour 2 on, all of them v2.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from recon.config import PipelineConfig
from recon.engine.explain import explain
from recon.engine.runner import run
from recon.model import Window
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import LOST_LAKE, Scenario, plan
from recon.store import ResultStore
from recon.web.app import Dashboard

START = datetime(2026, 11, 20, tzinfo=UTC)
SCENARIO = Scenario(
    start=START,
    hours=4,
    events_per_hour=1000,
    partitions=2,
    seed=11,
    lake_loss=lambda hour: 0.1 if hour >= 2 else 0.0,
    schema_switch=timedelta(hours=2, minutes=30),
)
COLUMNS = ["schema_id", "messages", "events", "lost_next", "first_seen"]


@pytest.fixture(scope="module")
def planted(
    pg_url: str, bootstrap: str, registry_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineConfig, ResultStore, tuple[int, int]]:
    """The scenario planted and reconciled once, 00:00-04:00, into a fresh SQLite store."""
    work = tmp_path_factory.mktemp("schema-cause")
    targets = Targets(pg_url, bootstrap, work / "lake", f"t{uuid.uuid4().hex[:10]}", registry_url)
    ids = plant(plan(SCENARIO), targets)
    assert ids is not None
    store = ResultStore(f"sqlite:///{work / 'results.sqlite'}")
    config = pipeline_config(targets, results=store.url, expectations=str(work / "suites"))
    cfg = PipelineConfig.model_validate(config)
    run(cfg, START, START + timedelta(hours=4), store)
    return cfg, store, ids


def _rows(store: ResultStore, cfg: PipelineConfig, hour: int) -> list[list[object]]:
    windows = store.windows(cfg.pipeline)
    window_id = windows["window_id"].iloc[hour]
    return store.schema_ids(window_id)[COLUMNS].astype(object).values.tolist()


def test_a_new_schema_id_is_named_with_its_exact_loss(planted) -> None:
    """Window 02:00: 486 events of v1 (486 messages, none lost) and 514 of v2, first seen
    02:30:02.931 at [0]@1228 (514 messages); 100 of those 514 lost at the lake -> the
    notes say "schema id v2 first seen ...; 100 of its 514 events (19.5%) lost at lake",
    and nothing about v1."""
    cfg, store, (v1, v2) = planted
    assert _rows(store, cfg, 2) == [[v1, 486, 486, 0, False], [v2, 514, 514, 100, True]]
    windows = store.windows(cfg.pipeline)
    stored = store.schema_ids(windows["window_id"].iloc[2]).set_index("schema_id")
    first = stored.loc[v2, ["first_time", "first_partition", "first_offset"]].tolist()
    assert first == [datetime(2026, 11, 20, 2, 30, 2, 931000, tzinfo=UTC), 0, 1228]
    topic = f"{cfg.pipeline}-events"
    sentence = (
        f"lake: schema id {v2} first seen 2026-11-20T02:30:02.931000Z on {topic}; "
        "100 of its 514 events (19.5%) lost at lake"
    )
    notes = store.notes(windows["window_id"].iloc[2])
    assert [n for n in notes if "first seen" in n] == [sentence]
    assert (
        f"kafka: schema id {v2} on {topic}: 514 messages from 2026-11-20T02:30:02.931000Z at "
        "[0]@1228 to 2026-11-20T02:59:58.245000Z at [0]@1499; 514 of the window's events, "
        "100 of them lost at lake"
    ) in notes
    lake = store.window_metrics(windows["window_id"].iloc[2]).set_index("stage").loc["lake"]
    assert (lake["upstream"], lake["lost"]) == (1000, 100)


def test_an_id_seen_in_an_earlier_window_is_not_first_seen(planted) -> None:
    """Window 03:00: v2 again, 100 of its 1,000 events lost (999 messages: one event's is
    stamped after 04:00) - but v2 was in window 02:00, so no cause is named. Windows 00:00
    and 01:00 hold v1 only: the first has nothing before it (first_seen unknown), the second
    had v1 before (not new)."""
    cfg, store, (v1, v2) = planted
    assert _rows(store, cfg, 0) == [[v1, 1000, 1000, 0, None]]
    assert _rows(store, cfg, 1) == [[v1, 1000, 1000, 0, False]]
    assert _rows(store, cfg, 3) == [[v2, 999, 1000, 100, False]]
    windows = store.windows(cfg.pipeline)
    said = [[n for n in store.notes(w) if "first seen" in n] for w in windows["window_id"]]
    assert [len(s) for s in said] == [0, 0, 1, 0]


def test_restating_the_window_alone_names_the_cause_again(planted) -> None:
    """Re-running 02:00-03:00 alone: the earlier windows are in the store (v1 only), so v2
    is first seen again, with the same figures; window 03:00 re-run alone is not."""
    cfg, store, (v1, v2) = planted
    run(cfg, START + timedelta(hours=2), START + timedelta(hours=4), store)
    assert _rows(store, cfg, 2) == [[v1, 486, 486, 0, False], [v2, 514, 514, 100, True]]
    assert _rows(store, cfg, 3) == [[v2, 999, 1000, 100, False]]


def test_explain_shows_each_sighting_s_schema_id(planted) -> None:
    """A v2 event lost at the lake: its Kafka message carries v2; a v1 event delivered: v1.
    Receipts and lake rows have no schema ID."""
    cfg, _, (v1, v2) = planted
    events = plan(SCENARIO).events.to_pylist()
    lost = next(e for e in events if e["fate"] == LOST_LAKE)
    trace = explain(
        cfg, lost["event_id"], Window(START + timedelta(hours=2), START + timedelta(hours=3))
    )
    assert (trace.verdict, trace.vanished_at) == ("lost", "lake")
    assert [(s.stage, s.schema_id) for s in trace.sightings] == [("webhook", None), ("kafka", v2)]
    early = events[0]["event_id"]
    trace = explain(cfg, early, Window(START, START + timedelta(hours=1)))
    assert [(s.stage, s.schema_id) for s in trace.sightings] == [
        ("webhook", None),
        ("kafka", v1),
        ("lake", None),
    ]
    assert trace.as_dict()["sightings"][1]["schema_id"] == v1  # type: ignore[index]


def test_the_window_page_shows_the_cause_and_the_schema_table(planted) -> None:
    """The dashboard's window 02:00: the cause sentence under "Likely cause", and a row per
    schema ID (v2: 514 messages, 514 events, 100 lost there, 19.5%, new)."""
    cfg, store, (v1, v2) = planted
    window_id = store.windows(cfg.pipeline)["window_id"].iloc[2]
    status, _, body = Dashboard(store).respond(f"/window/{window_id}", {})
    assert status == "200 OK"
    html = body.decode()
    cause = re.search(r"<ul class='causes'><li data-schema-id='(\d+)'>(.*?)</li></ul>", html)
    assert cause is not None and int(cause.group(1)) == v2
    assert cause.group(2).startswith(f"lake: schema id {v2} first seen 2026-11-20T02:30:02.931")
    assert cause.group(2).endswith("100 of its 514 events (19.5%) lost at lake")
    row = re.search(rf"<tr data-stage='kafka' data-schema-id='{v2}'>(.*?)</tr>", html)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[2:] == [
        str(v2),
        "514",
        "02:30:02.931 [0]@1228",
        "02:59:58.245 [0]@1499",
        "514",
        "lake",
        "100",
        "19.5%",
        "new",
    ]
    assert f"data-schema-id='{v1}'" in html
