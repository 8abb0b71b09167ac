"""`shears generate`: talk to what `shears export` wrote, through OpenVINO GenAI, streaming to the terminal.

One `LLMPipeline` holds the base IR and every run-time adapter asked for; each prompt runs with each adapter
in turn, switched per call, never reloading the base. Decoding is greedy. The prompt goes in as given, or
as the instruction of a protocol's template (`--template`), the text the adapter was trained on. The
completions go to stdout; which adapter and how fast, to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .artifacts import read_text
from .errors import ShearsError
from .evaluation.openvino_backend import runtime_model
from .export.runtime_adapters import BASE_ALONE
from .protocol import PROTOCOLS

NO_TEMPLATE = "none"


def read_prompts(path: str | os.PathLike) -> list[str]:
    """A text file's non-empty lines, one prompt each."""
    path = Path(path)
    if not path.is_file():
        raise ShearsError(f"prompts file {path} does not exist; give a text file with one prompt per line")
    prompts = [line.strip() for line in read_text(path, "prompts file").splitlines() if line.strip()]
    if not prompts:
        raise ShearsError(f"prompts file {path} has no prompts; give one prompt per line")
    return prompts


def templated(prompt: str, template: str, model: str | os.PathLike | None = None) -> str:
    """The prompt as given (`none`), or as the instruction of protocol `template`'s prompt for this model (MPT has
    its own under `reference`), ready for its response."""
    if template == NO_TEMPLATE:
        return prompt
    from .data.prompts import format_prompt, protocol_for_model

    return format_prompt({"instruction": prompt}, with_response=False, protocol=protocol_for_model(PROTOCOLS[template], model))


def generate_command(args) -> None:
    if bool(args.prompt) == bool(args.prompts):
        raise ShearsError("give --prompt TEXT or --prompts FILE (one prompt per line), one of the two")
    prompts = [args.prompt] if args.prompt else read_prompts(args.prompts)
    model = runtime_model(args.openvino, args.adapter)  # an unknown name fails here, listing the folder's adapters
    names = args.adapter or [next(iter(model.adapters), BASE_ALONE)]
    for prompt in prompts:
        text = templated(prompt, args.template, args.openvino)
        for name in names:
            print(f"[adapter {name}] {prompt}", file=sys.stderr, flush=True)
            result = model.generate(text, name, args.max_new_tokens, streamer=_write)
            print(flush=True)
            metrics = result.perf_metrics
            tokens, tpot = metrics.get_num_generated_tokens(), metrics.get_tpot().mean
            decode = f", then {1e3 / tpot:.1f} tokens/s" if tokens > 1 and tpot > 0 else ""
            print(f"[adapter {name}] {tokens} new tokens, the first after {metrics.get_ttft().mean:.0f} ms{decode}",
                  file=sys.stderr, flush=True)


def _write(chunk: str) -> None:
    """GenAI's streamer: each piece of text as it is decoded (None: keep generating)."""
    sys.stdout.write(chunk)
    sys.stdout.flush()
