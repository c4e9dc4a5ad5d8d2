"""Shared layers: dynamic convolution (against nn.Conv2d, per-sample, ONNX with a dynamic batch),
its temperature helpers, the RRDB and SAGAN self-attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from nets.errors import ModelConfigError
from nets.families.vgg import make_layers
from nets.layers import RRDB, DynamicConv2d, SelfAttention2d, dynamic_conv_layer, set_temperature, temperature_schedule


@pytest.mark.parametrize("kernel_size,stride,padding,bias", [(3, 1, 1, True), (3, 2, 1, False), (1, 1, 0, True),
                                                             (1, 2, 0, False), (5, 1, 2, True), (3, 2, 0, True)])
def test_one_kernel_is_a_static_conv(kernel_size, stride, padding, bias):
    dy = DynamicConv2d(4, 6, kernel_size, stride, padding, bias=bias, kernels=1).eval()
    ref = nn.Conv2d(4, 6, kernel_size, stride, padding, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(dy.weight[0])
        if bias:
            dy.bias.normal_()
            ref.bias.copy_(dy.bias[0])
    x = torch.randn(3, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(dy(x), ref(x), rtol=1e-5, atol=1e-5)


def test_each_sample_gets_its_own_kernel():
    """A batch of 3 equals three batch-1 calls, and the samples really attend differently."""
    dy = DynamicConv2d(4, 8, 3, padding=1, kernels=4, temperature=1.0).eval()
    with torch.no_grad():
        dy.bias.normal_()
    x = torch.randn(3, 4, 6, 6) * torch.tensor([0.1, 1.0, 10.0]).view(3, 1, 1, 1)
    with torch.no_grad():
        batched = dy(x)
        single = torch.cat([dy(x[i : i + 1]) for i in range(3)])
        attn = dy.attention(x)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn.sum(1), torch.ones(3))
    assert not torch.allclose(attn[0], attn[2])


def test_dynamic_conv_is_the_attention_weighted_kernel():
    """The output is the conv with sum_k pi_k W_k, pi the attention (Chen et al. eq. 1)."""
    dy = DynamicConv2d(3, 5, 3, padding=1, kernels=3, temperature=2.0, bias=False).eval()
    x = torch.randn(1, 3, 7, 7)
    with torch.no_grad():
        pi = dy.attention(x)[0]
        kernel = (pi.view(3, 1, 1, 1, 1) * dy.weight).sum(0)
        torch.testing.assert_close(dy(x), nn.functional.conv2d(x, kernel, padding=1), rtol=1e-5, atol=1e-5)


def test_temperature_flattens_attention_and_is_annealed():
    dy = DynamicConv2d(8, 8, 3, padding=1, kernels=4)
    model = nn.Sequential(dy, nn.ReLU(), DynamicConv2d(8, 8, 3, padding=1, kernels=4))
    with torch.no_grad():
        dy.attn_fc2.weight.mul_(100)  # sharp logits
        assert set_temperature(model, 1e6) == 2
        flat = dy.attention(torch.randn(2, 8, 5, 5))
    torch.testing.assert_close(flat, torch.full((2, 4), 0.25), rtol=0, atol=1e-3)
    assert temperature_schedule(0) == 30 and temperature_schedule(5) == pytest.approx(15.5)
    assert temperature_schedule(10) == 1 and temperature_schedule(99) == 1
    assert temperature_schedule(3, anneal_epochs=0) == 1
    with pytest.raises(ModelConfigError):
        set_temperature(model, 0)
    with pytest.raises(ModelConfigError):
        DynamicConv2d(3, 3, kernels=0)


def test_dynamic_conv_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    """The known trap: export at batch 1, run in onnxruntime at batch 3, compare with PyTorch."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    # A tiny DY-VGG trunk (static first conv, then dynamic convs with BN and act), plus a head.
    trunk = make_layers([8, "M", 8, 8], batch_norm=True, in_chans=3, conv_layer=dynamic_conv_layer(4, 1.0))
    model = nn.Sequential(trunk, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    # The trunk's pool has ceil_mode=True (VGG's): the export must keep it too.
    path = tmp_path / "dy.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(model, (torch.randn(1, 3, 12, 12),), str(path), dynamo=True,
                      input_names=["x"], dynamic_shapes=({0: batch},))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic, not baked in
    x = torch.randn(3, 3, 12, 12)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_self_attention_starts_as_identity_and_mixes_positions_once_gamma_grows():
    attn = SelfAttention2d(16)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(attn(x), x)
    with torch.no_grad():
        attn.gamma.fill_(1.0)
        y = attn(x)
        x2 = x.clone()
        x2[:, :, 0, 0] += 5  # changing one position changes the output everywhere
        y2 = attn(x2)
    assert not torch.allclose(y[:, :, 4, 4], y2[:, :, 4, 4])
    assert attn.query.out_channels == 2 and attn.value.out_channels == 16


def test_rrdb_keeps_shape_and_uses_dense_growth():
    block = RRDB(64, growth=32, res_scale=0.2)
    dense = block.blocks[0]
    assert [c.in_channels for c in dense.convs] == [64, 96, 128, 160, 192]
    assert [c.out_channels for c in dense.convs] == [32, 32, 32, 32, 64]
    x = torch.randn(1, 64, 6, 6)
    assert block(x).shape == x.shape
