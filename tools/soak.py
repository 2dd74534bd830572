"""Soak: `attnserve serve` under steady load with bad inputs mixed in and Triton killed now and
then — does anything leak, hang or get lost?

    .venv/bin/python tools/soak.py --duration 600 --rate 60 --bad 0.05 --kill-triton-every 120

Open-loop load at a fixed rate over gRPC (the sample digit, its primary map), a share of junk
images, and, every so often, SIGKILL to Triton (the supervisor restarts it). The gateway's
process is sampled every second: resident memory, open file descriptors, threads. A request is
*lost* when it gets neither an answer nor a declared error (or no reply within 30 s). The last
line is a JSON summary (`--json` prints only that).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from attnserve.bench.processes import status
from attnserve.clients import Client
from attnserve.demo import add_models_option, serving
from attnserve.errors import AttnserveError
from attnserve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = (ROOT / "docs" / "samples" / "digit.png").read_bytes()
JUNK = [b"", b"not an image", SAMPLE[:200], b"GIF89a" + bytes(100)]


def process_sample(pid: int) -> tuple[float, int, int]:
    """(resident MiB, open file descriptors, threads) of a process."""
    fields = status(pid)
    rss_mib = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mib, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def triton_pid(grpc_port: int) -> int | None:
    found = subprocess.run(
        ["pgrep", "-f", f"tritonserver.*grpc-port={grpc_port}"], capture_output=True, text=True
    )
    pids = found.stdout.split()
    return int(pids[0]) if pids else None


def garbage_collection(metrics_url: str) -> dict[str, Any]:
    """The gateway's garbage collector over the run: objects frozen after startup, and each
    generation's pauses (count, total and mean ms; generation 2: full collections)."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    frozen, pauses = 0.0, {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "attnserve_gc_frozen_objects":
                frozen = sample.value
            elif sample.name in ("attnserve_gc_pause_seconds_count", "attnserve_gc_pause_seconds_sum"):
                part = "count" if sample.name.endswith("count") else "total_ms"
                value = sample.value if part == "count" else round(sample.value * 1e3, 1)
                pauses.setdefault(sample.labels["generation"], {})[part] = value
    for pause in pauses.values():
        pause["mean_ms"] = round(pause["total_ms"] / pause["count"], 2) if pause["count"] else None
    return {"gc_frozen_objects": frozen, "gc_pauses": dict(sorted(pauses.items()))}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second")
    parser.add_argument("--bad", type=float, default=0.05, help="share of junk images")
    parser.add_argument("--kill-triton-every", type=float, default=120.0, help="seconds; 0: never")
    add_models_option(parser)
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()
    say = (lambda *a: None) if args.json else print

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    samples: list[tuple[float, float, int, int]] = []
    kills = 0
    with serving(Settings(), quiet=True, gateway_metrics=True, models=args.models) as served:
        say(f"serving; {args.duration:.0f} s at {args.rate:.0f} req/s, {args.bad:.0%} junk")
        client = Client(served.address, timeout_s=30)
        rng = random.Random(0)

        def one(data: bytes) -> None:
            try:
                client.predict(data, maps=["primary"])
                outcome = "answered"
            except AttnserveError as exc:
                outcome = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - anything undeclared is a lost request
                outcome = f"lost:{type(exc).__name__}"
            with lock:
                outcomes[outcome] += 1

        started = time.monotonic()
        next_kill = args.kill_triton_every or float("inf")
        next_sample = 0.0
        with ThreadPoolExecutor(32) as pool:
            sent = 0
            while (elapsed := time.monotonic() - started) < args.duration:
                if elapsed >= next_sample:
                    samples.append((elapsed, *process_sample(served.pid)))
                    next_sample += 1.0
                if elapsed >= next_kill:
                    pid = triton_pid(served.triton_grpc_port)
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        kills += 1
                        say(f"{elapsed:6.0f} s: killed Triton (pid {pid})")
                    next_kill += args.kill_triton_every
                due = started + sent / args.rate
                if due > time.monotonic():
                    time.sleep(min(due - time.monotonic(), 0.05))
                    continue
                data = rng.choice(JUNK) if rng.random() < args.bad else SAMPLE
                pool.submit(one, data)
                sent += 1
        client.close()
        assert served.metrics_url is not None
        collector = garbage_collection(served.metrics_url)
    exit_code = served.exit_code

    warm = [s for s in samples if s[0] >= 0.2 * args.duration]
    summary = {
        "duration_s": args.duration,
        "rate": args.rate,
        "sent": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "lost": sum(n for k, n in outcomes.items() if k.startswith("lost")),
        "triton_kills": kills,
        "rss_mib_after_warmup": round(warm[0][1], 1) if warm else None,
        "rss_mib_end": round(samples[-1][1], 1) if samples else None,
        "rss_growth_mib": round(samples[-1][1] - warm[0][1], 1) if warm else None,
        "fds_range": [min(s[2] for s in warm), max(s[2] for s in warm)] if warm else None,
        "threads_range": [min(s[3] for s in warm), max(s[3] for s in warm)] if warm else None,
        **collector,
        "exit_code": exit_code,
    }
    say(f"outcomes: {dict(outcomes)}")
    frozen = collector["gc_frozen_objects"]
    say(f"garbage collection: {frozen:.0f} objects frozen; pauses by generation {collector['gc_pauses']}")
    say(
        f"gateway RSS {summary['rss_mib_after_warmup']} → {summary['rss_mib_end']} MiB after warm-up; "
        f"fds {summary['fds_range']}; threads {summary['threads_range']}; exit {exit_code}"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
