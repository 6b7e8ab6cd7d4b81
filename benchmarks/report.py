"""Turn a pytest-benchmark JSON file from ``benchmarks/`` into BENCHMARKS.md: per case the median time and the
ratios ours/forward, grad-cam/ours and torch-cam/ours, measured in the same run, and whether each target holds.

Usage: ``python benchmarks/report.py bench.json [-o BENCHMARKS.md] [--command "..."]``
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

GRADIENT = {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"}
TARGETS = (
    "Targets (ratios within one run): gradient methods <= 1.15x the bare forward; cam <= 1.05x; >= 2.5x faster "
    "than pytorch-grad-cam on its Grad-CAM family; never slower than torch-cam on a shared method; Score-CAM "
    ">= 2x faster than both."
)


def load(path: Path) -> dict[str, Any]:
    """Read the benchmark JSON and index medians by (group, lib, method)."""
    data = json.loads(path.read_text())
    cases: dict[tuple, dict[str, float]] = defaultdict(dict)
    info: dict[tuple, dict[str, Any]] = {}
    for bench in data["benchmarks"]:
        extra = bench.get("extra_info", {})
        if "lib" not in extra:
            continue
        key = (extra["model"], extra["batch"], extra.get("device", "cpu"))
        cases[key][f"{extra['lib']}:{extra['method']}"] = bench["stats"]["median"]
        info[key] = extra
    return {"cases": cases, "info": info, "machine": data.get("machine_info", {}), "raw": data}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def verdicts(method: str, t: dict[str, float | None]) -> list[str]:
    """Which targets a method's row meets or misses."""
    out = []
    ours, fwd, gc, tc = t["ours"], t["forward"], t["grad-cam"], t["torch-cam"]
    if ours is None:
        return out
    if fwd is not None and method in GRADIENT | {"cam"}:
        limit = 1.05 if method == "cam" else 1.15
        out.append(f"{'ok' if ours / fwd <= limit else 'MISSED'} <= {limit}x fwd")
    if gc is not None and method in GRADIENT:
        out.append(f"{'ok' if gc / ours >= 2.5 else 'MISSED'} >= 2.5x vs grad-cam")
    if tc is not None:
        out.append(f"{'ok' if tc / ours >= 1.0 else 'MISSED'} not slower than torch-cam")
    if method == "scorecam":
        for name, other in (("grad-cam", gc), ("torch-cam", tc)):
            if other is not None:
                out.append(f"{'ok' if other / ours >= 2.0 else 'MISSED'} >= 2x vs {name}")
    return out


def render(loaded: dict[str, Any], command: str, notes: str = "") -> str:
    """The markdown page."""
    m = loaded["machine"]
    raw = loaded["raw"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {m.get('cpu', {}).get('brand_raw', platform.processor() or 'unknown CPU')}, "
        f"{m.get('cpu', {}).get('count', '?')} cores; Python {m.get('python_version', platform.python_version())}; "
        f"run {raw.get('datetime', '')}.",
        "",
        f"Reproduce: `{command}`",
        "",
        TARGETS,
        "",
    ]
    by_device: dict[str, list[tuple]] = defaultdict(list)
    for key in sorted(loaded["cases"]):
        by_device[key[2]].append(key)
    for device, keys in by_device.items():
        lines += [f"## {device}", "", "| model | batch | method | layer | ours ms | forward ms | ours/forward | "
                  "grad-cam ms | grad-cam/ours | torch-cam ms | torch-cam/ours | targets |",
                  "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for key in keys:
            times = loaded["cases"][key]
            methods = sorted({k.split(":", 1)[1] for k in times if not k.startswith("forward")})
            fwd = times.get("forward:forward")
            for method in methods:
                t = {lib: times.get(f"{lib}:{method}") for lib in ("ours", "grad-cam", "torch-cam")}
                t["forward"] = fwd
                lines.append(
                    f"| {key[0]} | {key[1]} | {method} | {loaded['info'][key].get('layer', '')} | {_ms(t['ours'])} | "
                    f"{_ms(fwd)} | {_ratio(t['ours'], fwd)} | {_ms(t['grad-cam'])} | {_ratio(t['grad-cam'], t['ours'])} | "
                    f"{_ms(t['torch-cam'])} | {_ratio(t['torch-cam'], t['ours'])} | {'; '.join(verdicts(method, t))} |")
        lines.append("")
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--command", default="pytest benchmarks --benchmark-only --benchmark-json=bench.json")
    parser.add_argument("--notes", type=Path, help="markdown appended under 'Notes' (why a target is missed)")
    args = parser.parse_args(argv)
    notes = args.notes.read_text() if args.notes else ""
    args.output.write_text(render(load(args.json), args.command, notes))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
