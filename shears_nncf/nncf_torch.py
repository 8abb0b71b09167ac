"""The only module that imports `nncf.torch`.

NNCF 2.19 traces torch models only with the legacy tracer, and it decides that when
`nncf.torch` is first imported: without NNCF_TORCH_LEGACY_TRACING=1 the graph is silently
empty and the BootstrapNAS search space comes out `{}`. Import NNCF's torch API from here.
"""

import os
import sys

if "nncf.torch" in sys.modules and os.environ.get("NNCF_TORCH_LEGACY_TRACING") != "1":
    raise ImportError(
        "nncf.torch was imported before shears_nncf.nncf_torch without NNCF_TORCH_LEGACY_TRACING=1; "
        "import shears_nncf.nncf_torch first (or set the variable) so that NNCF can trace the model"
    )
os.environ["NNCF_TORCH_LEGACY_TRACING"] = "1"

import nncf.torch  # noqa: E402

__all__ = ["nncf"]
