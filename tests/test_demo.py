"""`recon demo`: the 30 % incident shows up at the lake, in exactly the affected windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from recon.model import Window
from recon.simulate.demo import INCIDENT_HOURS, demo_start, incident_scenario, run_demo
from recon.simulate.plant import PAYMENT_V1, PAYMENT_V2, register
from recon.simulate.scenario import plan
from recon.simulate.truth import truth
from recon.store import ResultStore
from recon.timeutil import iso


def test_demo_incident(
    pg_url: str, bootstrap: str, registry_url: str, unique: str, tmp_path: Path, capsys
) -> None:
    """12 windows x 2000 events. Hours 2-9: the lake hop loses round(0.302 x 2000) = 604 of
    the events Kafka delivered (Kafka loses none at this volume) -> breach at the lake only.
    5 dead letters an hour are not losses. Hour 11: the lagging consumer leaves events pending
    -> incomplete. Every other window: ok. Every counter equals the simulator's truth. The
    demo's two expectations of the user's (at most 8 dead letters an hour at the lake, the
    producer's p99 latency at most 2,000 ms: its hop takes 5-800 ms) pass in all 12.

    The values are Avro; events received from hour 2 on carry schema v2 (the switch), and
    only they are lost: window 2 names v2, first seen at its first message, as the cause of
    604 of its 2,000 events lost at the lake (30.2%); no other window names a cause (v2 is
    not new in hours 3-9, and v1 never loses an event)."""
    code = run_demo(tmp_path, 2000, pg_url, bootstrap, name=unique, registry=registry_url)
    assert code == 1
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    windows = store.windows(unique)
    expected = ["breach" if h in INCIDENT_HOURS else "ok" for h in range(12)]
    expected[11] = "incomplete"
    assert list(windows["status"]) == expected
    metrics = store.stage_metrics(unique)
    lake = metrics[metrics["stage"] == "lake"].reset_index()
    kafka = metrics[metrics["stage"] == "kafka"]
    assert kafka["lost"].sum() == 0
    for h in range(12):
        assert lake.loc[h, "lost"] == (604 if h in INCIDENT_HOURS else 0)
        assert bool(lake.loc[h, "breach"]) == (h in INCIDENT_HOURS)
    assert lake.loc[:10, "dead_lettered"].tolist() == [5] * 11
    for window_id in windows["window_id"]:
        named = store.expectations(window_id).dropna(subset=["name"])
        assert sorted(named["name"]) == [
            "dead letters at most 200 a day (8 an hour)",
            "producer p99 latency at most 2,000 ms",
        ]
        assert named["success"].all()
    start = windows["window_start"].iloc[0].to_pydatetime()
    assert start == demo_start(datetime.now(UTC)) or start == demo_start(
        datetime.now(UTC) - timedelta(hours=1)  # the run began in the hour before
    )
    scenario = incident_scenario(start, 2000)
    want = truth(plan(scenario), timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))
    for (_, row), w in zip(metrics.iterrows(), [w for w in want for _ in range(4)], strict=True):
        if row["stage"] in w.stages:
            assert {k: row[k] for k in w.stages[row["stage"]]} == w.stages[row["stage"]]
    assert lake.loc[11, "pending"] == want[11].stages["lake"]["pending"] > 300
    v1, v2 = (
        register(registry_url, f"{unique}-events-value", PAYMENT_V1),
        register(registry_url, f"{unique}-events-value", PAYMENT_V2),
    )  # registering again answers the IDs the demo got
    planted = plan(scenario).kafka
    first_v2 = min(
        ts
        for ts, new in zip(*(planted[c].to_pylist() for c in ("ts_ms", "new_schema")), strict=True)
        if new
    )
    when = iso(datetime.fromtimestamp(first_v2 / 1000, UTC))
    sentence = (
        f"lake: schema id {v2} first seen {when} on {unique}-events; "
        "604 of its 2,000 events (30.2%) lost at lake"
    )
    ids = windows["window_id"].tolist()
    columns = ["schema_id", "messages", "events", "lost_next", "first_seen"]

    def rows(w: int) -> list[list[object]]:
        return store.schema_ids(ids[w])[columns].astype(object).values.tolist()

    # Window 0 has nothing before it: nothing is new. Window 2: 2,003 messages (2 producer
    # retries, an orphan), all v2; none of v1 (hour 1's last event reached Kafka before 02:00).
    assert rows(0) == [[v1, 2001, 2000, 0, None]]
    assert rows(1) == [[v1, 2002, 2000, 0, False]]
    assert rows(2) == [[v2, 2003, 2000, 604, True]]
    assert rows(3) == [[v2, 2003, 2000, 604, False]]
    notes = [store.notes(i) for i in ids]
    assert [n for n in notes[2] if "first seen" in n] == [sentence]
    assert [i for i, n in enumerate(notes) if any("first seen" in x for x in n)] == [2]
    out = capsys.readouterr().out
    assert "8 of 12 windows breached" in out
    assert (
        f"cause: {Window(start + timedelta(hours=2), start + timedelta(hours=3))}: {sentence}"
        in out
    )


def test_the_demo_never_replaces_what_it_did_not_plant(
    pg_url: str, bootstrap: str, unique: str, tmp_path: Path, capsys
) -> None:
    """A team's own table has the name the demo would use: `recon demo --name` refuses (exit
    2) and the table keeps its one row. Topics of that name without the demo's table: the
    same. A name of its own plants and reconciles (exit 1: the incident's breach)."""
    import psycopg

    from recon.cli import main
    from recon.simulate.plant import create_topic
    from recon.sources.sql import conninfo

    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f"CREATE TABLE {unique}_webhook_receipts (event_id text)")
        conn.execute(f"INSERT INTO {unique}_webhook_receipts VALUES ('theirs')")
    args = ["demo", "--workdir", str(tmp_path), "--events-per-hour", "50"]
    args += ["--pg-url", pg_url, "--bootstrap", bootstrap]
    assert main([*args, "--name", unique]) == 2
    assert "was not planted by recon demo: choose another --name" in capsys.readouterr().err
    with psycopg.connect(conninfo(pg_url)) as conn:
        rows = conn.execute(f"SELECT event_id FROM {unique}_webhook_receipts").fetchall()
    assert rows == [("theirs",)]
    other = f"{unique}b"
    create_topic(bootstrap, f"{other}-events", 1)
    assert main([*args, "--name", other]) == 2
    mine = f"{unique}c"
    assert main([*args, "--name", mine]) == 1
    assert main([*args, "--name", mine]) == 1  # its own demo: replaced
