"""Import open_clip beside a CPU torch build whose torchvision wheel lacks its C++ ops."""

from __future__ import annotations

import types
from typing import Any

# PyPI's torchvision wheel registers fake kernels for its custom ops at import time; beside
# the CPU build of torch 2.13 its compiled ops library does not load, so the import fails with
# "operator torchvision::nms does not exist". open_clip never calls these ops: declaring their
# schemas is enough for the import to succeed. The schemas follow torchvision's own.
_TORCHVISION_SCHEMAS = [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",  # noqa: E501
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, bool aligned) -> Tensor",  # noqa: E501
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",  # noqa: E501
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",  # noqa: E501
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",  # noqa: E501
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",  # noqa: E501
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) -> (Tensor, Tensor)",  # noqa: E501
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",  # noqa: E501
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",  # noqa: E501
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",  # noqa: E501
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",  # noqa: E501
]

_library: Any = None


def import_open_clip() -> types.ModuleType:
    """Import and return open_clip, declaring torchvision's op schemas first when they are missing."""
    global _library
    import torch

    try:
        # Where torchvision's compiled ops load (e.g. a CUDA build), importing it registers them and
        # declaring the schemas again would abort; only a failed import needs the declarations.
        import torchvision  # noqa: F401

        torch.ops.torchvision.nms  # noqa: B018 - probes whether the real ops library loaded
    except (AttributeError, RuntimeError):
        if _library is None:
            _library = torch.library.Library("torchvision", "DEF")
            for schema in _TORCHVISION_SCHEMAS:
                _library.define(schema)
    import open_clip

    return open_clip
