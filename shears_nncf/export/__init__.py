"""Deployment formats: a sub-adapter as a PEFT folder, the sparse model as an OpenVINO IR."""

from ..choices import Choice, Choices

# The files of an IR folder, as optimum-intel (the IR) and openvino-tokenizers (its tokenizer) write them; here so
# that readers of an IR import no OpenVINO.
IR_XML = "openvino_model.xml"
IR_BIN = "openvino_model.bin"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
# The IR's weights (`shears export --weights`); here so that the CLI reads them without importing OpenVINO.
WEIGHT_FORMATS = Choices(
    "weight format",
    Choice("as-is", "the weights as exported (fp32), no compression"),
    Choice("int8", "INT8 symmetric weight compression (a pruned zero stays an exact zero)"),
    Choice("w8a8", "INT8 weights and activations, calibrated on --calibration (what OpenVINO's CPU sparse-weights "
                   "kernels need)"),
    Choice("int4", "INT4 weights (--int4-mode) in groups of --group-size inputs on --int4-ratio of the linears, the "
                   "rest INT8"),
)
# NNCF's INT4 weight modes (`nncf.CompressWeightsMode`), by the names NNCF and `shears.quantization` use; the first
# is the default. Asymmetric dequantizes a pruned zero to exactly 0 (the zero point is an integer); symmetric
# also does (q = 0), with one level fewer of range.
INT4_MODES = ("int4_asym", "int4_sym")
