"""The benchmark's tables: one line per measured row, and which deployment is fastest at which accuracy.

Pure functions of the report `run.benchmark` returns (and of `shears evaluate` results), so a saved bench.json
renders again without running anything.
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_json
from ..errors import ShearsError
from ..tables import text_table


def sparse_path(row: dict, amx: bool) -> str:
    """Whether OpenVINO's sparse-weights kernels ran (per phase), and if not, the likely reason."""
    if row["backend"] == "pytorch":
        return "n/a (eager)"
    ran = {phase: (sum(n for k, n in kernels.items() if "sparse" in k), sum(kernels.values()))
           for phase, kernels in row.get("fc_kernels", {}).items()}
    if any(sparse for sparse, _ in ran.values()):
        return "yes: " + ", ".join(f"{phase} {sparse}/{total} FC" for phase, (sparse, total) in ran.items())
    if row.get("status") != "ok":
        return "unknown (run failed)"
    if row["sparse_rate"] is None:
        return "no (rate not set)"
    if not amx:
        return "no (no AMX on this CPU)"
    if row["backend"] == "genai":
        return "not read (GenAI hides its compiled model)"
    return "no (needs INT8 weights+activations)" if row["weights"] != "w8a8" else "no (layers below the rate)"


def _adapter_cell(row: dict) -> str:
    """The adapter a row applies: its ranks (highest first) and parameters; "-" for none (base, merged)."""
    if not row.get("adapter_ranks"):
        return "-"
    ranks = row["adapter_ranks"]
    rank = f"r {ranks[0]}" if len(ranks) == 1 else f"r {ranks[-1]}-{ranks[0]}"
    return f"{rank}, {row['adapter_parameters'] / 1e6:.2f}M params"


def _route_cell(row: dict) -> str:
    return f"runtime: {row['adapter']}" if row.get("adapter") else row.get("route", "-")


def format_table(report: dict) -> str:
    """One line per row: what it deploys (route, adapter ranks and size), prefill (TTFT, prompt tokens/s) and
    decode (TPOT, tokens/s; relative to the baked adapter at the same rate when the run has one) apart."""
    amx = report["cpu"]["amx"]
    header = ["model", "route", "adapter", "backend", "weights", "rate", "prec", "TTFT ms", "prefill tok/s",
              "TPOT ms", "decode tok/s", "vs baked", "tok/s", "peak RSS MB", "size MB", "FC kernels (decode)",
              "sparse path"]
    baked = {row["sparse_rate"]: row["decode_tokens_per_s"] for row in reversed(report["rows"])
             if row.get("route") == "baked" and row.get("status") == "ok" and row.get("decode_tokens_per_s")}
    lines = []
    for row in report["rows"]:
        ok = row.get("status") == "ok"
        kernels = ", ".join(f"{k}x{n}" for k, n in sorted(row.get("fc_kernels", {}).get("decode", {}).items()))
        decode = row.get("decode_tokens_per_s") if ok else None
        reference = baked.get(row["sparse_rate"])
        lines.append([
            Path(row["folder"]).name, _route_cell(row), _adapter_cell(row), row["backend"], row["weights"],
            "-" if row["sparse_rate"] is None else f"{row['sparse_rate']:g}",
            row.get("precision", "-").replace("<Type: '", "").replace("'>", ""),
            f"{row['ttft_ms']:.1f}" if ok else "-",
            f"{row['prefill_tokens_per_s']:.0f}" if ok and row.get("prefill_tokens_per_s") else "-",
            f"{row['tpot_ms']:.1f}" if ok and row["tpot_ms"] is not None else "-",
            f"{decode:.1f}" if decode else "-",
            f"{decode / reference:.2f}x" if decode and reference else "-",
            f"{row['tokens_per_s']:.1f}" if ok else row["status"],
            f"{row['peak_rss_mb']:.0f}" if ok else "-",
            f"{row['size_mb']:.0f}",
            kernels or "-", sparse_path(row, amx),
        ])
    cpu = report["cpu"]
    title = f"CPU: {cpu['model']} ({cpu['cores']} cores), AMX: {'yes' if amx else 'no'}; " \
            f"{len(report['prompts'])} prompts x {report['max_new_tokens']} new tokens, batch 1, greedy, " \
            f"threads: {report['rows'][0]['threads'] or 'default'}; median of {report.get('rounds', 1)} interleaved " \
            f"round(s); load average before: {report['load_average']}"
    return "\n".join([title, *text_table(header, lines, rule=True)])


def accuracy_results(spec: str, folders: list[str]) -> tuple[str, dict]:
    """`DIR=RESULTS.json` -> (DIR, the results of `shears evaluate --output`), checked before anything runs."""
    folder, sep, path = spec.partition("=")
    if not sep or folder not in folders:
        raise ShearsError(f"--accuracy {spec!r}: give DIR=RESULTS.json with DIR one of the benchmarked folders "
                          f"({', '.join(folders)})")
    results = read_json(path, what="accuracy results")
    if not isinstance(results, dict) or "average" not in results or not results.get("tasks"):
        raise ShearsError(f"--accuracy {path}: not a results file of `shears evaluate --output` (no tasks and average)")
    return folder, results


def format_choice(report: dict, accuracy: dict[str, dict]) -> str:
    """Which deployment is fastest at which accuracy: the rows with an accuracy, fastest first.

    `accuracy` maps a folder (as given) to its `shears evaluate` results ("average" over "tasks"). A row
    is marked where no other row is at least as accurate and faster: the ones worth choosing between."""
    rows = [r for r in report["rows"] if r.get("status") == "ok" and r["folder"] in accuracy]
    if not rows:
        return "no accuracy results for a benchmarked folder that ran"
    rows.sort(key=lambda r: -r["tokens_per_s"])
    lines = []
    for row in rows:
        acc = accuracy[row["folder"]]["average"]
        beaten = any(o["tokens_per_s"] > row["tokens_per_s"] and accuracy[o["folder"]]["average"] >= acc for o in rows)
        rate = "" if row["sparse_rate"] is None else f", rate {row['sparse_rate']:g}"
        lines.append((f"{Path(row['folder']).name} ({row['weights']}{rate})", f"{row['tokens_per_s']:.1f}",
                      f"{row['size_mb']:.0f}", f"{100 * acc:.1f}", "" if beaten else "yes"))
    tasks = sorted({t for r in rows for t in accuracy[r["folder"]]["tasks"]})
    header = ("deployment", "tok/s", "size MB", "accuracy (%)", "best trade-off")
    return "\n".join([f"Which deployment is fastest at which accuracy (average over {', '.join(tasks)}):",
                      *text_table(header, lines)])
