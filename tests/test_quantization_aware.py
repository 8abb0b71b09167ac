"""Quantization-aware NLS on NNCF's FQ_LORA_NLS quantizers: zeros kept into the INT4 IR, BootstrapNAS's sampling."""

import os
import re

import numpy as np
import pytest
import torch

from shears_nncf.config import bundled_config, load_config
from shears_nncf.errors import ShearsError
from shears_nncf.export.openvino import IR_XML, OpenVINOModel, export_compressed, ir_zero_masks  # nncf_torch first
from shears_nncf.nls.quantization_aware import (
    adapter_groups, check_extension_lock, compress_for_qa, lora_quantizers, sample_sub_adapter, set_group_ranks,
    strip_to_int4, trainable_parameters,
)
from shears_nncf.nls.space import SearchSpace, sub_adapter_rng
from shears_nncf.sparsity.masks import magnitude_

DEMO = bundled_config("demo/smollm2_commonsense")  # r 16, ranks [16, 12, 8], groups [q, k, v], [up], [down]
SEED, STEPS, GROUP_SIZE = 7, 4, 32
# The IR in f32 without OpenVINO's dynamic quantization of activations against the stripped PyTorch model: measured max
# |diff| 3e-4 of max |logit|, NNCF's decompressor multiplying by its fp16 scale in fp16 where OpenVINO does it in f32
# (3e-7 once PyTorch does it in f32 too). With the CPU's default dynamic quantization (int8 activations in groups
# of 32 for compressed weights) it was 6e-3.
IR_LOGIT_TOLERANCE = 1e-3
IR_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _decoder_paths(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]


def _qa_run(factory, tokenizer, folder, mask_update):
    """The tiny LLaMA, 50% magnitude-pruned, through the QA path: compress, STEPS micro-batches of NLS training at a
    learning rate large enough to move the adapter's update past half a quantization step, strip, export."""
    model = factory()
    magnitude_(model, 0.5)
    base_zeros = {path: (model.get_submodule(path).weight == 0).numpy() for path in _decoder_paths(model)}
    config = load_config(DEMO)
    g = torch.Generator().manual_seed(0)
    model = compress_for_qa(model, [torch.randint(5, 300, (1, 16), generator=g)], rank=config.lora.r,
                            target_modules=config.lora.target_modules, group_size=GROUP_SIZE, mask_update=mask_update)
    groups = adapter_groups(model, config)
    optimizer = torch.optim.AdamW(trainable_parameters(model, lr=1e-2), weight_decay=0.0)
    model.train()
    for micro_batch in range(STEPS):
        sample_sub_adapter(model, groups, SEED, micro_batch)
        ids = torch.randint(5, 300, (2, 16), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    set_group_ranks(model, groups, SearchSpace.of(groups.widths).heuristic)
    stripped = strip_to_int4(model)
    ir = export_compressed(stripped, tokenizer, folder, {"mode": "int4_asym", "group_size": GROUP_SIZE},
                           source="tiny-llama")
    return {"model": model, "stripped": stripped, "groups": groups, "config": config, "base_zeros": base_zeros, "ir": ir}


@pytest.fixture(scope="module")
def runs(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    return {mask: _qa_run(tiny_llama_factory, tiny_tokenizer, root / f"ir_mask_{mask}", mask) for mask in (True, False)}


def _ir_zeros_at_pruned(run):
    """(zeros the IR keeps at the base's pruned positions, pruned positions), over the decoder linears."""
    ir = ir_zero_masks(run["ir"] / IR_XML)
    kept = sum(int(ir[path].reshape(base.shape)[base].sum()) for path, base in run["base_zeros"].items())
    return kept, sum(int(base.sum()) for base in run["base_zeros"].values())


def test_the_int4_ir_keeps_every_zero_of_the_sparse_base_with_the_masked_update(runs):
    kept, pruned = _ir_zeros_at_pruned(runs[True])
    assert pruned == 36864 and kept == pruned
    ir = OpenVINOModel.read(runs[True]["ir"])
    assert ir.sparsity["base_zeros"] == pruned  # the manifest's count: no weight of the base was quantized to zero
    layers = {layer["layer"]: layer for layer in ir.layers}
    assert all(layers[path]["dtype"] == "u4" for path in runs[True]["base_zeros"])
    assert layers["lm_head"]["dtype"] == "f32"  # embeddings and lm_head stay float (BackupMode.NONE)


def test_nncfs_dense_update_fills_pruned_zeros(runs):
    kept, pruned = _ir_zeros_at_pruned(runs[False])
    assert kept < pruned


def test_ir_logits_match_the_stripped_qa_model(runs, tiny_tokenizer):
    from optimum.intel import OVModelForCausalLM

    run = runs[True]
    batch = tiny_tokenizer(["The quick brown fox", "Once upon a time"], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].numpy().astype(bool)
    with torch.no_grad():
        expected = run["stripped"](**batch).logits.numpy()
    ir = OVModelForCausalLM.from_pretrained(run["ir"], ov_config=IR_CONFIG, device="CPU")
    got = ir(**batch).logits.numpy()
    assert float(np.abs(got - expected)[mask].max() / np.abs(expected[mask]).max()) < IR_LOGIT_TOLERANCE


def test_the_qa_path_runs_without_nncfs_cpp_extension_or_nncf_network(runs):
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU
    from transformers import LlamaForCausalLM

    assert QuantizedFunctionsCPU._loaded_namespace is None  # no plain fake quantizer ran
    assert type(runs[True]["model"]) is LlamaForCausalLM  # hooked by function hooks, not wrapped in an NNCFNetwork


def test_only_the_lora_targets_carry_an_adapter(runs):
    quantizers = lora_quantizers(runs[True]["model"])
    assert sorted(quantizers) == sorted(runs[True]["base_zeros"])  # every decoder linear is quantized
    ranks = {path.rsplit(".", 1)[-1]: q.max_lora_rank for path, q in quantizers.items()}
    assert ranks == {"q_proj": 16, "k_proj": 16, "v_proj": 16, "up_proj": 16, "down_proj": 16, "o_proj": 0,
                     "gate_proj": 0}


def test_qa_sampler_activates_the_bootstrapnas_ranks_at_every_micro_batch(runs, tiny_llama_factory):
    from shears_nncf.nls.supernet import build_supernet

    run = runs[True]
    supernet = build_supernet(tiny_llama_factory(), run["config"])
    groups = run["groups"]
    assert (groups.names, groups.nodes, groups.widths) == (supernet.groups.names, supernet.groups.nodes,
                                                           supernet.groups.widths)
    quantizers = lora_quantizers(run["model"])
    members = [_group_paths(name, quantizers) for name in groups.names]
    drawn = set()
    for micro_batch in range(24):
        expected = supernet.activate_random(sub_adapter_rng(SEED, micro_batch))
        assert sample_sub_adapter(run["model"], groups, SEED, micro_batch) == expected
        assert [{quantizers[path].active_lora_rank for path in paths} for paths in members] == [{r} for r in expected]
        drawn.add(tuple(expected))
    assert len(drawn) > 12


def _group_paths(name, paths):
    """The module paths a group name ('0:q_proj+k_proj+v_proj') stands for."""
    layer, modules = name.split(":")
    return [p for p in paths for m in modules.split("+") if p.startswith(f"model.layers.{layer}.") and p.endswith("." + m)]


def test_a_rank_outside_its_group_list_is_refused(runs):
    run = runs[True]
    with pytest.raises(ShearsError, match="not in its rank list"):
        set_group_ranks(run["model"], run["groups"], [16, 12, 8, 16, 12, 10])


def test_a_stale_build_lock_of_nncfs_extension_is_one_clear_error(tmp_path, monkeypatch):
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path.joinpath("nncf", "quantized_functions_cpu", torch.__version__, "lock")
    assert str(lock.parent) == QuantizedFunctionsCPULoader.get_build_dir()
    check_extension_lock()  # no lock: nothing to say
    lock.touch()
    with pytest.raises(ShearsError, match=re.escape(f"rm {lock}")):
        check_extension_lock()
    fd = os.open(lock, os.O_RDONLY)  # as torch's builder holds it while it builds
    try:
        check_extension_lock()
    finally:
        os.close(fd)
