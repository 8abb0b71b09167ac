"""The quantization-aware stages end to end on a tiny 50%-sparse LLaMA: `shears train` with `shears.quantization`,
`shears extract` (the heuristic sub-adapter), `shears export --adapter` (one INT4 IR, the sub-adapter folded in),
`shears evaluate --openvino`; and the float path's micro-batch ranks for the same seed."""

import json

import numpy as np
import pytest
import torch

from shears_nncf.cli import main
from shears_nncf.config import bundled_config
from shears_nncf.export.openvino import IR_XML, OpenVINOModel, ir_zero_masks  # nncf_torch first
from shears_nncf.export.sub_adapter import QASubAdapter
from shears_nncf.nls.folder import QA_STATE, SuperAdapter, TrainingInputs
from shears_nncf.nls.qa_training import load_qa_model
from shears_nncf.nls.quantization_aware import set_group_ranks
from shears_nncf.nls.training import SUB_ADAPTER_LOG

from conftest import interrupt_training_at, save_sparse_tiny_llama

SEED, GROUP_SIZE = 7, 32
TRAIN = ["--batch-size", "2", "--grad-accum", "2", "--max-length", "32", "--max-steps", "2", "--lr", "1e-2",
         "--seed", str(SEED)]
# The IR in f32 without dynamic quantization of activations against the fake-quantized PyTorch model at the same
# ranks, max |diff| / max |logit|: measured 2.9e-4 (NNCF's stripped decompressor keeps fp16 scales where the fake
# quantizer computes in f32); at the maximal or minimal ranks instead of the heuristic's the IR is 4e-2 away.
IR_LOGIT_TOLERANCE = 1e-3
IR_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}


def _config(folder, name, quantization=None):
    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["shears"].pop("pipeline", None)
    if quantization is not None:
        raw["shears"]["quantization"] = quantization
    path = folder / f"{name}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _decoder_paths(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]


@pytest.fixture(scope="module")
def qa(tiny_llama_factory, tiny_tokenizer, tmp_path_factory):
    """The sparse base, its data, and the QA stages run through the CLI (train logging its ranks, extract, export)."""
    f = tmp_path_factory.mktemp("qa_stages")
    base = save_sparse_tiny_llama(tiny_llama_factory, tiny_tokenizer, f / "sparse")
    records = [{"instruction": f"Is {n} even? Answer format: true/false", "input": "",
                "output": f"the correct answer is {str(n % 2 == 0).lower()}", "answer": str(n % 2 == 0).lower()}
               for n in range(12)]
    (f / "train.json").write_text(json.dumps(records))
    (f / "test.json").write_text(json.dumps(records[:2]))
    # backup "none": the embeddings and head float, as trained, so that the IR's logits are the QA model's (the
    # shipped config's run below takes the default, INT8 for them)
    config = _config(f, "qa", {"mode": "int4_asym", "group_size": GROUP_SIZE, "backup": "none"})
    mp = pytest.MonkeyPatch()
    mp.setenv(SUB_ADAPTER_LOG, str(f / "qa_log"))
    assert main(["train", "--config", config, "--model", str(f / "sparse"), "--data", str(f / "train.json"),
                 "--output", str(f / "super"), *TRAIN]) == 0
    mp.undo()
    assert main(["extract", "--super-adapter", str(f / "super"), "--output", str(f / "sub")]) == 0
    assert main(["export", "--model", str(f / "sparse"), "--adapter", str(f / "sub"), "--output", str(f / "ov")]) == 0
    base_zeros = {path: (base.get_submodule(path).weight == 0).numpy() for path in _decoder_paths(base)}
    return {"dir": f, "base_zeros": base_zeros}


def _ranks_log(folder):
    lines = (folder / "sub_adapters.rank0.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_train_writes_a_quantization_aware_super_adapter_folder(qa):
    f = qa["dir"]
    with pytest.raises(Exception, match="quantization-aware super-adapter"):
        SuperAdapter.read(f / "super")  # PyTorch evaluation, which runs PEFT, refuses it
    trained = SuperAdapter.read(f / "super", quantization_aware=True)
    assert trained.weights_file == f / "super" / QA_STATE and trained.weights_file.is_file()
    q = trained.quantization
    assert (q["mode"], q["group_size"], q["ratio"], q["mask_update"]) == ("int4_asym", GROUP_SIZE, 1.0, True)
    assert trained.manifest["optimizer_steps"] == 2 and len(trained.training_log) > 0
    assert len(trained.group_names) == 6 and trained.manifest["search_space"] == [[16, 12, 8]] * 6
    assert len(_ranks_log(f / "qa_log")) == 4  # 2 steps x 2 micro-batches, one sub-adapter each


def test_the_qa_trainer_draws_the_float_trainers_ranks_at_every_micro_batch(qa, monkeypatch):
    f = qa["dir"]
    monkeypatch.setenv(SUB_ADAPTER_LOG, str(f / "float_log"))
    assert main(["train", "--config", _config(f, "float"), "--model", str(f / "sparse"), "--data",
                 str(f / "train.json"), "--output", str(f / "float_super"), *TRAIN]) == 0
    assert _ranks_log(f / "qa_log") == _ranks_log(f / "float_log")


def test_extract_writes_the_heuristic_ranks(qa):
    sub = QASubAdapter.read(qa["dir"] / "sub")
    assert sub.ranks == [12] * 6 and sub.chosen_by == "heuristic" and sub.quantization["mode"] == "int4_asym"


def test_the_int4_ir_keeps_every_zero_of_the_sparse_base(qa):
    f = qa["dir"]
    ir = ir_zero_masks(f / "ov" / IR_XML)
    kept = sum(int(ir[path].reshape(base.shape)[base].sum()) for path, base in qa["base_zeros"].items())
    pruned = sum(int(base.sum()) for base in qa["base_zeros"].values())
    assert pruned == 36864 and kept == pruned
    exported = OpenVINOModel.read(f / "ov")
    assert exported.sparsity["base_zeros"] == pruned
    layers = {layer["layer"]: layer for layer in exported.layers}
    assert all(layers[path]["dtype"] == "u4" for path in qa["base_zeros"])
    assert exported.manifest["compression"]["ranks"] == [12] * 6
    assert layers["lm_head"]["dtype"] == "f32"  # backup "none": as trained


def test_ir_logits_match_the_qa_model_at_the_extracted_ranks(qa, tiny_tokenizer):
    from optimum.intel import OVModelForCausalLM

    f = qa["dir"]
    sub = QASubAdapter.read(f / "sub")
    model, groups = load_qa_model(f / "sparse", sub)  # rebuilt from the folder: sparse base, compress, load state
    batch = tiny_tokenizer(["The quick brown fox", "Once upon a time"], return_tensors="pt", padding=True)
    mask = batch["attention_mask"].numpy().astype(bool)
    got = OVModelForCausalLM.from_pretrained(f / "ov", ov_config=IR_CONFIG, device="CPU")(**batch).logits.numpy()

    def distance(ranks):
        set_group_ranks(model, groups, ranks)
        with torch.no_grad():
            expected = model(**batch).logits.numpy()
        return float(np.abs(got - expected)[mask].max() / np.abs(expected[mask]).max())

    assert distance(sub.ranks) < IR_LOGIT_TOLERANCE
    assert distance([16] * 6) > 10 * IR_LOGIT_TOLERANCE  # the trained adapter at other ranks is another model


def test_evaluate_openvino_scores_the_qa_ir(qa):
    f = qa["dir"]
    assert main(["evaluate", "--openvino", str(f / "ov"), "--data", str(f / "test.json"), "--tasks", "boolq",
                 "--batch-size", "2", "--output", str(f / "eval_ov.json")]) == 0
    assert json.loads((f / "eval_ov.json").read_text())["tasks"]["boolq"]["count"] == 2


def _one_line_exit_2(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err.strip()
    return status == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("case", ["mode", "merge", "weights", "run-pytorch", "run-weights"])
def test_bad_qa_inputs_are_one_line_exit_2(case, qa, capsys):
    f = qa["dir"]
    argv, words = {
        "mode": (["train", "--config", _config(f, "int2", {"mode": "int2"}), "--model", str(f / "sparse"), "--output",
                  str(f / "bad")], ["shears.quantization.mode", "'int2'"]),
        "merge": (["extract", "--super-adapter", str(f / "super"), "--merge", "--output", str(f / "bad")],
                  ["quantization-aware", "shears export"]),
        "weights": (["export", "--model", str(f / "sparse"), "--adapter", str(f / "sub"), "--weights", "int8",
                     "--output", str(f / "bad")], ["quantization-aware", "--weights"]),
        "run-pytorch": (["run", "--config", _run_config(f, evaluate_on=["pytorch", "openvino"]), "--output",
                         str(f / "bad")], ["shears.quantization", "evaluate_on"]),
        "run-weights": (["run", "--config", _run_config(f, export={"weights": "int8"}), "--output", str(f / "bad")],
                        ["shears.pipeline.export.weights", "quantization-aware"]),
    }[case]
    ok, err = _one_line_exit_2(argv, capsys)
    assert ok, err
    assert all(word in err for word in words), err
    assert not (f / "bad").exists()


def test_pytorch_evaluation_refuses_a_qa_super_adapter_in_one_line(qa, capsys):
    f = qa["dir"]
    ok, err = _one_line_exit_2(["evaluate", "--super-adapter", str(f / "super"), "--tasks", "boolq", "--data",
                                str(f / "test.json")], capsys)
    assert ok and "quantization-aware super-adapter" in err and "shears extract" in err, err


def test_search_drives_the_qa_quantizers_and_extract_takes_its_choice(qa):
    """A search on a QA super-adapter activates each sub-adapter on NNCF's quantizers (the anchors' losses differ:
    a search that set no rank would score one model thrice), and `extract --subnet search.json` takes its choice."""
    f = qa["dir"]
    assert main(["search", "--super-adapter", str(f / "super"), "--strategy", "hill-climbing", "--budget", "2",
                 "--metric", "loss", "--data", str(f / "test.json"), "--tasks", "boolq", "--output", str(f / "search")]) == 0
    summary = json.loads((f / "search" / "search.json").read_text())
    losses = {name: anchor["loss"] for name, anchor in summary["anchors"].items()}
    assert len(set(losses.values())) == 3, losses
    assert summary["anchors"]["maximal"]["cost"] > summary["anchors"]["minimal"]["cost"] > 0
    assert main(["extract", "--super-adapter", str(f / "super"), "--subnet", str(f / "search" / "search.json"),
                 "--output", str(f / "searched")]) == 0
    assert QASubAdapter.read(f / "searched").ranks == summary["chosen"]["ranks"]


SHIPPED_QA = "quantization_aware/smollm2_commonsense_int4"


def _run_config(folder, **pipeline):
    """The shipped quantization-aware config at tiny size on the tiny LLaMA (every other setting as shipped: its
    shears.quantization, the heuristic, log-likelihood on ARC-Easy, evaluate_on openvino); `pipeline` overrides."""
    raw = json.loads(bundled_config(SHIPPED_QA).read_text())
    section = raw["shears"]["pipeline"]
    section.update(model=str(folder / "dense"))
    section["sparsify"].update(nsamples=2, seqlen=32)
    section["train"].update(limit=8, max_steps=2)
    section["search"].update(limit=2)
    section["evaluate"].update(limit=4, batch_size=4)
    section["bench"].update(max_new_tokens=2, sparse_rate=None)
    section.update(pipeline)
    raw["shears"]["training"].update(batch_size=2, grad_accum=1, max_length=64)
    path = folder / f"run_{len(list(folder.glob('run_*.json')))}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_shears_run_takes_the_shipped_qa_config_to_one_int4_ir_and_its_summary(qa, tiny_llama_factory, tiny_tokenizer):
    """`shears run` on the shipped quantization-aware config: QA training, the heuristic, the INT4 IR with the
    sub-adapter folded in and every zero of the sparse base kept, scored beside the dense and the sparse model."""
    f = qa["dir"]
    tiny_llama_factory(seed=SEED).save_pretrained(f / "dense")
    tiny_tokenizer.save_pretrained(f / "dense")
    out = f / "run"
    assert main(["run", "--config", _run_config(f), "--output", str(out)]) == 0
    assert SuperAdapter.read(out / "super_adapter", quantization_aware=True).quantization["group_size"] == 64
    ir = OpenVINOModel.read(out / "openvino")
    sparse_zeros = json.loads((out / "sparse" / "shears_manifest.json").read_text())["sparsity"]
    assert ir.manifest["compression"]["quantization_aware"] and ir.manifest["compression"]["mode"] == "int4_asym"
    head = next(layer for layer in ir.layers if layer["layer"] == "lm_head")
    assert ir.manifest["compression"]["backup"] == "int8_asym" and head["dtype"] == "u8"  # the default, as PTQ
    assert ir.sparsity["base_zeros"] >= sparse_zeros["decoder_parameters"] - sparse_zeros["decoder_nonzero"] > 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["model"] for row in summary["comparison"]["rows"]}
    assert rows == {"dense", "sparse", "openvino"}  # no PyTorch row of the sub-adapter: it is scored as its IR
    differences = {(d["first"], d["second"]) for d in summary["comparison"]["differences"]}
    assert differences == {("sparse", "dense"), ("openvino", "sparse")}
    assert "adapter merged" in (out / "summary.md").read_text()  # folded into the INT4 weights, not beside them


def _qa_config(**overrides):
    from shears_nncf.config import parse_config

    raw = json.loads(bundled_config("demo/smollm2_commonsense").read_text())
    raw["shears"]["quantization"] = {"group_size": GROUP_SIZE}
    return parse_config(raw, batch_size=2, grad_accum=2, lr=1e-2, max_length=16, **overrides)


def _examples(n=12):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": ids, "attention_mask": [1] * 12, "labels": ids}
            for ids in (torch.randint(5, 300, (12,), generator=g).tolist() for _ in range(n))]


def test_qa_training_resumes_from_its_checkpoint_as_if_uninterrupted(tiny_llama_factory, tiny_tokenizer, tmp_path,
                                                                     monkeypatch):
    from shears_nncf.nls import qa_training, training

    def run(out, **kwargs):
        return qa_training.train_qa(tiny_llama_factory(), tiny_tokenizer, _qa_config(), _examples(), tmp_path / out,
                                    max_steps=4, save_steps=2, seed=SEED, inputs=TrainingInputs("tiny"), **kwargs)

    uninterrupted = run("a")
    original = interrupt_training_at(monkeypatch)  # during optimizer step 4, after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        run("b")
    assert not (tmp_path / "b").exists() and (training.checkpoint_dir(tmp_path / "b") / "checkpoint-2").is_dir()
    monkeypatch.setattr(training.NLSTrainer, "training_step", original)
    resumed = run("b", resume=True)
    assert resumed.steps == 4 and resumed.losses == pytest.approx(uninterrupted.losses, rel=1e-5)
    assert uninterrupted.learning_rates[0] == pytest.approx(1e-2) and uninterrupted.learning_rates[-1] < 1e-2 / 2
