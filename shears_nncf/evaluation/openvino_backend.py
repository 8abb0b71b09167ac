"""Generation with an exported OpenVINO IR, so accuracy is measured on what is deployed (decoding as the
protocol says, like `TorchGenerator`), and lm-eval's model on the IR for log-likelihood scoring."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ShearsError
from ..export import IR_XML
from ..protocol import Protocol, get_protocol


def check_ir_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not (folder / IR_XML).is_file():
        raise ShearsError(f"{folder} has no {IR_XML}; give a folder written by `shears export`")
    return folder


def openvino_lm(folder: str | os.PathLike, batch_size: int):
    """lm-eval's own `openvino` model on an exported IR folder, in fp32 so that it compares with PyTorch."""
    from lm_eval.models.optimum_lm import OptimumLM

    from ..artifacts import write_json
    from ..models import cache_dir

    folder = check_ir_folder(folder)
    config = cache_dir() / "openvino_f32.json"  # lm-eval takes the OpenVINO config as a file
    write_json(config, {"INFERENCE_PRECISION_HINT": "f32"})
    return OptimumLM(pretrained=str(folder), ov_config=str(config), batch_size=batch_size)


class OpenVINOGenerator:
    """Same interface as `TorchGenerator`: `generate(prompts, max_new_tokens)` returns only the new text.

    `precision` sets INFERENCE_PRECISION_HINT ("f32" to match PyTorch closely); None keeps the CPU's
    default (bf16 where AMX is present), i.e. what a deployment gets.
    """

    def __init__(self, folder: str | os.PathLike, batch_size: int = 8, precision: str | None = None,
                 protocol: str | Protocol | None = None):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        folder = check_ir_folder(folder)
        self.batch_size = batch_size
        self.decoding = get_protocol(protocol).generate_kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"  # decoder-only batches grow on the right
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ov_config = {"INFERENCE_PRECISION_HINT": precision} if precision else None
        self.model = OVModelForCausalLM.from_pretrained(folder, ov_config=ov_config, device="CPU", compile=True)

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        outputs = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(prompts[start:start + self.batch_size], return_tensors="pt", padding=True)
            tokens = self.model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **self.decoding,
            )
            new = tokens[:, batch["input_ids"].shape[1]:]
            outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs
