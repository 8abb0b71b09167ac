"""shears_nncf: Shears (sparse base + elastic low-rank super-adapter) on NNCF and OpenVINO.

One function per stage, each taking its input, a small typed config and the output folder, and returning the folder
it wrote, read back (what `shears <verb>` does; its flags are the config's fields):

    sparsify_to_folder(model, SparsifyConfig(ratio=0.5), out)            -> SparseModel
    train_super_adapter(sparse.path, TrainConfig(config="cfg.json"), out) -> SuperAdapter
    search_sub_adapter(super_adapter.path, SearchConfig("hill-climbing"), out)  -> SearchFolder
    extract(super_adapter.path, ExtractConfig("heuristic"), out)          -> Extracted
    export_model(sparse.path, ExportConfig(adapter=sub.path), out)        -> OpenVINOModel
    evaluate_model(EvaluateConfig(openvino=ir.path, tasks=[...]), out)    -> results
    run_pipeline(config, out)                                             every stage, resumable

And the in-memory verbs under them: `sparsify(model, samples, ratio)` prunes an nn.Module in place,
`build_supernet(model, config)` and `train(...)` make and train a supernet, `run_search(space, cache, strategy)`,
`merge_to_folder`, `export_openvino`, `load_adapted`. See examples/quickstart.py.

Imports are lazy so that `shears --help` and light uses do not pay for torch, NNCF and OpenVINO.
"""

import importlib

_VERBS = {
    "sparsify": "shears_nncf.sparsity.api",
    "sparsify_to_folder": "shears_nncf.sparsity.api",
    "SparseModel": "shears_nncf.sparsity.api",
    "SparsifyConfig": "shears_nncf.sparsity",
    "train_super_adapter": "shears_nncf.nls.stage",
    "TrainConfig": "shears_nncf.nls.stage",
    "SuperAdapter": "shears_nncf.nls.folder",
    "search_sub_adapter": "shears_nncf.search.stage",
    "SearchConfig": "shears_nncf.search.stage",
    "SearchFolder": "shears_nncf.search.run",
    "ExtractConfig": "shears_nncf.export.extract",
    "Extracted": "shears_nncf.export.extract",
    "export_model": "shears_nncf.export.stage",
    "ExportConfig": "shears_nncf.export.stage",
    "OpenVINOModel": "shears_nncf.export.openvino",
    "evaluate_model": "shears_nncf.evaluation.stage",
    "EvaluateConfig": "shears_nncf.evaluation.stage",
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
