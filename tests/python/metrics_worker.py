"""Pool workers for the worker-metrics test: each process keeps one client-py hub (made by the
Pool initializer) and reports through it; every task flushes before it returns, so a task's
result means the broker has applied its metrics. `die` is a task in which a worker SIGKILLs
itself: it dies holding none of the pool's locks (a worker killed while idle may hold the task
queue's read lock, and the pool then never hands out another task)."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "client-py" / "src"))

import mphub  # noqa: E402

HUB = None
FAMILIES = {}
DONE = 0
REPORT = None  # the write end of a Pipe: who died, after how many jobs


def init(addr, key, report=None):
    global HUB, REPORT
    REPORT = report
    HUB = mphub.connect(addr, authkey=key)
    FAMILIES["jobs"] = HUB.counter("jobs_done_total", "Jobs finished", labels=("queue",))
    FAMILIES["seconds"] = HUB.histogram("job_seconds", "Job duration", buckets=(0.1, 1.0, 10.0))
    FAMILIES["mine"] = HUB.gauge("worker_jobs", "Jobs this worker did", mode="livesum")
    FAMILIES["most"] = HUB.gauge("worker_jobs_most", "Most jobs one worker did", mode="max")


def work(i):
    global DONE
    DONE += 1
    FAMILIES["jobs"].labels(queue="even" if i % 2 == 0 else "odd").inc()
    FAMILIES["seconds"].observe((i % 20) / 10)
    FAMILIES["mine"].set(DONE)
    FAMILIES["most"].set(DONE)
    HUB.flush()
    return os.getpid(), DONE


def die():
    """One more job on the gauges only (so its share is never zero), reported, then SIGKILL."""
    global DONE
    DONE += 1
    FAMILIES["mine"].set(DONE)
    FAMILIES["most"].set(DONE)
    HUB.flush()
    REPORT.send((os.getpid(), DONE))
    os.kill(os.getpid(), signal.SIGKILL)
