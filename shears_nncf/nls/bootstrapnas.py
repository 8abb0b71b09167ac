"""The two narrow changes the super-adapter needs from stock NNCF BootstrapNAS, by subclassing.

* Stock BootstrapNAS refuses frozen weights (`_handle_frozen_layers`); the sparse base must stay frozen,
  so `frozen_layers_allowed` in the config lets them through, as the Shears reference does.
* It inserts an elastic input-width op before every Linear and LayerNorm of the graph, although only the
  `lora_B` inputs can ever change width; we keep only the ops whose width the smallest sub-adapter
  actually changes (300 instead of hundreds more on SmolLM2).

This is the only module that reaches into NNCF's private attributes (`_handle_frozen_layers`,
`_get_transformation_layout`, `_node_name_vs_dynamic_input_width_op_map`, `_elasticity_builder`), so it
checks that the installed NNCF is the one it was written for and says so plainly otherwise.
"""

from __future__ import annotations

from shears_nncf import nncf_torch  # noqa: F401  (legacy tracing must be on before nncf.torch is used)

import nncf
from nncf import NNCFConfig
from nncf.common.graph.transformations.commands import TargetType
from nncf.experimental.torch.nas.bootstrapNAS.elasticity.elasticity_builder import ElasticityBuilder
from nncf.experimental.torch.nas.bootstrapNAS.training.progressive_shrinking_builder import (
    ProgressiveShrinkingBuilder,
)

from ..errors import ShearsError

WRITTEN_FOR = "2.19."


def check_nncf_version(version: str) -> None:
    if not version.startswith(WRITTEN_FOR):
        raise ShearsError(
            f"shears_nncf's elastic-LoRA builder relies on internals of NNCF {WRITTEN_FOR}x BootstrapNAS (removed in "
            f"NNCF 3.0), but NNCF {version} is installed; install nncf==2.19.0"
        )


check_nncf_version(nncf.__version__)


class _FrozenLayersPolicy:
    """NNCF's frozen-layer check, answered by the config's `frozen_layers_allowed`.

    When frozen layers are allowed there is nothing to check, and the stock scan (quadratic in the
    number of modules: a third of the build time on SmolLM2) is skipped."""

    frozen_layers_allowed = False

    def _handle_frozen_layers(self, target_model) -> None:
        if not self.frozen_layers_allowed:
            super()._handle_frozen_layers(target_model)  # stock: "Frozen layers are not allowed for ..."


class LoRAElasticityBuilder(_FrozenLayersPolicy, ElasticityBuilder):
    """Stock elasticity builder that keeps only the input-width ops a sub-adapter can change (lora_B's)."""

    def _get_transformation_layout(self, target_model):
        layout = super()._get_transformation_layout(target_model)
        width = self._multi_elasticity_handler.width_handler
        width.activate_subnet_for_config(width.get_minimum_config())
        input_ops = width._node_name_vs_dynamic_input_width_op_map  # stock handler's map, pruned in place
        fixed = {name for name, op in input_ops.items() if op.get_active_width() == op.max_width}
        fixed_ops = {id(input_ops[name]) for name in fixed}
        layout.transformations[:] = [
            c for c in layout.transformations if id(getattr(c.fn, "op", None)) not in fixed_ops
        ]
        for name in fixed:
            del input_ops[name]
        width.activate_supernet()
        return layout


class LoRAProgressiveShrinkingBuilder(_FrozenLayersPolicy, ProgressiveShrinkingBuilder):
    """Stock progressive shrinking with the builder above in place of the stock elasticity builder."""

    def __init__(self, nncf_config: NNCFConfig, frozen_layers_allowed: bool, should_init: bool = True):
        super().__init__(nncf_config, should_init)
        self.frozen_layers_allowed = frozen_layers_allowed
        self._elasticity_builder = LoRAElasticityBuilder(self.config, self.should_init)
        self._elasticity_builder.frozen_layers_allowed = frozen_layers_allowed

    def apply_to(self, model):
        """Every elastic-width command is a pre-op of one NNCF module (lora_A's output rows, lora_B's input
        columns): register it on that module directly. NNCF's generic model transformer does the same after
        an addressing check that is quadratic in the number of modules (half of the build time on SmolLM2)."""
        layout = self.get_transformation_layout(model)
        for command in layout.transformations:
            if command.target_point.type != TargetType.PRE_LAYER_OPERATION:
                raise ShearsError(f"unexpected NNCF transformation {command.target_point} for an elastic LoRA")
            model.nncf.get_containing_module(command.target_point.target_node_name).register_pre_forward_operation(
                command.fn
            )
        return model
