"""The benchmark suite's figures (`tools/bench_suite.py`) as the markdown of docs/benchmarks.md:
saturated throughput and c=1 latency per path and mode, the issue's targets measured and met or
not, image sizes with the gateway's memory, and the peers."""

from __future__ import annotations

import json
from argparse import Namespace
from typing import Any

IN_PROCESS = "in-process pipeline"
GATEWAY = "gateway gRPC"

Point = dict[str, Any]


class Figures:
    """Lookups into the suite's results."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.modes: dict[str, Any] = results["modes"]

    @property
    def paths(self) -> list[str]:
        """Every measured path, in the order first measured."""
        names: dict[str, None] = {}
        for figures in self.modes.values():
            names.update(dict.fromkeys(figures["paths"]))
        return list(names)

    def best(self, mode: str, path: str) -> Point | None:
        """The point of highest throughput over the loads (saturation)."""
        points = self.modes.get(mode, {}).get("paths", {}).get(path)
        return None if not points else max(points.values(), key=lambda p: p["throughput"])

    def at(self, mode: str, path: str, load: int) -> Point | None:
        return self.modes.get(mode, {}).get("paths", {}).get(path, {}).get(str(load))

    def ratio(self, a: Point | None, b: Point | None, key: str = "throughput") -> float | None:
        return None if a is None or b is None or not b[key] else a[key] / b[key]


def render_markdown(results: dict[str, Any], args: Namespace) -> str:
    figures = Figures(results)
    settings = results.get("settings") or vars(args)
    loads = list(settings["loads"])
    lines = [
        "# Benchmarks",
        "",
        f"Written by `tools/bench_suite.py` ({results['wall_s']:.0f} s run, "
        f"{settings['seconds']:g} s per point "
        f"after {settings['warmup']:g} s of warm-up, {settings['repeats']} rounds per point alternating "
        f"between paths, the median round by throughput). Model `{results['model']}`, "
        f"{results['image']}; the load generator, the gateway, Triton and the peers share one 2-core "
        "machine, so every figure includes the client's own CPU. Ratios are to the in-process "
        "pipeline measured in the same run. Raw figures: `docs/benchmarks.json`.",
        "",
    ]
    lines += throughput_table(figures, loads)
    lines += cpu_table(figures)
    lines += latency_table(figures, min(loads))
    lines += targets_table(figures, min(loads))
    lines += sizes_table(results.get("sizes", {}))
    lines += ["", "## Peers", ""]
    for name, peer in results.get("peers", {}).items():
        lines.append(f"- **{name}**: `{json.dumps(peer, default=str)[:600]}`")
    lines += ["", "![latency vs concurrency](images/benchmarks.png)", ""]
    return "\n".join(lines)


def _header(first: str, columns: list[str]) -> list[str]:
    return [f"| {first} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]


def throughput_table(figures: Figures, loads: list[int]) -> list[str]:
    modes = list(figures.modes)
    lines = [f"## Saturated throughput (answers/s, best of concurrency {', '.join(map(str, loads))})", ""]
    lines += _header("path", modes)
    for name in figures.paths:
        cells = []
        for mode in modes:
            point, ratio = (
                figures.best(mode, name),
                figures.ratio(figures.best(mode, name), figures.best(mode, IN_PROCESS)),
            )
            if point is None or ratio is None:
                cells.append("–")
                continue
            refused = sum(point["errors"].values())
            note = f", {refused:,} refused" if refused else ""
            cells.append(f"{point['throughput']:.0f} ({ratio:.2f}×{note})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def cpu_table(figures: Figures) -> list[str]:
    """Where the machine's CPU goes, per answer, at each path's saturation point."""
    lines = [
        "",
        "## CPU per answer at saturation",
        "",
        "ms of CPU time: load generator (and the in-process work) / gateway / Triton.",
        "",
    ]
    modes = list(figures.modes)
    lines += _header("path", modes)
    for name in figures.paths:
        cells = []
        for mode in modes:
            point = figures.best(mode, name)
            cpu = None if point is None else point.get("cpu_ms_per_answer")
            cells.append(
                "–"
                if not cpu
                else " / ".join(f"{cpu.get(k, 0.0):.2f}" for k in ("this process", "gateway", "triton"))
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def latency_table(figures: Figures, load: int) -> list[str]:
    modes = list(figures.modes)
    lines = ["", f"## Latency at concurrency {load} (p50 / p99 ms)", ""]
    lines += _header("path", modes)
    for name in figures.paths:
        points = [figures.at(mode, name, load) for mode in modes]
        cells = ["–" if p is None else f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f}" for p in points]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def targets_table(figures: Figures, load: int) -> list[str]:
    lines = ["", "## Targets (issue 15)", "", "| target | measured | met |", "|---|---:|:---:|"]

    def row(text: str, value: float | None, goal: float | None, higher: bool = True, unit: str = "") -> None:
        if value is None:
            lines.append(f"| {text} | – | – |")
        else:
            met = "" if goal is None else ("yes" if (value >= goal if higher else value <= goal) else "no")
            lines.append(f"| {text} | {value:.2f}{unit} | {met} |")

    gateway = figures.best("maps raw", GATEWAY)
    row(
        "gateway gRPC ÷ Triton alone, saturated, maps raw (≥ 0.90)",
        figures.ratio(gateway, figures.best("maps raw", "triton (tritonclient)")),
        0.90,
        unit="×",
    )
    row(
        "gateway gRPC ÷ hand loop, saturated, maps raw",
        figures.ratio(gateway, figures.best("maps raw", "hand loop")),
        None,
        unit="×",
    )
    g1, i1 = figures.at("maps raw", GATEWAY, load), figures.at("maps raw", IN_PROCESS, load)
    row(
        f"p50 at c={load}, gateway gRPC − in-process, maps raw (≤ 1.5 ms)",
        None if g1 is None or i1 is None else g1["p50_ms"] - i1["p50_ms"],
        1.5,
        higher=False,
        unit=" ms",
    )
    row(
        "gateway maps raw ÷ predictions only, saturated (≥ 0.95)",
        figures.ratio(gateway, figures.best("predictions", GATEWAY)),
        0.95,
        unit="×",
    )
    for mode, measured in figures.modes.items():
        if mode.startswith("overlay"):
            row(
                f"640×480 {mode}: postprocessing at c=1 (≤ 5 ms)",
                measured["postprocess_ms_c1"],
                5.0,
                higher=False,
                unit=" ms",
            )
    twelve = figures.results.get("sizes", {}).get("12 MP")
    if twelve:
        worst = max((m["gateway_rss_peak_mb"] - m["gateway_rss_idle_mb"]) / 4 for m in twelve.values())
        row(
            "12 MP at c=4: gateway memory above idle, per request (≤ 100 MB)",
            worst,
            100.0,
            higher=False,
            unit=" MB",
        )
    torchserve = figures.results.get("peers", {}).get("torchserve", {})
    peer = torchserve.get("1") or torchserve.get(1) if isinstance(torchserve, dict) else None
    if isinstance(peer, dict) and "explanations" in peer:
        explain = peer["explanations"]
        for mode in figures.modes:
            overlay = figures.at(mode, GATEWAY, 1)
            if mode.startswith("overlay") and overlay is not None:
                row(
                    f"{mode} answer bytes ÷ TorchServe explanation bytes (≤ 0.10)",
                    overlay["bytes_per_answer"] / explain["bytes"],
                    0.10,
                    higher=False,
                    unit="×",
                )
                row(
                    f"{mode} answers/s ÷ TorchServe explanations/s at c=1",
                    overlay["throughput"] / explain["throughput"],
                    None,
                    unit="×",
                )
    return lines


def sizes_table(sizes: dict[str, Any]) -> list[str]:
    if not sizes:
        return []
    lines = [
        "",
        "## Image sizes (concurrency 4)",
        "",
        "| image | mode | in-process /s | gateway /s | ratio | gateway p50 ms | gateway RSS idle → peak MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size_name, by_mode in sizes.items():
        for mode, m in by_mode.items():
            inproc, gateway = m[IN_PROCESS], m[GATEWAY]
            ratio = gateway["throughput"] / inproc["throughput"] if inproc["throughput"] else float("nan")
            lines.append(
                f"| {size_name} ({m['bytes'] / 1e3:.0f} KB) | {mode} | {inproc['throughput']:.1f} | "
                f"{gateway['throughput']:.1f} | {ratio:.2f}× | {gateway['p50_ms']:.1f} | "
                f"{m['gateway_rss_idle_mb']:.0f} → {m['gateway_rss_peak_mb']:.0f} |"
            )
    return lines
