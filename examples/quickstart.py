"""Shears through the Python API, stage by stage: prune the embedded SmolLM2-135M to 50% with Wanda, train an elastic
LoRA super-adapter on it (NLS), take the heuristic sub-adapter, export the sparse model with it to an OpenVINO IR, and
score the sparse model and the deployed IR on ARC-Easy by log-likelihood, the wording the training saw.

    python examples/quickstart.py [--output runs/quickstart]     # about 5 minutes on 2 CPU cores

The same settings as `make demo` (nncf_configs/demo/smollm2_commonsense.json), which runs them as `shears run`.
"""

import argparse
from pathlib import Path

from shears_nncf import (
    EvaluateConfig, ExportConfig, ExtractConfig, SparsifyConfig, TrainConfig, evaluate_model, export_model, extract,
    sparsify_to_folder, train_super_adapter,
)

CONFIG = Path(__file__).resolve().parents[1] / "nncf_configs" / "demo" / "smollm2_commonsense.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="HF folder, hub id or 'smollm2-135m' (embedded)")
    parser.add_argument("--output", default="runs/quickstart")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of NLS training")
    parser.add_argument("--records", type=int, default=192, help="training records")
    parser.add_argument("--documents", type=int, default=100, help="ARC-Easy documents scored")
    args = parser.parse_args(argv)
    out = Path(args.output)

    sparse = sparsify_to_folder(args.model, SparsifyConfig(ratio=0.5, method="wanda"), out / "sparse", nsamples=16)
    trained = train_super_adapter(str(sparse.path), TrainConfig(CONFIG, data="lm-eval", tasks=["arc_easy"],
                                  limit=args.records, max_steps=args.steps, overrides={"lr": 0.002}), out / "super")
    sub = extract(trained.path, ExtractConfig("heuristic"), out / "sub_adapter")
    ir = export_model(sparse.path, ExportConfig(adapter=sub.path, weights="int8"), out / "openvino")

    scoring = dict(tasks=["arc_easy"], limit=args.documents, scoring="loglik")
    sparse_only = evaluate_model(EvaluateConfig(model=str(sparse.path), **scoring), out / "eval_sparse.json")
    deployed = evaluate_model(EvaluateConfig(openvino=str(ir.path), **scoring), out / "eval_openvino.json")
    scores = {"sparse": sparse_only["average"], "sparse + sub-adapter (INT8 IR)": deployed["average"]}
    print(f"ranks {sub.ranks}; IR weight sparsity {ir.sparsity['base_sparsity']:.1%}; ARC-Easy accuracy: "
          + ", ".join(f"{name} {100 * value:.1f}" for name, value in scores.items()))
    return scores


if __name__ == "__main__":
    main()
