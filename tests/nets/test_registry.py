"""The registry: names, near-match errors, duplicates, validation of the common settings."""

from __future__ import annotations

import pytest

import nets
from nets._registry import register_model
from nets.errors import ModelConfigError, UnknownModelError


def test_unknown_name_names_nearest_matches():
    with pytest.raises(UnknownModelError) as info:
        nets.create_model("resnet21")
    assert "resnet20" in str(info.value)
    with pytest.raises(UnknownModelError, match="rbench list"):
        nets.model_entry("qqqqqqqq")


def test_duplicate_name_is_an_error():
    def resnet20(**kwargs):  # noqa: ANN202
        """Clash."""

    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet", "residual")(resnet20)
    with pytest.raises(ValueError, match="kind"):
        register_model("x", "weird")


@pytest.mark.parametrize("kwargs", [dict(in_chans=0), dict(in_chans=True), dict(num_classes=0),
                                    dict(num_classes=2.5), dict(act="tanh"), dict(no_such_setting=1)])
def test_create_model_validates_settings(kwargs):
    with pytest.raises(ModelConfigError):
        nets.create_model("template_cnn", **kwargs)


def test_family_settings_are_validated():
    with pytest.raises(ModelConfigError):
        nets.create_model("dy_resnet20", kernels=0)
    with pytest.raises(ModelConfigError):
        nets.create_model("dy_resnet20", temperature=-1.0)


def test_list_models_patterns_and_config():
    assert nets.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert set(nets.list_models("dy_*")) >= {"dy_vgg19", "dy_resnet18", "dy_resnet20"}
    model = nets.create_model("dy_resnet20", in_chans=1, num_classes=4, act="silu", kernels=2)
    assert model.config == dict(name="dy_resnet20", num_classes=4, in_chans=1, act="silu", kernels=2)
