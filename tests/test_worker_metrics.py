"""Worker metrics (PROTOCOL §10): stock `$metrics` tuples and client-py's API, aggregated by the
broker and served on /metrics; a SIGKILLed worker never makes a total go down; batches that share
objects decode at every pickle protocol; names never collide; all ten gauge modes."""

import multiprocessing
import os
import re
import shutil
import subprocess
import time
import urllib.request
from multiprocessing.connection import Client

import mphub
import pytest
from conftest import KEY, ROOT, run_py313
from scenarios import barrier


def scrape(broker):
    with urllib.request.urlopen(broker.metrics_url, timeout=10) as r:
        return r.read().decode()


def value(text, sample):
    """The value of one sample line (`name{labels}`), or None."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def mbroker(start_broker):
    return start_broker(metrics="127.0.0.1:0")


def test_stock_tuples_are_aggregated_and_served_in_the_text_format(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", [
        ("declare", "jobs_done_total", "counter", "Jobs finished", ("queue",), {}),
        ("declare", "inflight", "gauge", "Jobs in progress", (), {"mode": "livesum"}),
        ("declare", "job_seconds", "histogram", "Job duration", (), {"buckets": [0.1, 1.0, 10.0]}),
        ("inc", "jobs_done_total", {"queue": 'fa"st\\'}, 2),
        ("set", "inflight", {}, 3),
        ("observe", "job_seconds", {}, 0.42),
        ("observe", "job_seconds", {}, 20),
    ]))
    assert barrier(c) == []  # success is silent
    text = scrape(mbroker)
    assert value(text, r'jobs_done_total{queue="fa\"st\\"}') == 2
    assert value(text, "inflight") == 3
    assert [value(text, f'job_seconds_bucket{{le="{le}"}}') for le in ("0.1", "1", "10", "+Inf")] == [0, 1, 1, 2]
    assert value(text, "job_seconds_count") == 2 and value(text, "job_seconds_sum") == 20.42
    assert text.count("# TYPE job_seconds histogram") == 1
    # Worker families come after the broker's own, each whole.
    assert text.index("# TYPE mphub_") < text.index("# TYPE inflight")


def test_rejections_answer_an_error_count_and_never_run_code(mbroker, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", [("declare", "hits_total", "counter", "Hits", (), {})]))
    cases = [
        ([("declare", "hits_total", "gauge", "Hits", (), {})], "already declared"),
        ([("inc", "hits_total", {}, -1)], "only goes up"),
        ([("declare", "lat", "histogram", "L", ("le",), {})], "reserved"),
        ([("declare", "mphub_mine", "counter", "M", (), {})], "mphub_"),
        ([Evil()], "imports or calls"),
    ]
    for ops, reason in cases:
        c.send(("$metrics", ops))
        reply = c.recv()
        assert reply[0] == "$error" and reason in reply[1], reply
    assert barrier(c) == []
    assert not marker.exists()
    text = scrape(mbroker)
    for label in ("conflict", "negative_counter", "reserved_label", "bad_name", "code"):
        assert value(text, f'mphub_metrics_rejected_total{{reason="{label}"}}') == 1, label
    assert value(text, "hits_total") == 0  # declared, never incremented: zero, as prometheus_client


def test_gauge_modes_follow_connections(mbroker):
    conns = [Client(mbroker.address, authkey=KEY) for _ in range(3)]
    decl = [
        ("declare", "g_livesum", "gauge", "g", (), {"mode": "livesum"}),
        ("declare", "g_max", "gauge", "g", (), {"mode": "max"}),
        ("declare", "g_all", "gauge", "g", (), {"mode": "liveall"}),
    ]
    for i, c in enumerate(conns, start=1):
        c.send(("$metrics", decl + [("set", n, {}, i * 10) for n in ("g_livesum", "g_max", "g_all")]))
        assert barrier(c) == []
    text = scrape(mbroker)
    assert value(text, "g_livesum") == 60 and value(text, "g_max") == 30
    assert len(re.findall(r'^g_all\{conn="\d+"\} ', text, re.M)) == 3
    conns[2].send("close")
    deadline = time.monotonic() + 30
    while value(scrape(mbroker), "g_livesum") != 30 and time.monotonic() < deadline:
        barrier(conns[0])
    text = scrape(mbroker)
    assert value(text, "g_livesum") == 30 and value(text, "g_max") == 30
    assert len(re.findall(r'^g_all\{conn="\d+"\} ', text, re.M)) == 2


def test_every_gauge_mode_after_two_of_three_writers_close(mbroker):
    # Writers set 10, 20 and 30 in that order; the ones that set 10 and 30 close. prometheus_client's
    # multiprocess modes: live* forget a closed writer, the others keep what it wrote.
    modes = ["sum", "livesum", "min", "livemin", "max", "livemax", "mostrecent", "livemostrecent"]
    decl = [("declare", f"g_{m}", "gauge", "g", (), {"mode": m}) for m in modes + ["all", "liveall"]]
    conns = [Client(mbroker.address, authkey=KEY) for _ in range(3)]
    for i, c in enumerate(conns, start=1):
        c.send(("$metrics", decl + [("set", f"g_{m}", {}, i * 10) for m in modes + ["all", "liveall"]]))
        assert barrier(c) == []
    for c in (conns[0], conns[2]):
        c.send("close")
    deadline = time.monotonic() + 30
    while len(re.findall(r"^g_liveall\{", scrape(mbroker), re.M)) != 1 and time.monotonic() < deadline:
        barrier(conns[1])
    text = scrape(mbroker)
    want = {"sum": 60, "livesum": 20, "min": 10, "livemin": 20, "max": 30, "livemax": 20,
            "mostrecent": 30, "livemostrecent": 20}
    assert {m: value(text, f"g_{m}") for m in modes} == want
    assert len(re.findall(r'^g_all\{conn="\d+"\} ', text, re.M)) == 3
    assert len(re.findall(r'^g_liveall\{conn="\d+"\} ', text, re.M)) == 1


def test_client_py_families_batch_and_arrive_on_flush_and_close(mbroker):
    hub = mphub.connect(mbroker.addrs[0], authkey=KEY, metrics_interval=3600)
    jobs = hub.counter("api_jobs_total", "Jobs", labels=("queue",))
    temp = hub.gauge("api_temp", "Temperature", mode="mostrecent")
    lat = hub.histogram("api_seconds", "Latency", buckets=(0.5, 1))
    size = hub.summary("api_bytes", "Sizes")
    for _ in range(5):
        jobs.labels(queue="a").inc()
    jobs.labels("b").inc(2.5)
    temp.set(20)
    temp.inc(1.5)
    lat.observe(0.7)
    size.observe(100)
    hub.flush()
    text = scrape(mbroker)
    assert value(text, 'api_jobs_total{queue="a"}') == 5 and value(text, 'api_jobs_total{queue="b"}') == 2.5
    assert value(text, "api_temp") == 21.5
    assert value(text, 'api_seconds_bucket{le="1"}') == 1 and value(text, "api_bytes_sum") == 100
    jobs.labels(queue="a").inc()
    hub.close()  # the last increment goes out on close
    assert value(scrape(mbroker), 'api_jobs_total{queue="a"}') == 6
    with pytest.raises(ValueError):
        jobs.labels(queue="a").inc(-1)
    with pytest.raises(ValueError):
        mphub.connect(mbroker.addrs[0], authkey=KEY).counter("x", "x", labels=("le",))
    with mphub.connect(mbroker.addrs[0], authkey=KEY) as other:
        for buckets in [(), (float("inf"),), (2, 1)]:
            with pytest.raises(ValueError):
                other.histogram("no_buckets", "x", buckets=buckets)
    assert "no_buckets" not in scrape(mbroker)


def test_a_killed_pool_worker_never_makes_totals_go_down(mbroker):
    import metrics_worker

    ctx = multiprocessing.get_context("fork")
    reports, report = ctx.Pipe(duplex=False)
    with ctx.Pool(8, initializer=metrics_worker.init, initargs=(mbroker.addrs[0], KEY, report)) as pool:
        first = pool.map(metrics_worker.work, range(400), chunksize=5)
        done = {}
        for pid, n in first:
            done[pid] = max(done.get(pid, 0), n)
        before = scrape(mbroker)
        total = value(before, 'jobs_done_total{queue="even"}') + value(before, 'jobs_done_total{queue="odd"}')
        assert total == 400 and value(before, "job_seconds_count") == 400
        assert value(before, "worker_jobs") == 400
        pool.apply_async(metrics_worker.die)  # one worker adds a job to its gauges and is SIGKILLed
        victim, victim_done = reports.recv()
        # The dead worker's livesum share goes; its max stays; the counters do not move.
        deadline = time.monotonic() + 30
        while value(scrape(mbroker), "worker_jobs") != 401 - victim_done and time.monotonic() < deadline:
            pass
        after = scrape(mbroker)
        assert value(after, "worker_jobs") == 401 - victim_done
        assert value(after, "worker_jobs_most") == max(victim_done, *done.values())
        assert value(after, 'jobs_done_total{queue="even"}') == 200
        assert value(after, "job_seconds_count") == 400
        pool.map(metrics_worker.work, range(400, 800), chunksize=5)  # survivors and a new worker
    final = scrape(mbroker)
    assert value(final, 'jobs_done_total{queue="even"}') + value(final, 'jobs_done_total{queue="odd"}') == 800
    assert value(final, "job_seconds_count") == 800


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) missing")
def test_the_scrape_passes_promtool_check_metrics(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", [
        ("declare", "ok_total", "counter", "A counter\nwith a newline \\ and backslash", ("k",), {}),
        ("declare", "dur_seconds", "histogram", "Durations", (), {}),
        ("declare", "size_bytes", "summary", "Sizes", (), {}),
        ("declare", "temp_celsius", "gauge", "T", ("room",), {"mode": "all"}),
        ("inc", "ok_total", {"k": "v\n\"x\""}, 1),
        ("observe", "dur_seconds", {}, 0.3),
        ("observe", "size_bytes", {}, 10),
        ("set", "temp_celsius", {"room": "a"}, -2.5),
    ]))
    barrier(c)
    r = subprocess.run(["promtool", "check", "metrics"], input=scrape(mbroker), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_series_cap_rejects_the_next_series(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    ops = [("declare", "wide_total", "counter", "w", ("i",), {})]
    ops += [("inc", "wide_total", {"i": str(i)}, 1) for i in range(10_001)]
    c.send(("$metrics", ops))
    reply = c.recv()
    assert reply[0] == "$error" and "1 of 10002 ops rejected" in reply[1] and "10000 series" in reply[1]
    text = scrape(mbroker)
    assert value(text, "mphub_metrics_series") == 10_000
    assert value(text, 'mphub_metrics_rejected_total{reason="limit"}') == 1


def settle(broker, sample, want):
    """Scrape until `sample` has the value `want` (None: absent); a close reaches the broker's
    store asynchronously, so this waits on the condition, not on time."""
    deadline = time.monotonic() + 30
    while value(scrape(broker), sample) != want and time.monotonic() < deadline:
        pass
    return value(scrape(broker), sample)


def test_a_labels_dict_shared_by_two_ops_counts_twice_and_is_silent(mbroker):
    # The example: the second `lbl` is a memo reference in the pickle.
    lbl = {"queue": "a"}
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", [("declare", "k_total", "counter", "k", ("queue",), {}),
                         ("inc", "k_total", lbl, 1), ("inc", "k_total", lbl, 1)]))
    assert barrier(c) == []
    assert value(scrape(mbroker), 'k_total{queue="a"}') == 2


def test_batches_sharing_dicts_tuples_and_lists_decode_at_every_protocol(mbroker, interpreter):
    import shared_metrics

    if interpreter is None:
        shared_metrics.main(mbroker.address, KEY)
    else:
        r = run_py313(ROOT / "tests/python/shared_metrics.py", mbroker.addrs[0], KEY.hex())
        assert r.returncode == 0 and r.stdout.startswith("ok 3.13"), r.stderr + mbroker.log()
    text = scrape(mbroker)
    for proto in range(6):
        p = f"p{proto}"
        assert value(text, f'shared_{p}_total{{queue="a"}}') == 3, p
        series = '{queue="b",host="h1"'
        assert value(text, f"shared_{p}_seconds_count{series}}}") == 2, p
        assert value(text, f'shared_{p}_seconds_bucket{series},le="0.5"}}') == 1, p
        assert value(text, f"shared_{p}_gauge{series}}}") == 2**70, p
        assert f"# TYPE shared_{p}_other histogram" in text
    assert value(text, 'mphub_metrics_rejected_total{reason="decode"}') == 0


def test_client_py_observes_a_labelled_histogram_twice_in_one_batch(mbroker):
    hub = mphub.connect(mbroker.addrs[0], authkey=KEY, metrics_interval=3600)
    lat = hub.histogram("twice_seconds", "Latency", labels=("route",), buckets=(0.5, 1))
    child = lat.labels(route="/a")
    child.observe(0.2)
    child.observe(0.7)
    hub.flush()
    child.observe(2)  # the next batch applies too: the first one declared the family
    hub.flush()
    text = scrape(mbroker)
    assert value(text, 'twice_seconds_count{route="/a"}') == 3
    assert value(text, 'twice_seconds_bucket{route="/a",le="0.5"}') == 1
    assert value(text, 'mphub_metrics_rejected_total{reason="undeclared"}') == 0
    hub.close()


@pytest.mark.parametrize("first", ["histogram", "gauge"])
def test_a_name_another_family_writes_is_refused_whichever_comes_first(mbroker, first):
    histogram = ("declare", "q", "histogram", "h", (), {})
    gauge = ("declare", "q_count", "gauge", "g", (), {"mode": "mostrecent"})
    ops = [histogram, gauge] if first == "histogram" else [gauge, histogram]
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", ops + [("observe", "q", {}, 1), ("set", "q_count", {}, 5)]))
    (reply,) = barrier(c)
    assert reply[0] == "$error" and '"q_count"' in reply[1], reply
    assert "2 of 4 ops rejected" in reply[1], reply  # the refused family's update is undeclared
    text = scrape(mbroker)
    assert len(re.findall(r"^q_count ", text, re.M)) == 1
    assert value(text, 'mphub_metrics_rejected_total{reason="conflict"}') == 1


def test_a_name_the_broker_serves_itself_is_refused(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    c.send(("$metrics", [("declare", "process_open_fds", "gauge", "fds", (), {}),
                         ("set", "process_open_fds", {}, 99)]))
    (reply,) = barrier(c)
    assert reply[0] == "$error" and "the broker itself serves" in reply[1], reply
    text = scrape(mbroker)
    assert len(re.findall(r"^# HELP process_open_fds ", text, re.M)) == 1
    assert value(text, "process_open_fds") != 99


def test_livemostrecent_follows_the_latest_live_writer_as_writers_close(mbroker):
    decl = [("declare", "latest", "gauge", "l", (), {"mode": "livemostrecent"}),
            ("declare", "latest_kept", "gauge", "l", (), {"mode": "mostrecent"})]
    a, b = Client(mbroker.address, authkey=KEY), Client(mbroker.address, authkey=KEY)
    for conn, v in [(a, 1), (b, 2)]:
        conn.send(("$metrics", decl + [("set", "latest", {}, v), ("set", "latest_kept", {}, v)]))
        assert barrier(conn) == []
    text = scrape(mbroker)
    assert value(text, "latest") == 2 and value(text, "latest_kept") == 2
    b.close()  # the latest writer goes: the latest value among live writers shows
    assert settle(mbroker, "latest", 1) == 1
    assert value(scrape(mbroker), "latest_kept") == 2
    a.close()  # no live writer left: no sample, as prometheus_client after mark_process_dead
    assert settle(mbroker, "latest", None) is None
    assert value(scrape(mbroker), "latest_kept") == 2
    # client-py takes the mode too.
    hub = mphub.connect(mbroker.addrs[0], authkey=KEY)
    hub.gauge("latest_py", "l", mode="livemostrecent").set(4)
    hub.flush()
    assert value(scrape(mbroker), "latest_py") == 4
    hub.close()


def test_histogram_buckets_are_checked_as_prometheus_client_checks_them(mbroker):
    c = Client(mbroker.address, authkey=KEY)
    inf = float("inf")
    refused = {  # name: (buckets, what the reason says)
        "empty": ([], "at least one bound"),
        "only_inf": ([inf], "at least one bound"),
        "unsorted": ([2, 1], "not in sorted order"),
        "twice": ([1, 1], "given twice"),  # prometheus_client allows it; `le` would repeat
        "nan": ([1, float("nan")], "NaN"),
    }
    for name, (buckets, reason) in refused.items():
        c.send(("$metrics", [("declare", f"b_{name}", "histogram", "b", (), {"buckets": buckets})]))
        replies = barrier(c)
        assert len(replies) == 1 and replies[0][0] == "$error" and reason in replies[0][1], (name, replies)
    accepted = {"one": [1], "trailing_inf": [1, inf], "minus_inf": [-inf, 0]}
    c.send(("$metrics", [("declare", f"b_{name}", "histogram", "b", (), {"buckets": buckets})
                         for name, buckets in accepted.items()]
                        + [("observe", f"b_{name}", {}, 0) for name in accepted]))
    assert barrier(c) == []
    text = scrape(mbroker)
    assert value(text, 'b_one_bucket{le="1"}') == 1 and value(text, 'b_one_bucket{le="+Inf"}') == 1
    assert text.count('b_trailing_inf_bucket{le="+Inf"}') == 1
    assert value(text, 'b_minus_inf_bucket{le="-Inf"}') == 0
    assert value(text, 'mphub_metrics_rejected_total{reason="bad_value"}') == len(refused)
    for name in refused:
        assert f"# TYPE b_{name} " not in text


def test_unlabelled_counters_histograms_and_summaries_show_zero_from_their_declaration(mbroker):
    # As prometheus_client: the first increment is then a change that rate() sees.
    hub = mphub.connect(mbroker.addrs[0], authkey=KEY)
    hub.counter("fresh_jobs_total", "Jobs")
    hub.histogram("fresh_seconds", "Seconds", buckets=(1, 2))
    hub.summary("fresh_bytes", "Bytes")
    hub.gauge("fresh_temp", "Temperature")
    hub.counter("fresh_by_queue_total", "Jobs by queue", labels=("queue",))
    hub.flush()
    text = scrape(mbroker)
    assert value(text, "fresh_jobs_total") == 0
    assert value(text, 'fresh_seconds_bucket{le="1"}') == 0 and value(text, 'fresh_seconds_bucket{le="+Inf"}') == 0
    assert value(text, "fresh_seconds_count") == 0 and value(text, "fresh_bytes_sum") == 0
    # A gauge shows once written (its value depends on its mode); a labelled family per label set.
    assert value(text, "fresh_temp") is None
    assert not re.search(r"^fresh_by_queue_total[ {]", text, re.M)
    hub.close()
