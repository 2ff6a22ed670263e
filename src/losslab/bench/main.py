"""`python -m losslab.bench [--quick] [--only 1,4] ...`: run the picked sections, print the table.

Writes the table to stdout and the whole document (every sample, every note) to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from losslab.bench import gpu, http_store, overhead, report, soak, stacked, stock, sweep
from losslab.bench.harness import TARGETS, Context, Sizes, load_average

#: section key -> its module's `run(ctx)`; the GPU section runs after them whatever --only says.
SECTIONS: dict[str, Callable[[Context], None]] = {
    "1": overhead.run,
    "2": stock.run,
    "3": http_store.run,
    "4": sweep.run,
    "5": report.run,
    "6": soak.run,
    "7": stacked.run,
}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1).strip() if found else cpu
    load = load_average()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_start": load,
    }


def render(rows: list[dict[str, Any]], header: str) -> str:
    head = ("#", "figure", "value", "target", "status", "load", "detail")
    body = []
    for r in rows:
        if r["value"] is None:
            value = "-"
        elif r["unit"] == "points":
            value = f"{int(r['value'])} points"
        else:
            value = f"{r['value']:.3g}{r['unit']}"
        load = f"{r['load'][0]:.1f}" if r.get("load") else "-"
        body.append((r["id"], r["figure"], value, r["target"] or "-", r["status"], load, r["detail"]))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head[:-1])]
    lines = [header, ""]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    lines.append(fmt(head[:-1]) + "  " + head[-1])
    lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    lines += [fmt(b[:-1]) + "  " + b[-1] for b in body]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    d = Sizes()
    p = argparse.ArgumentParser(
        prog="python -m losslab.bench",
        description="LossLab benchmark (tracking overhead, sweep throughput): ratios measured side by side "
        "in one process (alternating, median of paired rounds). Writes a table to stdout and JSON to --out.",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"steps of the small MLP (default {d.steps})")
    p.add_argument(
        "--big-steps", type=int, default=d.big_steps, help=f"steps of the 4x1024 MLP (default {d.big_steps})"
    )
    p.add_argument(
        "--repeats", type=int, default=d.repeats, help=f"A/B rounds per ratio (default {d.repeats})"
    )
    p.add_argument(
        "--compare-steps",
        type=int,
        default=d.compare_steps,
        help=f"steps of the small MLP in sections 2 and 3 (default {d.compare_steps})",
    )
    p.add_argument("--sweep-jobs", type=int, default=d.sweep_jobs, help="jobs in the section-4 sweep")
    p.add_argument("--sweep-steps", type=int, default=d.sweep_steps, help="max_steps of each sweep job")
    p.add_argument(
        "--ceiling-steps", type=int, default=d.ceiling_steps, help="steps of each raw loop of the ceiling"
    )
    p.add_argument("--report-runs", type=int, default=d.report_runs, help="runs in the section-5 experiment")
    p.add_argument("--report-steps", type=int, default=d.report_steps, help="steps per synthetic run")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads, the same for every variant")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. --only 1,3")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (figures not meaningful)")
    p.add_argument("--out", type=Path, default=Path("bench-results/latest.json"), help="JSON output path")
    return p


def sizes_from(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(
            steps=60,
            big_steps=4,
            compare_steps=60,
            repeats=1,
            sweep_jobs=2,
            sweep_steps=10,
            ceiling_steps=40,
            report_runs=6,
            report_steps=60,
            soak_jobs=4,
            soak_steps=10,
            threads=args.threads,
            quick=True,
        )
    return Sizes(
        steps=args.steps,
        big_steps=args.big_steps,
        compare_steps=args.compare_steps,
        repeats=args.repeats,
        sweep_jobs=args.sweep_jobs,
        sweep_steps=args.sweep_steps,
        ceiling_steps=args.ceiling_steps,
        report_runs=args.report_runs,
        report_steps=args.report_steps,
        threads=args.threads,
    )


def run(sizes: Sizes, only: Sequence[str], out: Path | None) -> dict[str, Any]:
    """Run the picked sections; return (and write to `out`) the JSON document."""
    torch.set_num_threads(sizes.threads)
    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="losslab-bench-") as tmp:
        ctx = Context(sizes, Path(tmp))
        for key, section in SECTIONS.items():
            if key in only:
                began = time.perf_counter()
                print(f"section {key} ... (load {load_average()})", end=" ", file=sys.stderr, flush=True)
                section(ctx)
                print(f"{time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
        gpu.run(ctx)
    info["loadavg_end"] = load_average()
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python -m losslab.bench", *sys.argv[1:]]),
        "machine": info,
        "sizes": sizes.__dict__,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": ctx.rows,
        "sections": ctx.results,
        "targets": {k: {"op": op, "bound": b, "unit": u, "what": w} for k, (op, b, u, w) in TARGETS.items()},
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        print(
            f"Error: unknown section(s) {', '.join(unknown)}; accepted: {', '.join(SECTIONS)}.",
            file=sys.stderr,
        )
        return 2
    sizes = sizes_from(args)
    doc = run(sizes, only, args.out)
    m = doc["machine"]
    header = (
        f"LossLab bench {doc['date']}  {m['cpus']} CPUs ({m['cpu']}), torch {m['torch']}, "
        f"{sizes.threads} thread(s), {sizes.repeats} paired round(s), load {m['loadavg_start']} -> "
        f"{m['loadavg_end']}, {doc['seconds']:.0f}s"
        + ("\n--quick: smoke-run sizes; the figures say nothing about the targets" if sizes.quick else "")
    )
    print(render(doc["rows"], header))
    if args.out is not None:
        print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
