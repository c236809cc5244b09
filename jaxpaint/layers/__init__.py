"""Reusable layers."""

from jaxpaint.layers.partial_conv import MaskGroup, PartialConv, box_sum, concat_with_masks, resolve_padding

__all__ = ["MaskGroup", "PartialConv", "box_sum", "concat_with_masks", "resolve_padding"]
