"""The rbench model zoo: every architecture the residual-learning studies use.

    >>> import nets
    >>> model = nets.create_model("resnet20", num_classes=10, in_chans=1, act="silu")
    >>> nets.list_models("plain*")
    >>> one_for_any = nets.create_model("dy_resnet20", in_chans="any")  # 1, 2, 3, ... channels, any order
"""

from nets import families  # noqa: F401  (importing a family registers its builders; the registry imports none)
from nets._manipulate import (
    dynamic_conv_mode,
    fold_dynamic_batchnorm,
    set_dynamic_conv_mode,
    set_temperature,
    temperature_schedule,
    uses_dynamic_conv,
)
from nets._registry import (
    KINDS,
    ModelEntry,
    channel_agnostic_models,
    check_in_chans,
    create_model,
    list_models,
    model_entry,
    register_model,
)
from nets.channel_agnostic import ANY_CHANNELS, ChannelAgnosticStem, channel_mask, is_channel_agnostic
from nets.errors import ModelConfigError, ModelError, UnknownModelError
from nets.layers import (
    ACTIVATIONS,
    DYNAMIC_CONV_MODES,
    RRDB,
    DynamicConv2d,
    SelfAttention2d,
    create_act,
    get_act_layer,
)

__all__ = [
    "ACTIVATIONS", "ANY_CHANNELS", "ChannelAgnosticStem", "DYNAMIC_CONV_MODES", "DynamicConv2d", "KINDS",
    "ModelConfigError", "ModelEntry", "ModelError", "RRDB", "SelfAttention2d", "UnknownModelError",
    "channel_agnostic_models", "channel_mask", "check_in_chans", "create_act", "create_model", "dynamic_conv_mode",
    "fold_dynamic_batchnorm", "get_act_layer", "is_channel_agnostic", "list_models", "model_entry", "register_model",
    "set_dynamic_conv_mode", "set_temperature", "temperature_schedule", "uses_dynamic_conv",
]
