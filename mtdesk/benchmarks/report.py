"""``--report DIR`` of every ``mtdesk bench …``: the figures as JSON, a Markdown table and
PNG plots, with the machine they were measured on.

What a bench hands over: its figures (the JSON it also writes with ``--json``), the rows
of the table, and :class:`Plot` s. :func:`write` makes ``DIR/<bench>.json`` (``{"bench",
"machine", "figures"}``), ``DIR/<bench>.md`` (the machine, the table, the plots linked)
and one ``DIR/<bench>-<plot>.png`` per plot (matplotlib, Agg backend: no display).
matplotlib is the optional extra ``report`` (``pip install 'mtdesk[report]'``); without
it the JSON and the table are written and the plots are skipped with a note saying why.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

PlotKind = Literal["line", "bars", "cdf"]
PACKAGES = ("mtdesk", "ray", "redis", "aiohttp", "msgspec", "faiss-cpu", "numpy", "matplotlib")


@dataclass
class Plot:
    """One figure. ``series``: label → (xs, ys) for ``line``/``bars`` (bars: xs are the
    category names), label → values for ``cdf`` (the distribution of the values)."""

    name: str
    title: str
    kind: PlotKind
    xlabel: str
    ylabel: str
    series: dict[str, Any] = field(default_factory=dict)
    logy: bool = False


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _redis_server_version() -> str | None:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return None


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python and the versions that shape the figures."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    redis_server = _redis_server_version()
    if redis_server:
        versions["redis-server"] = redis_server
    return {"cores": os.cpu_count(), "memory_gb": _memory_gb(), "cpu": _cpu_model(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "versions": versions,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _describe(m: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (f"{m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB, {m['os']}, Python "
            f"{m['python']}; {versions}; load average at the end "
            f"{', '.join(f'{x:.2f}' for x in (m['load_average'] or []))}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _draw(plot: Plot, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if plot.kind == "line":
            for label, (xs, ys) in plot.series.items():
                ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, label=label)
        elif plot.kind == "bars":
            labels = list(plot.series)
            width = 0.8 / max(1, len(labels))
            categories: list[str] = []
            for xs, _ in plot.series.values():
                categories += [str(x) for x in xs if str(x) not in categories]
            for i, label in enumerate(labels):
                xs, ys = plot.series[label]
                where = [categories.index(str(x)) + i * width for x in xs]
                ax.bar(where, ys, width=width, label=label)
            ax.set_xticks([c + width * (len(labels) - 1) / 2 for c in range(len(categories))])
            ax.set_xticklabels(categories)
        else:
            for label, values in plot.series.items():
                xs = sorted(values)
                if xs:
                    ax.plot(xs, [(i + 1) / len(xs) * 100 for i in range(len(xs))], label=label)
        if plot.logy:
            ax.set_yscale("log")
        ax.set_title(plot.title)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        ax.grid(True, alpha=0.3)
        if len(plot.series) > 1 or plot.kind != "line":
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def write(directory: str | os.PathLike[str], bench: str, figures: dict[str, Any], *,
          header: Sequence[str], rows: Sequence[Sequence[Any]],
          plots: Sequence[Plot] = (), notes: Sequence[str] = ()) -> list[Path]:
    """Write the report; returns the paths written (JSON, Markdown, PNGs)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    written = [out / f"{bench}.json"]
    written[0].write_text(json.dumps({"bench": bench, "machine": m, "figures": figures},
                                     indent=2), encoding="utf-8")
    pictures: list[str] = []
    missing = ""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing = "plots skipped: matplotlib is not installed (pip install 'mtdesk[report]')"
    for plot in plots if not missing else ():
        path = out / f"{bench}-{plot.name}.png"
        _draw(plot, path)
        written.append(path)
        pictures.append(f"![{plot.title}]({path.name})")
    md = [f"# mtdesk bench {bench}", "", f"Machine: {_describe(m)}.", "",
          markdown_table(header, rows), ""]
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    md += [missing] if missing else pictures
    md_path = out / f"{bench}.md"
    md_path.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    written.insert(1, md_path)
    return written
