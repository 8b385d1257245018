"""Reduced-precision variants of exported towers: int8 (dynamic quantisation, CPU) and fp16 (CUDA)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx

# Only the matrix multiplications are quantised: they carry nearly all of the time and
# weights, while quantising the token embedding (Gather) or the patch embedding (Conv, which
# onnxruntime runs slowly as ConvInteger) costs accuracy for little gain.
INT8_OP_TYPES = ("MatMul",)


def quantize_int8(src: Path, dst: Path) -> None:
    """Write an int8 dynamically quantised copy of the ONNX graph ``src`` to ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="crossmodal-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph optimisation first, as onnxruntime recommends: the
        # quantiser then sees fused, fully shaped MatMuls.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        # int8 weights per output channel, with 7-bit range: onnxruntime's fast u8 x s8 kernels
        # saturate intermediate sums on CPUs without VNNI (AVX2 only, like our hosts), which
        # cost ViT-B-32's image tower ~0.02 of cosine at full range; 7 bits avoid it at the
        # same speed. uint8 weights avoid it too but run ~25% slower.
        quantize_dynamic(
            prepared,
            dst,
            op_types_to_quantize=list(INT8_OP_TYPES),
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
        )


def convert_fp16(src: Path, dst: Path) -> None:
    """Write an fp16 copy of the ONNX graph ``src`` to ``dst``, keeping float32 inputs and outputs."""
    import onnxruntime as ort
    from onnxconverter_common import float16

    with tempfile.TemporaryDirectory(prefix="crossmodal-fp16-") as tmp:
        # The exported graph holds float->float Casts (open_clip's `.to(cast_dtype)`) that the
        # converter would leave typed inconsistently; onnxruntime's hardware-independent basic
        # optimisations remove them (and fold constants) first.
        basic = Path(tmp) / "basic.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(basic)
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
        model = onnx.load(str(basic))
    # keep_io_types: callers feed and read float32 whatever the variant, so the loader and the
    # services need no per-precision code.
    with warnings.catch_warnings():
        # The converter warns for every weight it clamps into fp16's range; the measured
        # cosine to fp32 in the manifest is the figure that matters.
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    _retarget_casts(half)
    onnx.save(half, str(dst))


def _retarget_casts(model: onnx.ModelProto) -> None:
    # The converter types every float tensor as float16 but leaves the `to` attribute of Casts
    # computed from shapes (attention's 1/sqrt(head_dim)) at float32; make them agree.
    half_values = {
        v.name
        for v in [*model.graph.value_info, *model.graph.output]
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    }
    for node in model.graph.node:
        if node.op_type != "Cast" or node.output[0] not in half_values:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16
