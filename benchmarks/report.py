"""Turn a pytest-benchmark JSON file from ``benchmarks/`` into BENCHMARKS.md: per case the median times of ours and
of everything timed next to it in the same test (bare forward, pytorch-grad-cam, torch-cam, one class, plain
``compute_cam``), the ratios, and whether each target of the suite holds.

Usage: ``python benchmarks/report.py bench.json [more.json ...] [-o BENCHMARKS.md] [--command "..."]
[--notes benchmarks/notes.md]``; the rows of several runs (e.g. the full suite and ``test_quality_cost.py``, which
runs with one torch thread) go on one page, under the first run's machine; the quality section names the run its
rows come from.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import Counter
from pathlib import Path
from typing import Any, Callable

GRADIENT = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
ORDER = ["cam", *GRADIENT, "eigencam", "scorecam", "ablationcam"]
TARGETS = [
    ("fwd", "every gradient method <= 1.15x the bare forward; cam <= 1.05x"),
    ("grad-cam", ">= 2.5x faster than pytorch-grad-cam on its Grad-CAM family"),
    ("torch-cam", "never slower than torch-cam on a shared method"),
    ("scorecam", "Score-CAM >= 2x faster than both"),
    ("classes", "maps for 10 classes of one image <= 1.5x one class"),
    ("assert", "assert_attends_to <= 1.1x compute_cam"),
    ("tokens", "Grad-CAM on a token layer <= 1.05x its limit (bare forward + backward after the layer)"),
    ("tokens-gc", "Grad-CAM on a token layer >= 2x faster than pytorch-grad-cam with its reshape_transform"),
    ("quality", "assert_sane / assert_faithful / assert_stable <= 1.2x the least work their definitions need"),
    ("quality-measured", "assert_sane / assert_stable <= 1.2x that least work plus the similarity measurements their "
                         "definitions name, made as the package makes them"),
]


def load(path: Path) -> dict[str, Any]:
    """Read the benchmark JSON: one row per benchmark with its extra_info."""
    data = json.loads(path.read_text())
    run = _run(data)
    rows = [dict(b["extra_info"], name=b["name"], run=run) for b in data["benchmarks"]
            if "case" in b.get("extra_info", {})]
    return {"rows": rows, "machine": data.get("machine_info", {}), "datetime": data.get("datetime", ""), "run": run}


def _run(data: dict[str, Any]) -> str:
    """Which machine, when and which commit one JSON was measured on, for the sections its rows fill."""
    cpu = data.get("machine_info", {}).get("cpu", {})
    commit = data.get("commit_info", {})
    code = f"; commit {str(commit['id'])[:7]}{' with uncommitted changes' if commit.get('dirty') else ''}" \
        if commit.get("id") else ""
    return f"{cpu.get('brand_raw', 'unknown CPU')}, {cpu.get('count', '?')} cores; run {data.get('datetime', '?')}{code}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _check(ok: bool, text: str) -> str:
    return f"{'ok' if ok else '**MISSED**'} {text}"


def verdicts(row: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target key, met, text) for each target that applies to a row."""
    out: list[tuple[str, bool, str]] = []
    case, method = row.get("case"), row.get("method")
    if case == "map":
        fwd = row.get("ours_over_forward")
        if fwd is not None and (method in GRADIENT or method == "cam"):
            limit = 1.05 if method == "cam" else 1.15
            out.append(("fwd", fwd <= limit, f"<= {limit}x fwd"))
        gc = row.get("grad-cam_over_ours")
        if gc is not None and method in GRADIENT:
            out.append(("grad-cam", gc >= 2.5, ">= 2.5x vs grad-cam"))
        tc = row.get("torch-cam_over_ours")
        if tc is not None:
            out.append(("torch-cam", tc >= 1.0, "not slower than torch-cam"))
        if method == "scorecam":
            for lib, value in (("grad-cam", gc), ("torch-cam", tc)):
                if value is not None:
                    out.append(("scorecam", value >= 2.0, f">= 2x vs {lib}"))
    elif case == "classes":
        out.append(("classes", row["ours_s"] <= 1.5 * row["one_class_s"], "<= 1.5x one class"))
    elif case == "assert":
        out.append(("assert", row["ours_s"] <= 1.1 * row["compute_cam_s"], "<= 1.1x compute_cam"))
    elif case == "tokens":
        out.append(("tokens", row["ours_over_limit"] <= 1.05, "<= 1.05x its limit"))
        if row.get("grad-cam_over_ours") is not None:
            out.append(("tokens-gc", row["grad-cam_over_ours"] >= 2.0, ">= 2x vs grad-cam + reshape"))
    elif case == "quality":
        out.append(("quality", row["ours_over_least"] <= 1.2, "<= 1.2x least work"))
        if row.get("ours_over_measured") is not None:
            out.append(("quality-measured", row["ours_over_measured"] <= 1.2, "<= 1.2x with its measurements"))
    return out


def _targets(row: dict[str, Any]) -> str:
    return "; ".join(_check(ok, text) for _, ok, text in verdicts(row))


def _map_key(row: dict[str, Any]) -> tuple:
    model = row["model"]
    return (row.get("device", "cpu"), model, row["batch"], ORDER.index(row["method"]) if row["method"] in ORDER else 99)


def _case(rows: list[dict[str, Any]], case: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["case"] == case]


def _table(heading: str, columns: list[tuple[str, bool]], rows: list[dict[str, Any]],
           cells: Callable[[dict[str, Any]], list[Any]], intro: str = "") -> list[str]:
    """A section of the page: its heading, an optional line, and a markdown table of one line per row
    (``columns``: each column's name and whether it is a number, aligned right); nothing when there are no rows."""
    if not rows:
        return []
    out = [f"## {heading}", ""] + ([intro, ""] if intro else [])
    out += ["| " + " | ".join(name for name, _ in columns) + " |",
            "| " + " | ".join("---:" if number else "---" for _, number in columns) + " |"]
    out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
    return out + [""]


def render(loaded: dict[str, Any], command: str, notes: str = "") -> str:
    """The markdown page."""
    m = loaded["machine"]
    rows = loaded["rows"]
    versions = m.get("camcheck_versions", {})
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {m.get('cpu', {}).get('brand_raw', platform.processor() or 'unknown CPU')}, "
        f"{m.get('cpu', {}).get('count', '?')} cores; Python {m.get('python_version', platform.python_version())}"
        + "".join(f"; {k} {v}" for k, v in versions.items()) + f"; run {loaded['datetime']}"
        + (" (the first JSON's; a section measured in another run names its own)."
           if len({r["run"] for r in rows}) > 1 else "."),
        "",
        f"Reproduce: `{command}`",
        "",
        "Every ratio comes from one test: the things compared are timed there in turn, round by round "
        "(see `benchmarks/test_cost.py`), so machine drift between tests cancels out. Times are each side's "
        "fastest round (the JSON also holds the medians). `x/ours` above 1 means ours is faster.",
        "",
        "## Targets",
        "",
    ]
    tally: dict[str, Counter] = {key: Counter() for key, _ in TARGETS}
    for row in rows:
        for key, ok, _ in verdicts(row):
            tally[key]["ok" if ok else "missed"] += 1
    for key, text in TARGETS:
        count = tally[key]
        total = count["ok"] + count["missed"]
        status = "no rows in this JSON (see Notes for figures measured in separate runs)" if total == 0 else f"met in {count['ok']} of {total} rows" + (
            "" if count["missed"] == 0 else f", **missed in {count['missed']}**")
        lines.append(f"- {text}: {status}")
    lines.append("")

    maps = sorted((r for r in rows if r["case"] == "map"), key=_map_key)
    for device in sorted({r.get("device", "cpu") for r in maps}):
        lines += _table(f"Maps, {device}", [
            ("model", False), ("batch", True), ("method", False), ("layer", False), ("ours ms", True),
            ("forward ms", True), ("ours/forward", True), ("grad-cam ms", True), ("grad-cam/ours", True),
            ("torch-cam ms", True), ("torch-cam/ours", True), ("targets", False),
        ], [r for r in maps if r.get("device", "cpu") == device], lambda r: [
            r["model"], r["batch"], r["method"], r.get("layer", ""), _ms(r["ours_s"]), _ms(r.get("forward_s")),
            _x(r.get("ours_over_forward")), _ms(r.get("grad-cam_s")), _x(r.get("grad-cam_over_ours")),
            _ms(r.get("torch-cam_s")), _x(r.get("torch-cam_over_ours")), _targets(r)])
    if not any(r.get("device", "cpu").startswith("cuda") for r in maps):
        lines += ["## Maps, cuda", "",
                  "Not measured: no GPU was available for this run. Reproduce on a GPU with "
                  "`CAMCHECK_BENCH_DEVICE=cuda CAMCHECK_BENCH_MODELS=resnet50 CAMCHECK_BENCH_BATCHES=1,64 "
                  "pytest benchmarks --benchmark-only --benchmark-json=cuda.json` and again with "
                  "`CAMCHECK_BENCH_AUTOCAST=bf16`.", ""]
    lines += _table("Several classes of one image", [
        ("model", False), ("classes", True), ("one call ms", True), ("one class ms", True), ("ratio", True),
        ("forward ms", True), ("target", False),
    ], sorted(_case(rows, "classes"), key=lambda r: r["model"]), lambda r: [
        r["model"], r["classes"], _ms(r["ours_s"]), _ms(r["one_class_s"]), _x(r["ours_s"] / r["one_class_s"]),
        _ms(r.get("forward_s")), _targets(r)])
    lines += _table("assert_attends_to against compute_cam", [
        ("model", False), ("assert ms", True), ("compute_cam ms", True), ("ratio", True), ("target", False),
    ], sorted(_case(rows, "assert"), key=lambda r: r["model"]), lambda r: [
        r["model"], _ms(r["ours_s"]), _ms(r["compute_cam_s"]), _x(r["ours_s"] / r["compute_cam_s"]), _targets(r)])
    lines += _table("Grad-CAM on transformer token layers", [
        ("model", False), ("batch", True), ("layer", False), ("layout", False), ("ours ms", True), ("limit ms", True),
        ("ours/limit", True), ("forward ms", True), ("grad-cam ms", True), ("grad-cam/ours", True),
        ("targets", False),
    ], sorted(_case(rows, "tokens"), key=lambda r: (r["model"], r["batch"])), lambda r: [
        r["model"], r["batch"], r["layer"], r.get("layout", ""), _ms(r["ours_s"]), _ms(r["limit_s"]),
        _x(r["ours_over_limit"]), _ms(r.get("forward_s")), _ms(r.get("grad-cam_s")), _x(r.get("grad-cam_over_ours")),
        _targets(r)])
    quality = sorted(_case(rows, "quality"), key=lambda r: (r["model"], r["check"]))
    threads = ", ".join(str(t) for t in sorted({r.get("threads") for r in quality if r.get("threads")}))
    lines += _table("Explanation-quality checks against the least work they need", [
        ("model", False), ("check", False), ("least work", False), ("ours ms", True), ("least ms", True),
        ("ratio", True), ("least + measurements ms", True), ("ratio", True), ("target", False),
    ], quality, lambda r: [
        r["model"], r["check"], r["least"], _ms(r["ours_s"]), _ms(r["least_s"]), _x(r["ours_over_least"]),
        _ms(r.get("measured_s")), _x(r.get("ours_over_measured")), _targets(r)],
        intro=f"Measured on {'; and on '.join(sorted({r['run'] for r in quality}))}; torch threads: "
              f"{threads or 'not recorded'}.")
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--command", default="pytest benchmarks --benchmark-only --benchmark-json=bench.json && "
                                             "python benchmarks/report.py bench.json --notes benchmarks/notes.md")
    parser.add_argument("--notes", type=Path, help="markdown appended under 'Notes' (why a target is missed)")
    args = parser.parse_args(argv)
    notes = args.notes.read_text() if args.notes else ""
    loaded = load(args.json[0])
    for more in args.json[1:]:
        loaded["rows"] += load(more)["rows"]
    args.output.write_text(render(loaded, args.command, notes))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
