"""What a search run leaves behind: `search.json` (every evaluation, the choice, the Pareto front) and `pareto.png`."""

from __future__ import annotations

from pathlib import Path

from .cache import EvaluationCache, Record


def pareto_front(records: list[Record], cache: EvaluationCache) -> list[Record]:
    """The non-dominated records: no other is at least as good in both metric and cost and better in one."""

    def dominates(a: Record, b: Record) -> bool:
        fa, fb = cache.fitness(a), cache.fitness(b)
        return fa >= fb and a.cost <= b.cost and (fa > fb or a.cost < b.cost)

    front = [r for r in records if not any(dominates(o, r) for o in records if o is not r)]
    return sorted(front, key=lambda r: r.cost)


def record_json(record: Record, cache: EvaluationCache, group_names) -> dict:
    return {
        "ranks": list(record.ranks),
        "ranks_by_group": dict(zip(group_names, record.ranks)),
        cache.metric: record.value,
        "cost": record.cost,
        "seconds": round(record.seconds, 4),
    }


def plot_pareto(path: str | Path, cache: EvaluationCache, marked: dict[str, Record], title: str, cost_name: str,
                chosen: Record | None = None) -> None:
    """Metric against cost for every evaluated configuration; the front, the named points and the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(cache.records.values())
    front = pareto_front(records, cache)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    ax.scatter([r.cost for r in records], [r.value for r in records], s=14, c="lightgray", edgecolors="gray", label="evaluated")
    ax.plot([r.cost for r in front], [r.value for r in front], "-", c="tab:blue", lw=1, label="Pareto front")
    for (name, record), marker in zip(marked.items(), "sDv^P<>ph"):
        ax.scatter([record.cost], [record.value], s=70, marker=marker, edgecolors="black", label=name, zorder=3)
    if chosen is not None:
        ax.scatter([chosen.cost], [chosen.value], s=160, marker="*", c="gold", edgecolors="black", label="chosen", zorder=4)
    ax.set_xlabel(cost_name)
    ax.set_ylabel(f"validation {cache.metric}" + (" (%)" if cache.higher_is_better else ""))
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
