"""Generation with an exported OpenVINO IR, so accuracy is measured on what is deployed (decoding as the
protocol says, like `TorchGenerator`), and lm-eval's model on the IR for log-likelihood scoring.

An IR with run-time adapters (`shears export --runtime-adapter`) runs through OpenVINO GenAI's `LLMPipeline`
(`GenAIModel`), the one runtime that applies them: `shears generate`, `shears evaluate --adapter NAME` and the
runtime rows of `shears bench` all go through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ShearsError
from ..export import DETOKENIZER_XML, IR_XML, TOKENIZER_XML
from ..export.runtime_adapters import BASE_ALONE
from ..protocol import SHEARS_PROTOCOL, Protocol

GENAI_FILES = (TOKENIZER_XML, DETOKENIZER_XML)  # what LLMPipeline reads besides the IR


def check_ir_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not (folder / IR_XML).is_file():
        raise ShearsError(f"{folder} has no {IR_XML}; give a folder written by `shears export`")
    return folder


def openvino_lm(folder: str | os.PathLike, batch_size: int, adapter: str | None = None):
    """lm-eval's own `openvino` model on an exported IR folder, in fp32 so that it compares with PyTorch."""
    from lm_eval.models.optimum_lm import OptimumLM

    from ..artifacts import write_json
    from ..models import cache_dir

    folder = check_ir_folder(folder)
    if adapter:
        raise ShearsError(f"--adapter {adapter} with --openvino is a run-time adapter, which only OpenVINO GenAI applies, "
                          "and GenAI's LLMPipeline generates tokens but returns no log-probabilities of given answer "
                          "choices: score it with --scoring generate, or score the baked export (`shears export "
                          "--adapter SUB_ADAPTER`) with --scoring loglik")
    config = cache_dir() / "openvino_f32.json"  # lm-eval takes the OpenVINO config as a file
    write_json(config, {"INFERENCE_PRECISION_HINT": "f32"})
    return OptimumLM(pretrained=str(folder), ov_config=str(config), batch_size=batch_size)


class OpenVINOGenerator:
    """Same interface as `TorchGenerator`: `generate(prompts, max_new_tokens)` returns only the new text.

    `precision` sets INFERENCE_PRECISION_HINT ("f32" to match PyTorch closely); None keeps the CPU's
    default (bf16 where AMX is present), i.e. what a deployment gets.
    """

    def __init__(self, folder: str | os.PathLike, batch_size: int = 8, precision: str | None = None,
                 protocol: Protocol = SHEARS_PROTOCOL):
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        folder = check_ir_folder(folder)
        self.batch_size = batch_size
        self.decoding = protocol.generate_kwargs
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


def openvino_generator(folder: str | os.PathLike, adapter: str | None = None, batch_size: int = 8,
                       protocol: Protocol = SHEARS_PROTOCOL):
    """The generator `shears evaluate --openvino` scores: optimum's for the IR as it is, GenAI's for a run-time adapter."""
    if adapter:
        return GenAIGenerator(folder, adapter, protocol=protocol)
    return OpenVINOGenerator(folder, batch_size=batch_size, protocol=protocol)


def runtime_model(folder: str | os.PathLike, adapters: list[str] | None = None,
                  properties: dict | None = None) -> "GenAIModel":
    """A `GenAIModel` of an exported IR folder with its run-time adapters `adapters` registered (None: all it has;
    `none` stands for the base alone); an unknown name fails here, naming the folder's adapters."""
    from ..export.openvino import OpenVINOModel

    folder = check_ir_folder(folder)
    wanted = [name for name in adapters or [] if name != BASE_ALONE]
    try:
        exported = OpenVINOModel.read(folder)
    except ShearsError:
        if wanted:
            raise
        return GenAIModel(folder, {}, properties)  # an IR that shears did not export: no run-time adapters
    entries = exported.runtime_adapters if adapters is None else {name: exported.runtime_adapter(name) for name in wanted}
    return GenAIModel(folder, {name: (e["path"], e["alpha"]) for name, e in entries.items()}, properties)


class GenAIModel:
    """An IR in one OpenVINO GenAI `LLMPipeline` with run-time adapters registered once, so that every
    `generate` call picks one of them (or none) without loading or compiling the base again.

    `adapters`: name -> (safetensors file, alpha to pass). `properties`: CPU plugin properties
    (INFERENCE_PRECISION_HINT, INFERENCE_NUM_THREADS, ...)."""

    def __init__(self, folder: str | os.PathLike, adapters: dict[str, tuple[str, float]],
                 properties: dict | None = None):
        import openvino_genai

        self.folder = check_ir_folder(folder)
        missing = [name for name in GENAI_FILES if not (self.folder / name).is_file()]
        if missing:
            raise ShearsError(f"{self.folder} has no {', '.join(missing)}, which OpenVINO GenAI needs; export it with "
                              "`shears export`")
        self.adapters = {name: (openvino_genai.Adapter(str(path)), alpha) for name, (path, alpha) in adapters.items()}
        settings = dict(properties or {})
        if self.adapters:
            settings["adapters"] = openvino_genai.AdapterConfig(list(self.adapters.values()))
        self.pipeline = openvino_genai.LLMPipeline(str(self.folder), "CPU", **settings)
        self.tokenizer = self.pipeline.get_tokenizer()

    def adapter_config(self, adapter: str | None):
        """GenAI's selection of one registered adapter at its alpha; `none` or None: the base alone."""
        import openvino_genai

        if adapter in (None, BASE_ALONE):
            return openvino_genai.AdapterConfig()
        if adapter not in self.adapters:
            raise ShearsError(f"run-time adapter {adapter!r} is not loaded; loaded: "
                              f"{', '.join(self.adapters) or 'none'} (or {BASE_ALONE} for the base alone)")
        return openvino_genai.AdapterConfig(*self.adapters[adapter])

    def generate(self, inputs, adapter: str | None, max_new_tokens: int, streamer=None, ignore_eos: bool = False,
                 num_beams: int = 1):
        """GenAI's `generate` with `adapter` active on a prompt (DecodedResults: texts, perf_metrics) or on token
        ids (EncodedResults: tokens). The prompt is used as given (no chat template); greedy unless `num_beams` > 1."""
        config = self.pipeline.get_generation_config()
        config.max_new_tokens = max_new_tokens
        config.apply_chat_template = False
        config.ignore_eos = ignore_eos
        config.do_sample = False
        config.num_beams = num_beams
        config.adapters = self.adapter_config(adapter)
        return self.pipeline.generate([inputs] if isinstance(inputs, str) else inputs, config, streamer)


class GenAIGenerator:
    """The `TorchGenerator` interface on a run-time adapter of an IR folder, decoding as the protocol says."""

    def __init__(self, folder: str | os.PathLike, adapter: str, protocol: Protocol = SHEARS_PROTOCOL):
        self.adapter = adapter
        self.num_beams = protocol.generate_kwargs.get("num_beams") or 1
        self.model = runtime_model(folder, [adapter])

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        # One prompt at a time: no padding, so each answer is the one the prompt gets on its own.
        return [self.model.generate(p, self.adapter, max_new_tokens, num_beams=self.num_beams).texts[0] for p in prompts]
