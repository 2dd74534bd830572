"""What processes spend, from Linux's /proc: resident memory, CPU time by process family.

For the benchmark suite and the soak and memory tools, which watch the gateway and Triton from
outside.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as fields (``VmRSS``, ``VmHWM``, ``Threads``, …), values as written."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {
        key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    }


def status_kib(pid: int, field: str) -> int:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in KiB."""
    return int(status(pid)[field].split()[0])


class CpuMeter:
    """CPU time (user + system) used by this process (the load generator, and the in-process
    paths), by the gateway process and by Triton (its server and backend stubs), from /proc."""

    def __init__(self, gateway_pid: int | None) -> None:
        self.gateway_pid = gateway_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def _process(self, pid: int) -> tuple[int, float]:
        """(parent pid, CPU seconds)."""
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / self.tick

    def snapshot(self) -> dict[str, float]:
        usage = os.times()
        figures = {"this process": usage.user + usage.system}
        if self.gateway_pid is None:
            return figures
        processes: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    processes[int(entry)] = self._process(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
        descendants: set[int] = set()
        frontier = {self.gateway_pid}
        while frontier:
            frontier = {pid for pid, (parent, _) in processes.items() if parent in frontier} - descendants
            descendants |= frontier
        figures["gateway"] = processes.get(self.gateway_pid, (0, 0.0))[1]
        figures["triton"] = sum(processes[pid][1] for pid in descendants)
        return figures

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.snapshot()
        return {name: now[name] - before.get(name, 0.0) for name in now}


class MemorySampler:
    """The gateway process's resident memory, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return status_kib(self.pid, "VmRSS") * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> MemorySampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Triton, its Python-backend stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> bytes:
    """``/proc/PID/cmdline`` (NUL-separated); empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def multiprocessing_descendants(pid: int) -> list[int]:
    """The multiprocessing processes ``pid`` started (render workers, their resource tracker)."""
    return [child for child in descendants(pid) if b"multiprocessing" in cmdline(child)]
