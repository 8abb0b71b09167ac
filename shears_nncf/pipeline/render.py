"""summary.md: a run's `RunSummary` as Markdown that tells a newcomer what happened.

Each stage's figures, the scores (by generation one column per evaluation; by log-likelihood the dense, sparse and
adapted rows on the same documents with their paired differences), the deployed forms as `shears bench` measured
them, and the `shears generate` line to try the IR.
"""

from __future__ import annotations

from pathlib import Path

from ..tables import markdown_table
from .summary import RunSummary

_MODEL_HEADER = {"pytorch": "PyTorch", "openvino": "OpenVINO IR"}


def summary_markdown(summary: RunSummary) -> str:
    sp, tr, sub, ov = summary.sparsity, summary.training, summary.sub_adapter, summary.openvino
    lines = [
        "# shears run summary",
        "",
        *([f"Demonstration size ({', '.join(summary.scaled_down_by)} set): the figures show that every stage "
           "works, not the method's accuracy at scale.", ""] if summary.demonstration_size else []),
        f"- Sparsity ({sp.method}): decoder weights {sp.decoder_sparsity:.1%} zero; "
        f"{sp.nonzero_parameters:,} non-zero of {sp.total_parameters:,} parameters",
        f"- Training: {tr.optimizer_steps} optimizer steps on {tr.examples} examples, "
        f"loss {tr.first_loss:.3f} -> {tr.last_loss:.3f}",
        f"- Sub-adapter ({sub.strategy}): {_rank_counts(sub.ranks)}; {int(sub.cost):,} {sub.cost_name}",
        *([f"- OpenVINO IR ({ov.weights} weights, adapter {'merged' if ov.adapter_merged else 'unmerged'}): base linears "
           f"{ov.ir_sparsity['base_sparsity']:.1%} zero as counted in the IR ({ov.ir_sparsity['base_zeros']:,} "
           f"of {ov.ir_sparsity['base_params']:,} weights); {ov.ir_bytes:,} bytes of weights"] if ov else []),
        *[f"- Scored ({name}): {s.what}" for name, s in summary.scored.items()],
        "",
        *_accuracy_table(summary),
        *_comparison_section(summary),
        *_deployed_section(summary),
        *(["## Try it", "", "The exported IR, through OpenVINO GenAI (greedy, streamed):", "",
           "```", summary.try_command, "```", ""] if summary.try_command else []),
        "## Time",
        "",
        *markdown_table(["stage", "seconds (last run)"], summary.stage_seconds.items()),
        "",
    ]
    return "\n".join(lines)


def _accuracy_table(summary: RunSummary) -> list[str]:
    """One column per evaluation by generation the run made (log-likelihood has the comparison's table): the first
    column's tasks, the others' beside them."""
    headlines = [summary.accuracy, *summary.also_scored.values()]
    shown = [(s, acc) for s, acc in zip(summary.scored.values(), headlines) if s.scoring == "generate"]
    if not shown:
        return []
    several = len({s.model for s, _ in shown}) > 1
    headers = ["accuracy, generation (%)" + (f", {_MODEL_HEADER[s.model]}" if several else "") for s, _ in shown]
    rows = [[name, *(f"{100 * acc[name]:.1f}" if name in acc else "-" for _, acc in shown)] for name in shown[0][1]]
    return [*markdown_table(["task", *headers], rows), ""]


def _comparison_section(summary: RunSummary) -> list[str]:
    """The dense, sparse and adapted models by log-likelihood on the same documents, and their paired differences."""
    c = summary.comparison
    if not c:
        return []
    counts = set(c.documents.values())
    documents = (f"the first {counts.pop()} documents of each task" if len(counts) == 1 else
                 "the first " + ", ".join(f"{n} of {task}" for task, n in c.documents.items()) + " documents")
    size = ("; a demonstration size: an interval that spans 0 says that this many documents cannot tell the two "
            "apart" if "evaluate.limit" in summary.scaled_down_by else "")
    labels = {row.model: row.label for row in c.rows}
    return [
        "## Log-likelihood, on the same documents",
        "",
        "Accuracy (%) by log-likelihood through lm-evaluation-harness (`shears evaluate --scoring loglik`: "
        f"acc_norm, or acc where lm-eval defines no acc_norm), on {documents}, the same for every row{size}.",
        "",
        *markdown_table(["model", *(f"{t} ({c.metrics[t]})" for t in c.tasks), "average ± s.e."],
                        [[row.label, *(f"{100 * row.tasks[t]:.1f}" for t in c.tasks),
                          f"{row.average:.1f} ± {row.se:.1f}"] for row in c.rows]),
        "",
        "Paired differences, in points, with their 95% bootstrap intervals (the documents resampled, the same draw "
        "for both rows):",
        "",
        *[f"- {labels[d.first]} minus {labels[d.second]}: {d.diff:+.1f} [{d.low:+.1f}, {d.high:+.1f}], {d.measures}"
          for d in c.differences],
        "",
    ]


def _deployed_section(summary: RunSummary) -> list[str]:
    """What `shears bench` measured of each deployed form, beside its size."""
    if not summary.cpu:
        return []
    return [
        "## Deployed forms",
        "",
        f"CPU: {summary.cpu['model']}, AMX: {'yes' if summary.cpu['amx'] else 'no'}. Non-zero parameters: the "
        "sparse base's and the adapter's; size: the model files on disk.",
        "",
        *markdown_table(
            ["model", "route", "backend", "weights", "sparse rate", "non-zero parameters", "size MB", "decode tok/s",
             "TTFT ms", "peak RSS MB", "sparse path"],
            [[Path(r.folder).name, r.route or "-", r.backend, r.weights, r.sparse_rate or "-",
              f"{r.nonzero_parameters:,}", _number(r.size_mb), _number(r.decode_tokens_per_s),
              _number(r.ttft_ms), _number(r.peak_rss_mb), r.sparse_path] for r in summary.bench]),
        "",
    ]


def _rank_counts(ranks: list[int]) -> str:
    counts = {rank: ranks.count(rank) for rank in sorted(set(ranks), reverse=True)}
    return ", ".join(f"{n} groups at rank {rank}" for rank, n in counts.items())


def _number(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "-"
