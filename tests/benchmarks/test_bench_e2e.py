"""`mtdesk bench e2e` end to end, briefly and slowly (figures are not asserted: the bench
is for measuring, not a timed test): every customer message is answered exactly once,
redeliveries included, and the report carries its keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

KEYS = {"messages", "replied_once", "lost", "duplicated", "msgs_per_s", "offered_rate",
        "overhead_p50_ms", "overhead_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "ack_p99_ms",
        "queue_lag_max", "cpu_ms_per_msg", "redeliveries", "meets_goal"}


@pytest.mark.ray
def test_bench_e2e_answers_every_message_once_and_reports_its_figures(tmp_path) -> None:
    out = tmp_path / "e2e.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "e2e", "--seconds", "2", "--rate", "15",
         "--users", "12", "--llm-latency-ms", "50", "--duplicates", "0.3", "--shards", "2",
         "--json", str(out), "--report", str(tmp_path / "report"), "--redis-cost", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert KEYS <= set(report)
    assert report["messages"] == 30
    assert report["redeliveries"] > 0  # Meta's retries were played, and kept once
    assert report["lost"] == 0
    assert report["duplicated"] == 0
    assert report["replied_once"] == report["messages"]
    assert report["offered_rate"] == 15
    # Redis' CPU per answered message, and the rate one Redis core would carry at that cost
    assert report["redis_cpu_us_per_msg"] > 0
    assert report["msgs_per_s_per_redis_core"] == pytest.approx(
        1e6 / report["redis_cpu_us_per_msg"], rel=0.05)
    assert "µs of CPU per message" in proc.stdout
    assert "answered once" in proc.stdout
    _the_report_is_there(tmp_path / "report", report)
    # --redis-cost: a second of the load's commands replayed on a Redis of its own
    cost = report["redis_cost"]
    assert cost["captured"]["answers"] > 0 and cost["captured"]["commands"] > 0
    assert cost["replay_errors"] == {}  # every command ran again, as the product sent it
    assert cost["replay_cpu_us_per_msg"] > 0
    assert "evalsha" in cost["replay_us_per_msg_by_command"]  # the reply scripts ran again
    assert "replayed alone" in proc.stdout


def _the_report_is_there(directory, report) -> None:  # type: ignore[no-untyped-def]
    """--report: the figures as JSON with the machine, a table, and the plots as PNGs."""
    written = json.loads((directory / "e2e.json").read_text())
    assert written["figures"]["messages"] == report["messages"]
    assert written["machine"]["cores"] == os.cpu_count()
    assert "ray" in written["machine"]["versions"]
    table = (directory / "e2e.md").read_text()
    assert "| messages | 30 |" in table and "| lost | 0 |" in table
    assert "| duplicated | 0 |" in table and "stage end_to_end p50 / p99 ms" in table
    for plot in ("throughput", "latency", "stages"):
        png = directory / f"e2e-{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(e2e-{plot}.png)" in table
    stages = report["stage_ms"]
    assert {"queue", "llm", "send", "end_to_end"} <= set(stages)
    # the load's messages (and the warm-up's, when the shards' snapshot predates it)
    assert 30 <= stages["end_to_end"]["count"] <= 60


def test_bench_e2e_rejects_a_bad_option_naming_it() -> None:
    from mtdesk.cli.main import main

    with pytest.raises(SystemExit):
        main(["bench", "e2e", "--rate", "fast"])
    assert main(["bench", "e2e", "--rate", "0"]) == 2


def _bench(tmp_path, *args: str) -> tuple[dict, str]:  # type: ignore[no-untyped-def,type-arg]
    out = tmp_path / "e2e.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTDESK_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mtdesk", "bench", "e2e", "--seconds", "2", "--rate", "15",
         "--users", "12", "--llm-latency-ms", "50", "--duplicates", "0.3", "--shards", "2",
         "--json", str(out), *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.ray
def test_bench_e2e_new_customers_sends_that_share_from_customers_never_seen(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--new-customers 0.5: half the load's messages open a conversation of their own
    (the fake Graph API answered that many more people), the others come from the
    customers introduced before the load, so none of theirs is a first contact."""
    from mtdesk.benchmarks.e2e_load import customer_of, is_new_customer

    report, stdout = _bench(tmp_path, "--new-customers", "0.5",
                            "--report", str(tmp_path / "report"), "--plots", "throughput")
    assert report["messages"] == 30 and report["replied_once"] == 30
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert report["first_contact_messages"] == 15
    assert report["first_contact_share"] == 0.5
    known = {customer_of(n, 12, 0.5) for n in range(30) if not is_new_customer(n, 0.5)}
    assert len(known) < 15  # the known ones write more than once each
    assert report["customers_answered"] == 15 + len(known)
    assert report["overhead_first_contact_p99_ms"] > 0 and report["overhead_known_p99_ms"] > 0
    assert report["config"]["new_customers"] == 0.5
    assert "first contacts 50% of messages" in stdout
    # --plots: only the plot asked for
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == ["e2e-throughput.png"]
    table = (tmp_path / "report" / "e2e.md").read_text()
    assert "| first contacts (share) | 0.50 |" in table and "(e2e-latency.png)" not in table


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_bench_e2e_cluster_runs_on_three_masters_and_stops_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """--cluster: the product runs against a Redis Cluster the bench starts (every master
    executes part of the load's commands, summed in the report, the servers' CPU counted)
    and stops again; every message answered once."""
    import redis

    report, stdout = _bench(tmp_path, "--cluster")
    assert report["messages"] == 30 and report["replied_once"] == 30
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert report["config"]["redis_cluster"] is True
    by_server = report["redis_calls_per_msg_by_server"]
    assert len(by_server) == 3 and all(v > 0 for v in by_server.values())
    xinfo = report["redis_calls_per_msg_by_command"].get("xinfo|groups", 0.0)
    assert sum(by_server.values()) == pytest.approx(report["redis_calls_per_msg"] - xinfo,
                                                    rel=0.02, abs=0.05)
    assert report["redis_cpu_us_per_msg"] > 0
    assert report["cpu_s"]["redis"] > 0 and "redis_replicas" in report["cpu_s"]
    assert "Redis Cluster of 3 masters" in stdout
    for url in report["redis_servers"]:  # stopped on the way out
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()


@pytest.mark.parametrize("args, named", [
    (["--new-customers", "1.5"], "--new-customers"),
    (["--cluster", "--redis-url", "redis://127.0.0.1:1/0"], "--cluster"),
    (["--plots", "throughput,pie"], "--plots"),
    (["--redis-cost", "0"], "--redis-cost"),
    (["--redis-cost", "3", "--cluster"], "--redis-cost"),
])
def test_bench_e2e_rejects_a_bad_new_option_naming_it(args, named, capsys) -> None:  # type: ignore[no-untyped-def]
    from mtdesk.cli.main import main

    assert main(["bench", "e2e", *args]) == 2
    assert named in capsys.readouterr().err

