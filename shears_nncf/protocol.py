"""The two protocols: `reference`, the Shears reference code's own choices, and `shears`, ours.

Every value of the reference protocol is read from the reference's code and names the file it
comes from: IntelLabs/Hardware-Aware-Automated-Machine-Learning at commit
fc29bc781ff71ef009e6b0117dd6afcdc91caf89, folder `Shears/` (`running_commands`, `run_math.py`,
`run_commonsense.py`, `run_gsm8k.py`), which follows AGI-Edgerunners/LLM-Adapters (`finetune.py`, `evaluate.py`)
and locuslab/wanda (`main.py`). A setting the user writes in the config (e.g. `shears.lora.dropout`)
still wins over the protocol's default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .choices import Choice, Choices

REFERENCE, SHEARS = "reference", "shears"

_INSTRUCTION = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_INSTRUCTION_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)


def _reference_template(first_line: str, indent: int, with_input: bool) -> str:
    """The reference's triple-quoted f-string: every line after the first keeps the source's indentation."""
    pad = " " * indent
    lines = [first_line, "", f"{pad}### Instruction:", f"{pad}{{instruction}}", ""]
    if with_input:
        lines += [f"{pad}### Input:", f"{pad}{{input}}", ""]
    return "\n".join(lines + [f"{pad}### Response:", f"{pad}{{output}}"])


def _plain_template(with_input: bool) -> str:
    if with_input:
        return f"{_INSTRUCTION_WITH_INPUT}\n\n### Instruction:\n{{instruction}}\n\n### Input:\n{{input}}\n\n### Response:\n{{output}}"
    return f"{_INSTRUCTION}\n\n### Instruction:\n{{instruction}}\n\n### Response:\n{{output}}"


@dataclass(frozen=True)
class Templates:
    """Prompt templates (`str.format` with instruction, input, output), without and with an input."""

    plain: str
    with_input: str

    def pick(self, record: dict) -> str:
        return self.with_input if record.get("input") else self.plain


@dataclass(frozen=True, kw_only=True)
class Protocol(Choice):
    """Every setting in which the two protocols differ; an entry of `PROTOCOLS`, so `--protocol` names one. It is
    resolved from its name once, where a command meets it (the flag, the config, a super-adapter's manifest), and
    travels as this object; files record its `name`."""

    lora_dropout: float  # the default of shears.lora.dropout
    train_on_inputs: bool  # the default of shears.training.train_on_inputs: whether the loss covers the prompt
    training_template: Templates
    evaluation_templates: dict[str, Templates]  # by task family: "math" (GSM8K, AQuA, MAWPS, SVAMP) or "commonsense"
    generate_kwargs: dict  # decoding, as `model.generate` takes it; max_new_tokens comes from the task table
    answer_split: bool  # read the answer as decode(prompt + generation).split("### Response:")[1].strip()
    extraction: str  # "llm-adapters": the reference's regular expressions; "shears": evaluation/answers.py's own
    val_set_size: int  # the default of shears.training.val_set_size: records set aside from the training data
    val_seed: int
    truncation: str  # the default of shears.training.truncation: "prompt" (cut its start) or "end" (the reference's)
    script: str  # the reference script whose templates these are (or "shears")
    calibration: str  # Wanda calibration, recorded (sparsify's flags choose): "c4" the reference's, "default" BoolQ passages
    calibration_nsamples: int
    calibration_seqlen: int
    calibration_seed: int
    # Recorded, not applied here: shears.training.precision / --dtype choose the precision (fp16 needs a GPU).
    training_precision: str


REFERENCE_PROTOCOL = Protocol(
    name=REFERENCE,
    help="prompts, decoding, answer extraction and defaults exactly as the Shears reference code",
    # running_commands: every command passes --lora_dropout 0.1 (the scripts' own default is 0.0).
    lora_dropout=0.1,
    # run_math.py, run_commonsense.py, run_gsm8k.py: `train_on_inputs: bool = field(default=True)`, never overridden.
    train_on_inputs=True,
    # run_math.py / run_commonsense.py `generate_prompt` (identical in both): 20 spaces of indentation; the first line
    # ends in one space with an input and in two without.
    training_template=Templates(
        plain=_reference_template(_INSTRUCTION + "  ", 20, with_input=False),
        with_input=_reference_template(_INSTRUCTION_WITH_INPUT + " ", 20, with_input=True),
    ),
    # `generate_prompt_eval`: 28 spaces in run_math.py, 24 in run_commonsense.py; the first line ends in one space
    # without an input and in none with one (the scripts call it without the input; the test files have none).
    evaluation_templates={
        "math": Templates(plain=_reference_template(_INSTRUCTION + " ", 28, with_input=False),
                          with_input=_reference_template(_INSTRUCTION_WITH_INPUT, 28, with_input=True)),
        "commonsense": Templates(plain=_reference_template(_INSTRUCTION + " ", 24, with_input=False),
                                 with_input=_reference_template(_INSTRUCTION_WITH_INPUT, 24, with_input=True)),
    },
    # run_math.py / run_commonsense.py `evaluate_one_sample`: GenerationConfig(temperature=0.1, top_p=0.75, top_k=40,
    # num_beams=4) without do_sample, i.e. beam search (the sampling values have no effect); max_new_tokens is 256
    # in run_math.py and 32 in run_commonsense.py, as data/tasks.py has it.
    generate_kwargs={"do_sample": False, "num_beams": 4, "temperature": 0.1, "top_p": 0.75, "top_k": 40},
    # evaluate_one_sample: `tokenizer.decode(s)` of the whole sequence, then `.split("### Response:")[1].strip()`.
    answer_split=True,
    # run_math.py extract_answer_number / extract_answer_letter, run_commonsense.py extract_answer (as LLM-Adapters).
    extraction="llm-adapters",
    # run_commonsense.py: `val_set_size: int = field(default=120)` and
    # `data["train"].train_test_split(test_size=val_set_size, shuffle=True, seed=42)`. run_math.py and run_gsm8k.py
    # default it to 0 and carve nothing: the paper configs write their script's value (shears.training.val_set_size).
    val_set_size=120,
    val_seed=42,
    # run_*.py `tokenize`: `tokenizer(prompt, truncation=True, max_length=cutoff_len)` keeps the first cutoff_len
    # tokens, and EOS is appended only when the result is shorter than cutoff_len (and does not end in EOS already).
    truncation="end",
    script="run_math.py / run_commonsense.py",
    # running_commands: `wanda/main.py --prune_method wanda --sparsity_type unstructured`, so Wanda's defaults:
    # 128 C4 samples (--nsamples 128, --seed 0) of model.seqlen = 2048 tokens (locuslab/wanda main.py).
    calibration="c4",
    calibration_nsamples=128,
    calibration_seqlen=2048,
    calibration_seed=0,
    # running_commands: --fp16; run_*.py load the base with torch_dtype=torch.float16.
    training_precision="fp16",
)

SHEARS_PROTOCOL = Protocol(
    name=SHEARS,
    help="our choices (docs/paper-configs.md, 'Reference settings')",
    lora_dropout=0.05,
    train_on_inputs=False,  # the loss is the response's: what the model is asked to produce
    training_template=Templates(_plain_template(False), _plain_template(True)),  # LLM-Adapters' text, no stray spaces
    evaluation_templates={family: Templates(_plain_template(False), _plain_template(True)) for family in ("math", "commonsense")},
    generate_kwargs={"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None},  # greedy
    answer_split=False,  # the generated text is the answer: only the new tokens are decoded
    extraction=SHEARS,
    val_set_size=0,  # nothing carved: the search draws from the train split minus the records trained on
    val_seed=0,
    truncation="prompt",  # an example too long loses the start of its prompt, never its response
    script=SHEARS,
    calibration="default",
    calibration_nsamples=32,
    calibration_seqlen=512,
    calibration_seed=0,
    training_precision="auto",  # shears.training.precision's default: bf16 (fp16) on CUDA, fp32 on CPU
)

# run_gsm8k.py, the reference's script for MPT-7B on GSM8K, has templates of its own: `generate_prompt` indents 16
# spaces (the first line ends in two), `generate_prompt_eval` 24 (the first line ends in one), both without an input
# form; a record with an input gets the same indentation with LLM-Adapters' input form. Everything else is
# run_math.py's (its val_set_size is 0 as well: shears.training.val_set_size in the MPT configs).
REFERENCE_MPT_PROTOCOL = replace(
    REFERENCE_PROTOCOL,
    training_template=Templates(
        plain=_reference_template(_INSTRUCTION + "  ", 16, with_input=False),
        with_input=_reference_template(_INSTRUCTION_WITH_INPUT + " ", 16, with_input=True),
    ),
    evaluation_templates={family: Templates(plain=_reference_template(_INSTRUCTION + " ", 24, with_input=False),
                                            with_input=_reference_template(_INSTRUCTION_WITH_INPUT, 24, with_input=True))
                          for family in ("math", "commonsense")},
    script="run_gsm8k.py",
)

# The reference's answer extraction (extraction="llm-adapters"): run_math.py `extract_answer_number` (drop every
# comma, the last match, float) and `extract_answer_letter` (the first match in the stripped text), the tolerance
# `miss = 0.001` of run_math.py `evaluate`, and run_commonsense.py `extract_answer` (the first match, by task).
REFERENCE_NUMBER = r"-?\d+\.?\d*"
REFERENCE_LETTER = r"A|B|C|D|E"
REFERENCE_TOLERANCE = 0.001
_ANSWERS = "answer1|answer2|answer3|answer4|answer5"  # the same five for SIQA, ARC-e, ARC-c and OBQA
REFERENCE_CHOICES = {
    "boolq": "true|false", "piqa": "solution1|solution2", "social_i_qa": _ANSWERS, "arc_challenge": _ANSWERS,
    "arc_easy": _ANSWERS, "openbookqa": _ANSWERS, "hellaswag": "ending1|ending2|ending3|ending4",
    "winogrande": "option1|option2",
}
RESPONSE_MARKER = "### Response:"

# The protocols by name: `--protocol`'s choices and help, what the config schema's enum lists, and the lookup of a
# recorded name.
PROTOCOLS = Choices("protocol", REFERENCE_PROTOCOL, SHEARS_PROTOCOL)


def for_model_type(protocol: Protocol, model_type: str | None) -> Protocol:
    """The protocol's templates for a model of this type (`config.model_type`): under `reference` MPT gets
    run_gsm8k.py's, the script the reference trains and scores MPT with."""
    return REFERENCE_MPT_PROTOCOL if protocol.name == REFERENCE and model_type == "mpt" else protocol
