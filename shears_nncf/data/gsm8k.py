"""GSM8K as the reference trains and scores MPT on it (`Shears/run_gsm8k.py`, `get_examples`).

The reference reads `load_dataset("gsm8k", "main", split=...)` ("train" to train, "test" to score) and turns each
row into a record:
the question is the instruction, the worked solution with its newlines made spaces and "####" written
"The answer is" is the output, and the number after "####" (commas dropped) is the answer.
"""

from __future__ import annotations

import re

from ..errors import ShearsError

SOURCE = "gsm8k"  # the data name the MPT configs use
DATASET, CONFIG = "openai/gsm8k", "main"  # the hub id "gsm8k" the reference names now lives here
_ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")  # run_gsm8k.py's ANS_RE


def gsm8k_record(row: dict) -> dict:
    """One hub row {"question", "answer"} as the reference's training record."""
    match = _ANSWER.search(row["answer"])
    return {
        "instruction": row["question"],
        "input": "",
        "output": row["answer"].replace("\n", " ").replace("####", "The answer is"),
        "answer": match.group(1).strip().replace(",", "") if match else "[invalid]",
    }


def gsm8k_records(split: str) -> list[dict]:
    """The 7,473 training (split "train") or 1,319 test ("test") records, in the hub's order, as `get_examples(split)`
    makes them: run_gsm8k.py trains MPT on the one and scores it on the other. Offline fails with one line."""
    import datasets

    try:
        rows = datasets.load_dataset(DATASET, CONFIG, split=split)
    except Exception as e:  # offline, DNS, HTTP errors: all mean the same to the user
        message = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ShearsError(f"GSM8K's {split} split comes from the hub ({DATASET}, {CONFIG}), which cannot be reached "
                          f"here ({message}); give --data a JSON file of LLM-Adapters records") from None
    return [gsm8k_record(row) for row in rows]
