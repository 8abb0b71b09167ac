"""shears_nncf: Shears (sparse base + elastic low-rank super-adapter) on NNCF and OpenVINO.

The Python API mirrors the `shears` sub-commands, one verb per stage:

    sparsify(model, samples, ratio)           prune in place (Wanda, SparseGPT, magnitude; N:M; OWL ratios)
    build_supernet(model, config)             PEFT LoRA + NNCF BootstrapNAS elastic rank
    train(model, tokenizer, config, ...)      NLS training of the super-adapter
    run_search(space, cache, strategy)        heuristic, hill-climbing, NSGA-II / RNSGA-II
    extract(super_adapter, subnet, output)    a sub-adapter as a standard PEFT folder
    merge_to_folder(base, adapter, output)    the sub-adapter folded into the sparse base, every zero kept
    export_openvino(model, output, adapter)   the sparse model + unmerged adapter as OpenVINO IR
    evaluate(generator, records_by_task)      task accuracy
    run_pipeline(config, output)              every stage, resumable

Imports are lazy so that `shears --help` and light uses do not pay for torch, NNCF and OpenVINO.
"""

import importlib

_VERBS = {
    "sparsify": "shears_nncf.sparsity.api",
    "sparsify_to_folder": "shears_nncf.sparsity.api",
    "SparsifyConfig": "shears_nncf.sparsity",
    "load_config": "shears_nncf.config",
    "build_supernet": "shears_nncf.nls.supernet",
    "load_super_adapter": "shears_nncf.nls.supernet",
    "train": "shears_nncf.nls.training",
    "run_search": "shears_nncf.search.run",
    "extract": "shears_nncf.export.extract",
    "load_adapted": "shears_nncf.export.adapted",
    "merge_to_folder": "shears_nncf.export.merge",
    "export_openvino": "shears_nncf.export.openvino",
    "evaluate": "shears_nncf.evaluation.harness",
    "load_model": "shears_nncf.models",
    "load_tokenizer": "shears_nncf.models",
    "run_pipeline": "shears_nncf.pipeline",
}

__all__ = sorted(_VERBS)


def __getattr__(name):
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'shears_nncf' has no attribute {name!r}")
