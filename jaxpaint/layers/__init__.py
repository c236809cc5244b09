"""Reusable layers."""

from jaxpaint.layers.conv_transpose import ConvTranspose
from jaxpaint.layers.partial_conv import MaskGroup, PartialConv, box_sum, concat_with_masks, resolve_padding

__all__ = ["ConvTranspose", "MaskGroup", "PartialConv", "box_sum", "concat_with_masks", "resolve_padding"]
