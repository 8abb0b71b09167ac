"""optimum-intel's per-architecture transformers version gate: checked before any work, lifted where we checked.

optimum-intel declares on each export config the transformers versions it validated the family with
(`MIN_TRANSFORMERS_VERSION`, `MAX_TRANSFORMERS_VERSION`) and `export_from_model` refuses any other. Its 2.1 Gemma
configs (Gemma, Gemma-2, Gemma-3 text) say at most 5.0 while the package itself needs transformers < 5.6, so with
transformers 5.5 it refuses those families although their export works: tests/test_architectures.py exports each
with the gate lifted and finds the IR's logits equal to PyTorch's (f32). The gate is lifted through optimum's own
`custom_export_configs` argument, on an instance of the registered config made for this one export (the class, and
so every other export, keeps its gate); any other family outside its range fails at once with the versions it takes.
"""

from __future__ import annotations

from importlib.metadata import version

from ..errors import ShearsError

# Families whose export with transformers beyond optimum-intel's gate tests/test_architectures.py checks.
CHECKED_BEYOND_GATE = frozenset({"gemma", "gemma2", "gemma3_text"})


def export_configs(model_config, task: str) -> dict | None:
    """What to pass as `export_from_model(custom_export_configs=...)` for this model: None where optimum's gate lets
    the export through, the registered config without its maximum where we checked the family beyond it.

    Raises, before any work, for a model type optimum-intel does not export or a gate it would refuse."""
    from packaging.version import Version

    constructor = _constructor(model_config.model_type, task)
    lowest, highest = (getattr(constructor.func, f"{end}_TRANSFORMERS_VERSION", None) for end in ("MIN", "MAX"))
    installed = Version(version("transformers"))
    too_old = lowest is not None and installed < Version(str(lowest))
    too_new = highest is not None and installed > Version(str(highest))
    if too_old or (too_new and model_config.model_type not in CHECKED_BEYOND_GATE):
        span = f"{lowest or 'any'} to {highest or 'the newest'}"
        raise ShearsError(
            f"optimum-intel {version('optimum-intel')} exports {model_config.model_type} models only with transformers "
            f"{span}, and {installed} is installed; install a transformers in that range for the export"
        )
    if not too_new:
        return None
    registered = constructor(model_config, int_dtype="int64", float_dtype="fp32")
    # As optimum's get_decoder_models_for_export builds the decoder's config from the registered one.
    config = type(registered)(model_config, task=registered.task, int_dtype="int64", float_dtype="fp32",
                              use_past=registered.use_past, use_past_in_inputs=registered.use_past)
    config.MAX_TRANSFORMERS_VERSION = None  # on this instance only
    return {"model": config}


def _constructor(model_type: str, task: str):
    from optimum.exporters.tasks import TasksManager

    import optimum.exporters.openvino  # noqa: F401  (registers the OpenVINO export configs)

    try:
        return TasksManager.get_exporter_config_constructor(
            exporter="openvino", model_type=model_type, task=task, library_name="transformers"
        )
    except (KeyError, ValueError):
        raise ShearsError(f"optimum-intel {version('optimum-intel')} has no OpenVINO export of {model_type!r} models "
                          f"for {task}") from None
