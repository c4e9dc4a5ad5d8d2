"""The rbench model zoo: every architecture the residual-learning studies use.

    >>> import nets
    >>> model = nets.create_model("resnet20", num_classes=10, in_chans=1, act="silu")
    >>> nets.list_models("plain*")
"""

from nets._registry import KINDS, ModelEntry, create_model, list_models, model_entry, register_model
from nets.errors import ModelConfigError, ModelError, UnknownModelError
from nets.layers import (
    ACTIVATIONS,
    RRDB,
    DynamicConv2d,
    SelfAttention2d,
    create_act,
    get_act_layer,
    set_temperature,
    temperature_schedule,
)

__all__ = [
    "ACTIVATIONS", "KINDS", "RRDB", "DynamicConv2d", "ModelConfigError", "ModelEntry", "ModelError",
    "SelfAttention2d", "UnknownModelError", "create_act", "create_model", "get_act_layer", "list_models",
    "model_entry", "register_model", "set_temperature", "temperature_schedule",
]
