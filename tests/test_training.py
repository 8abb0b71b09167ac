"""NLS training: random sub-adapters per micro-batch, frozen sparse base, NNCF's LR schedule, resume, reload."""

import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import DataCollatorForSeq2Seq

from shears_nncf.cli import main
from shears_nncf.config import bundled_config, load_config, parse_config
from shears_nncf.errors import ShearsError
from shears_nncf.models import load_model
from shears_nncf.nls import training
from shears_nncf.nls.folder import SuperAdapter, TrainingInputs
from shears_nncf.nls.supernet import load_super_adapter

from conftest import interrupt_training_at

DEMO = bundled_config("demo/smollm2_commonsense")


def examples(n=24, seed=0):
    """Hand-made tokenized examples (the training-data helpers are tested on their own)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 300, (int(torch.randint(6, 20, (1,), generator=g)),), generator=g).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * 3 + ids[3:]})
    return out


def sparse_tiny_llama(factory):
    """The tiny LLaMA with half of every decoder linear's weights zeroed, as a sparse base would be."""
    model = factory()
    with torch.no_grad():
        for name, module in model.model.layers.named_modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w[w.abs() < w.abs().median()] = 0
    return model


def config(**overrides):
    return load_config(DEMO, **{"batch_size": 2, "grad_accum": 2, "lr": 1e-2, **overrides})


def test_training_samples_sub_adapters_per_micro_batch_and_keeps_the_sparse_base_bit_identical(tiny_llama_factory,
                                                                                               tiny_tokenizer, tmp_path):
    model = sparse_tiny_llama(tiny_llama_factory)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    result = training.train(model, tiny_tokenizer, config(), examples(), tmp_path / "out", max_steps=3, save_steps=100)

    assert len(result.sampled_configs) == 6  # 3 optimizer steps x 2 accumulated micro-batches
    assert len({tuple(c) for c in result.sampled_configs}) > 1
    space = result.supernet.search_space
    assert all(r in options for c in result.sampled_configs for r, options in zip(c, space))

    state = result.supernet.peft_model.state_dict()
    for key, before in base_before.items():
        peft_key = f"base_model.model.{key}"
        after = state[peft_key] if peft_key in state else state[peft_key.replace(".weight", ".base_layer.weight")]
        assert torch.equal(after, before), key  # bit-identical, zeros included
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert all(v.abs().sum() > 0 for v in lora_b)  # PEFT starts lora_B at zero: training changed it


def test_learning_rate_follows_nncf_cosine_from_init_lr_without_warmup(tiny_llama_factory, tiny_tokenizer, tmp_path):
    steps = 4
    result = training.train(tiny_llama_factory(), tiny_tokenizer, config(lr=1e-2), examples(), tmp_path / "out",
                            max_steps=steps)
    lrs = result.learning_rates
    # NNCF's stage scheduler steps before every optimizer step: lr_t = init/2 (1 + cos(pi t / T)), t = 1..T
    expected = [0.5 * 1e-2 * (1 + math.cos(math.pi * t / steps)) for t in range(1, steps + 1)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert lrs[0] < 1e-2 and lrs == sorted(lrs, reverse=True)


def test_output_is_a_peft_folder_that_reloads_into_the_same_supernet(tiny_llama_dir, tiny_tokenizer, tmp_path):
    result = training.train(load_model(tiny_llama_dir), tiny_tokenizer, config(), examples(), tmp_path / "out",
                            max_steps=2, inputs=TrainingInputs(base_model=str(tiny_llama_dir)))
    out = tmp_path / "out"
    assert {"adapter_config.json", "adapter_model.safetensors", "nncf_config.json", "shears_manifest.json"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16
    assert not training.checkpoint_dir(out).exists()

    input_ids = torch.arange(5, 17).unsqueeze(0)
    reloaded = load_super_adapter(out)
    assert reloaded.group_names == result.supernet.group_names and reloaded.search_space == result.supernet.search_space
    for activate in ("activate_heuristic", "activate_minimal"):
        with torch.no_grad():
            getattr(result.supernet, activate)()
            expected = result.supernet.peft_model.eval()(input_ids=input_ids).logits
            getattr(reloaded, activate)()
            got = reloaded.peft_model.eval()(input_ids=input_ids).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=0)

    # A plain PEFT load of the folder is the maximal sub-adapter.
    peft = PeftModel.from_pretrained(load_model(tiny_llama_dir), out).eval()
    with torch.no_grad():
        result.supernet.activate_maximal()
        torch.testing.assert_close(peft(input_ids=input_ids).logits, result.supernet.peft_model(input_ids=input_ids).logits)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tiny_llama_factory, tiny_tokenizer, tmp_path,
                                                                   monkeypatch):
    uninterrupted = training.train(tiny_llama_factory(), tiny_tokenizer, config(), examples(), tmp_path / "a",
                                   max_steps=4, save_steps=2)

    original = interrupt_training_at(monkeypatch)  # during optimizer step 4, after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        training.train(tiny_llama_factory(), tiny_tokenizer, config(), examples(), tmp_path / "b", max_steps=4,
                       save_steps=2)
    assert not (tmp_path / "b").exists() and (training.checkpoint_dir(tmp_path / "b") / "checkpoint-2").is_dir()
    monkeypatch.setattr(training.NLSTrainer, "training_step", original)

    resumed = training.train(tiny_llama_factory(), tiny_tokenizer, config(), examples(), tmp_path / "b", max_steps=4,
                             save_steps=2, resume=True)
    assert resumed.steps == 4
    assert resumed.losses == pytest.approx(uninterrupted.losses, rel=1e-5)


def test_resume_without_a_checkpoint_is_an_error(tiny_llama_factory, tiny_tokenizer, tmp_path):
    from shears_nncf.errors import ShearsError

    with pytest.raises(ShearsError, match="no checkpoint"):
        training.train(tiny_llama_factory(), tiny_tokenizer, config(), examples(), tmp_path / "out", max_steps=1,
                       resume=True)


def test_lora_only_trains_a_plain_lora_with_the_same_command(tiny_llama_factory, tiny_tokenizer, tmp_path):
    result = training.train(tiny_llama_factory(), tiny_tokenizer, config(), examples(), tmp_path / "out", max_steps=2,
                            lora_only=True)
    assert not result.supernet.elastic and result.sampled_configs == []
    manifest = json.loads((tmp_path / "out" / "shears_manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["lora_only"] is True


@pytest.mark.slow
def test_shears_train_demo_on_smollm2_lowers_the_loss_and_reloads(tmp_path):
    out = tmp_path / "super_adapter"
    # 3 optimizer steps of 8 records: the loss falls from about 2.85 to 2.53 (6 steps of 48 records took twice as long).
    argv = ["train", "--config", str(DEMO), "--model", "smollm2-135m", "--data", "default", "--output", str(out),
            "--max-steps", "3", "--limit", "24", "--batch-size", "4", "--grad-accum", "2", "--max-length", "96"]
    assert main(argv) == 0
    manifest = json.loads((out / "shears_manifest.json").read_text())
    assert manifest["base_model"] == "smollm2-135m" and manifest["optimizer_steps"] == 3
    assert len(manifest["groups"]) == 90
    assert manifest["last_loss"] < manifest["first_loss"]
    assert 0 < manifest["train_seconds"] < 600
    reloaded = load_super_adapter(out)
    assert reloaded.search_space == manifest["search_space"]


def _with_held_out(val_set_size, eval_steps):
    raw = json.loads(DEMO.read_text())
    raw["shears"].setdefault("training", {}).update(val_set_size=val_set_size, eval_steps=eval_steps)
    return parse_config(raw, batch_size=2, grad_accum=2, lr=1e-2)


def test_held_out_loss_is_logged_every_eval_steps_at_the_heuristic_sub_adapter(tiny_llama_factory, tiny_tokenizer,
                                                                               tmp_path):
    held_out = examples(4, seed=1)
    result = training.train(tiny_llama_factory(), tiny_tokenizer, _with_held_out(4, 2), examples(), tmp_path / "out",
                            eval_examples=held_out, max_steps=4, inputs=TrainingInputs(base_model="tiny"))
    log = SuperAdapter.read(tmp_path / "out").training_log
    evaluated = {e["step"]: e["eval_loss"] for e in log if "eval_loss" in e}
    assert sorted(evaluated) == [2, 4]

    collate = DataCollatorForSeq2Seq(tiny_tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    model = result.supernet.peft_model.eval()

    def loss_at(activate):
        activate()
        with torch.no_grad():
            return sum(model(**collate(held_out[i:i + 2])).loss.item() for i in (0, 2)) / 2

    assert evaluated[4] == pytest.approx(loss_at(result.supernet.activate_heuristic), rel=1e-6)
    assert evaluated[4] != pytest.approx(loss_at(result.supernet.activate_maximal), rel=1e-6)


def test_eval_steps_without_records_set_aside_is_refused():
    with pytest.raises(ShearsError, match="val_set_size is 0"):
        _with_held_out(0, 10)
