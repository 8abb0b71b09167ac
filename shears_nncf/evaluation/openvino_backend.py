"""Greedy generation with an exported OpenVINO IR, so accuracy is measured on what is deployed."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ShearsError
from ..export import IR_XML


class OpenVINOGenerator:
    """Same interface as `TorchGenerator`: `generate(prompts, max_new_tokens)` returns only the new text.

    `precision` sets INFERENCE_PRECISION_HINT ("f32" to match PyTorch closely); None keeps the CPU's
    default (bf16 where AMX is present), i.e. what a deployment gets.
    """

    def __init__(self, folder: str | os.PathLike, batch_size: int = 8, precision: str | None = None):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        folder = Path(folder)
        if not (folder / IR_XML).is_file():
            raise ShearsError(f"{folder} has no {IR_XML}; give a folder written by `shears export`")
        self.batch_size = batch_size
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
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
            new = tokens[:, batch["input_ids"].shape[1]:]
            outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs
