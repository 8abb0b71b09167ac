"""Deployment formats: a sub-adapter as a PEFT folder, the sparse model as an OpenVINO IR."""

IR_XML = "openvino_model.xml"  # what optimum-intel writes; here so that readers of an IR import no OpenVINO
