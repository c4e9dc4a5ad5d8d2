"""The rbench model zoo: every architecture the residual-learning studies use.

    >>> import nets
    >>> model = nets.create_model("resnet20", num_classes=10, in_chans=1, act="silu")
    >>> nets.list_models("plain*")
"""

from nets._registry import KINDS, ModelEntry, create_model, list_models, model_entry, register_model
from nets.errors import ModelConfigError, ModelError, UnknownModelError
from nets.layers import (
    ACTIVATIONS,
    DYNAMIC_CONV_MODES,
    RRDB,
    DynamicConv2d,
    SelfAttention2d,
    create_act,
    dynamic_conv_mode,
    get_act_layer,
    set_dynamic_conv_mode,
    set_temperature,
    temperature_schedule,
    uses_dynamic_conv,
)

__all__ = [
    "ACTIVATIONS", "DYNAMIC_CONV_MODES", "KINDS", "RRDB", "DynamicConv2d", "ModelConfigError", "ModelEntry",
    "ModelError", "SelfAttention2d", "UnknownModelError", "create_act", "create_model", "dynamic_conv_mode",
    "get_act_layer", "list_models", "model_entry", "register_model", "set_dynamic_conv_mode", "set_temperature",
    "temperature_schedule", "uses_dynamic_conv",
]
