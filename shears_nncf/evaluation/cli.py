"""`shears evaluate` (its flags made an `EvaluateConfig` for `stage.evaluate_model`) and `shears score` (predictions
from any runtime, read by the task's extractor)."""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import read_text
from ..errors import ShearsError
from ..protocol import PROTOCOLS, SHEARS, Protocol
from .stage import EvaluateConfig, evaluate_model


def evaluate_command(args) -> None:
    evaluate_model(EvaluateConfig.from_args(args), args.output)


def score_command(args) -> None:
    """Score {"prediction", "answer"} lines with the task's extractor; --json prints only the summary,
    --output writes every line's verdict ({"line", "extracted", "correct"}, JSONL)."""
    from ..data.tasks import get_task

    task = get_task(args.task)
    verdicts = _verdicts(Path(args.predictions), task, PROTOCOLS[args.protocol or SHEARS])
    correct = sum(v["correct"] for v in verdicts)
    if args.output:
        from ..artifacts import write_text

        write_text(args.output, "".join(json.dumps(v) + "\n" for v in verdicts))
    if args.json:
        print(json.dumps({"task": task.name, "accuracy": correct / len(verdicts), "count": len(verdicts)}))
    else:
        print(f"{task.name}: accuracy {100 * correct / len(verdicts):.1f}% ({correct}/{len(verdicts)})")


def _verdicts(path: Path, task, protocol: Protocol) -> list[dict]:
    """Each non-blank line's {"line", "extracted", "correct"}; a missing file, a line that is not such JSON, or no
    line at all is one error naming what was expected."""
    from .answers import score_prediction

    expected = 'expected JSONL lines {"prediction": str, "answer": str}'
    if not path.is_file():
        raise ShearsError(f"predictions file {path} does not exist")
    verdicts = []
    for number, line in enumerate(read_text(path, "predictions file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ShearsError(f"{path} line {number} is not JSON; {expected}") from None
        if not isinstance(row, dict) or not isinstance(row.get("prediction"), str) or "answer" not in row:
            raise ShearsError(f"{path} line {number} lacks \"prediction\" (a string) or \"answer\"; {expected}")
        extracted, right = score_prediction(task, row["prediction"], str(row["answer"]), protocol)
        verdicts.append({"line": number, "extracted": extracted, "correct": right})
    if not verdicts:
        raise ShearsError(f"{path} has no predictions; {expected}")
    return verdicts
