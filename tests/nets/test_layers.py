"""Shared layers: dynamic convolution in each of its forms (against nn.Conv2d, per-sample convs and the
F.unfold computation it replaced; ONNX with a dynamic batch), its mode and temperature helpers, the RRDB
and SAGAN self-attention."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nets._manipulate import (
    dynamic_conv_mode,
    fold_dynamic_batchnorm,
    set_dynamic_conv_mode,
    set_temperature,
    temperature_schedule,
    uses_dynamic_conv,
)
from nets.errors import ModelConfigError
from nets.families.vgg import make_layers
from nets.layers import (
    DYNAMIC_CONV_MODES,
    EXPAND_MAX_EXTRA_MACS,
    RRDB,
    DynamicConv2d,
    SelfAttention2d,
    dynamic_conv_layer,
)

#: Every form DynamicConv2d computes by; "auto" picks one of them.
FORMS = ("grouped", "unfold", "expand", "chunked")


def unfold_reference(dy: DynamicConv2d, x: torch.Tensor) -> torch.Tensor:
    """The computation DynamicConv2d shipped with (F.unfold + bmm), kept as an independent reference."""
    batch, _, height, width = x.shape
    attn = dy.attention(x)
    weight = (attn @ dy.weight.flatten(1)).view(batch, dy.out_channels, -1)
    cols = F.unfold(x, dy.kernel_size, dilation=dy.dilation, padding=dy.padding, stride=dy.stride)
    out = torch.bmm(weight, cols)
    if dy.bias is not None:
        out = out + (attn @ dy.bias).unsqueeze(-1)
    span = dy.dilation * (dy.kernel_size - 1) + 1
    out_h = (height + 2 * dy.padding - span) // dy.stride + 1
    return out.view(batch, dy.out_channels, out_h, -1)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal up to fp32 summation order: max error within `tol` of the output's scale."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= tol * max(scale, 1.0)


@pytest.mark.parametrize("kernel_size,stride,padding,bias", [(3, 1, 1, True), (3, 2, 1, False), (1, 1, 0, True),
                                                             (1, 2, 0, False), (5, 1, 2, True), (3, 2, 0, True)])
@pytest.mark.parametrize("mode", FORMS)
def test_one_kernel_is_a_static_conv(kernel_size, stride, padding, bias, mode):
    dy = DynamicConv2d(4, 6, kernel_size, stride, padding, bias=bias, kernels=1, mode=mode).eval()
    ref = nn.Conv2d(4, 6, kernel_size, stride, padding, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(dy.weight[0])
        if bias:
            dy.bias.normal_()
            ref.bias.copy_(dy.bias[0])
    x = torch.randn(3, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(dy(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", FORMS)
def test_each_sample_gets_its_own_kernel(mode):
    """A batch of 3 equals three batch-1 calls, and the samples really attend differently."""
    dy = DynamicConv2d(4, 8, 3, padding=1, kernels=4, temperature=1.0, mode=mode).eval()
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


@pytest.mark.parametrize("mode", FORMS)
def test_dynamic_conv_is_the_attention_weighted_kernel(mode):
    """The output is the conv with sum_k pi_k W_k, pi the attention (Chen et al. eq. 1)."""
    dy = DynamicConv2d(3, 5, 3, padding=1, kernels=3, temperature=2.0, bias=False, mode=mode).eval()
    x = torch.randn(1, 3, 7, 7)
    with torch.no_grad():
        pi = dy.attention(x)[0]
        kernel = (pi.view(3, 1, 1, 1, 1) * dy.weight).sum(0)
        torch.testing.assert_close(dy(x), nn.functional.conv2d(x, kernel, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size,stride,padding,dilation,bias", [
    (3, 1, 1, 1, True), (3, 2, 1, 1, False), (3, 2, 0, 1, True), (1, 1, 0, 1, False), (1, 2, 0, 1, True),
    (5, 1, 2, 1, False), (5, 2, 2, 1, True), (3, 1, 2, 2, True), (3, 2, 3, 2, False), (2, 2, 1, 1, True),
])
@pytest.mark.parametrize("temperature", [1.0, 30.0])
@pytest.mark.parametrize("size", [(11, 9), (4, 3)])  # (4, 3): outputs of at most 4 positions, expand's GEMM path
def test_every_form_computes_what_unfold_computed(kernel_size, stride, padding, dilation, bias, temperature, size):
    """Random weights, a non-square odd-sized input, K=4: each form (and auto) equals the old F.unfold form
    and a per-sample loop of plain convs with each sample's own kernel."""
    torch.manual_seed(kernel_size * 100 + stride * 10 + padding + dilation)
    dy = DynamicConv2d(5, 7, kernel_size, stride, padding, dilation, bias=bias, kernels=4, temperature=temperature).eval()
    with torch.no_grad():
        dy.attn_fc2.weight.mul_(20)  # attention far from uniform, so a wrong kernel mix shows
        if bias:
            dy.bias.normal_()
    x = torch.randn(3, 5, *size)
    with torch.no_grad():
        want = unfold_reference(dy, x)
        attn = dy.attention(x)
        kernels = torch.einsum("bk,koihw->boihw", attn, dy.weight)  # (B, C_out, C_in, k, k)
        biases = attn @ dy.bias if bias else [None] * 3
        loop = torch.cat([F.conv2d(x[i : i + 1], kernels[i], biases[i], stride, padding, dilation) for i in range(3)])
        assert_close_to_scale(want, loop)
        for mode in DYNAMIC_CONV_MODES:
            dy.mode = mode
            assert_close_to_scale(dy(x), want)


def test_auto_picks_grouped_at_batch_one_and_expand_where_the_output_is_small():
    """Expand where (K-1) * H'*W' <= EXPAND_MAX_EXTRA_MACS at a batch of 2 or more, chunked at batch 1 where
    H'*W' <= CHUNKED_MAX_POSITIONS, grouped elsewhere."""
    dy = DynamicConv2d(4, 8, 3, padding=1, kernels=4)
    assert dy.mode == "auto"
    small = 4  # 4x4 output: (4 - 1) * 16 = 48
    assert (dy.kernels - 1) * small * small <= EXPAND_MAX_EXTRA_MACS < (dy.kernels - 1) * 5 * 5
    assert dy.resolved_mode(torch.randn(1, 4, small, small)) == "grouped"
    assert (dy.resolved_mode(torch.randn(1, 4, 2, 2)), dy.resolved_mode(torch.randn(1, 4, 3, 3))) == ("chunked", "grouped")
    assert dy.resolved_mode(torch.randn(2, 4, 2, 2)) == "expand"
    assert dy.resolved_mode(torch.randn(2, 4, small, small)) == "expand"
    assert dy.resolved_mode(torch.randn(2, 4, 5, 5)) == "grouped"
    assert DynamicConv2d(4, 8, 3, stride=2, padding=1).resolved_mode(torch.randn(8, 4, 8, 8)) == "expand"  # 4x4 out
    dy.mode = "unfold"
    assert dy.resolved_mode(torch.randn(2, 4, small, small)) == "unfold"  # a mode set by hand is kept


def test_auto_takes_unfold_over_grouped_once_the_batchs_kernels_are_large(monkeypatch):
    import nets.layers as layers

    dy = DynamicConv2d(4, 8, 3, padding=1, kernels=4)
    kernel_bytes = 8 * 4 * 3 * 3 * 4  # one sample's kernel in fp32
    monkeypatch.setattr(layers, "GROUPED_MAX_KERNEL_BYTES", 3 * kernel_bytes)
    assert [dy.resolved_mode(torch.randn(b, 4, 6, 6)) for b in (1, 2, 3, 4)] == ["grouped"] * 3 + ["unfold"]
    assert dy.resolved_mode(torch.randn(4, 4, 2, 2)) == "expand"  # small outputs expand whatever the batch


def test_mode_leaves_the_state_dict_alone():
    dy = DynamicConv2d(4, 8, 3, padding=1)
    x = torch.randn(2, 4, 6, 6)
    assert set(dy.state_dict()) == {"weight", "bias", "attn_fc1.weight", "attn_fc1.bias", "attn_fc2.weight",
                                    "attn_fc2.bias"}  # the keys checkpoints were saved with
    other = DynamicConv2d(4, 8, 3, padding=1, mode="unfold")
    other.load_state_dict(dy.state_dict())
    with torch.no_grad():
        assert_close_to_scale(other(x), dy(x))
    assert "mode=unfold" in repr(other) and "mode" not in repr(dy)
    del other.__dict__["mode"]  # as a whole module pickled before modes existed
    assert pickle.loads(pickle.dumps(other)).mode == "auto"
    with pytest.raises(ModelConfigError, match="unknown dynamic conv mode"):
        DynamicConv2d(4, 8, mode="fast")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [9, 5])  # outputs 5x5 and 3x3: expand as a conv and as a GEMM
def test_every_form_trains_with_the_same_gradients(bias, size):
    """Backward works in each form and gives the input, the kernels and the attention the same gradients."""
    torch.manual_seed(1)
    dy = DynamicConv2d(4, 6, 3, stride=2, padding=1, bias=bias, kernels=4, temperature=1.0)
    x = torch.randn(3, 4, size, size)
    out = (size + 1) // 2
    target = torch.randn(3, 6, out, out)
    grads = {}
    for mode in FORMS:
        dy.mode = mode
        dy.zero_grad()
        xm = x.clone().requires_grad_()
        F.mse_loss(dy(xm), target).backward()
        grads[mode] = {"input": xm.grad, **{n: p.grad.clone() for n, p in dy.named_parameters()}}
    assert all(g.abs().sum() > 0 for g in grads["grouped"].values())  # the attention branch learns too
    for name, g in grads["grouped"].items():
        assert_close_to_scale(g, grads["unfold"][name])


def test_mode_helpers_set_and_restore_every_layer():
    model = nn.Sequential(DynamicConv2d(3, 4, 3, padding=1), nn.ReLU(), DynamicConv2d(4, 4, 3, mode="unfold"))
    assert uses_dynamic_conv(model) and not uses_dynamic_conv(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with dynamic_conv_mode(model, "grouped") as same:
        assert same is model and model[0].mode == model[2].mode == "grouped"
    assert (model[0].mode, model[2].mode) == ("auto", "unfold")
    with pytest.raises(RuntimeError), dynamic_conv_mode(model, "grouped"):
        raise RuntimeError("an export failed")
    assert (model[0].mode, model[2].mode) == ("auto", "unfold")  # restored on the way out of an error too
    assert set_dynamic_conv_mode(model, "grouped") == {"0": "auto", "2": "unfold"}
    assert set_dynamic_conv_mode(nn.Linear(2, 2), "unfold") == {}
    with pytest.raises(ModelConfigError, match="choose one of auto, grouped, unfold, expand"):
        set_dynamic_conv_mode(model, "fast")
    assert model[0].mode == "grouped"  # a bad mode changes nothing


def test_auto_keeps_its_eager_choice_under_torch_compile():
    """torch.compile (graph capture only: the eager backend) sees a symbolic batch but is no export."""
    dy = DynamicConv2d(3, 4, 3, padding=1, kernels=2).eval()  # 9x9 output: (2 - 1) * 81 > 48, grouped
    seen = []
    forward_grouped = dy._forward_grouped
    dy._forward_grouped = lambda x, attn: seen.append("grouped") or forward_grouped(x, attn)
    compiled = torch.compile(dy, backend="eager", dynamic=True, fullgraph=True)
    with torch.no_grad():
        for batch in (2, 3):
            x = torch.randn(batch, 3, 9, 9)
            assert_close_to_scale(compiled(x), unfold_reference(dy, x))
    assert seen and set(seen) == {"grouped"}

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


def random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d statistics and an affine far from the identity, so that a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, low, high in ((m.running_mean, -1, 1), (m.running_var, 0.3, 3), (m.weight.data, 0.5, 1.5),
                                 (m.bias.data, -1, 1)):
                t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", FORMS)
def test_a_folded_batchnorm_gives_what_conv_then_batchnorm_gave(bias, mode):
    dy = DynamicConv2d(4, 6, 3, padding=1, bias=bias, kernels=3, temperature=2.0, mode=mode).eval()
    bn = random_statistics(nn.BatchNorm2d(6))
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        want = bn(dy(x))
        keys = set(dy.state_dict())
        dy.fold_batchnorm(bn)
        assert_close_to_scale(dy(x), want)
        assert_close_to_scale(dy(x[:1]), want[:1])  # batch 1 runs its own (reshape-free) path
    assert set(dy.state_dict()) == keys  # the shift is not a checkpoint key
    assert (dy.shift is None) == bias  # with biases the shift joins them; without, it is its own constant
    with pytest.raises(ModelConfigError, match="inference-mode BatchNorm2d"):
        dy.fold_batchnorm(nn.BatchNorm2d(6))  # training mode: its statistics are not the ones it would use
    with pytest.raises(ModelConfigError, match="6 output channels"):
        dy.fold_batchnorm(nn.BatchNorm2d(5).eval())


@pytest.mark.parametrize("name,folds,in_chans", [("dy_resnet20", 18, 3), ("dy_vgg11", 7, 3), ("dy_resnet18", 19, 3),
                                                 ("dy_resnet20", 18, "any"), ("dy_vgg11", 7, "any")])
def test_every_batchnorm_after_a_dynamic_conv_is_folded_and_outputs_stay(name, folds, in_chans):
    from nets import create_model

    kwargs = {"small_input": True} if "vgg" in name else {}
    model = random_statistics(create_model(name, num_classes=5, in_chans=in_chans, **kwargs), seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, count = fold_dynamic_batchnorm(model)
    def batchnorms(net):
        return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())

    assert count == folds == batchnorms(model) - batchnorms(folded)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close_to_scale(folded(x), model(x))
        assert_close_to_scale(folded(x[:1]), model(x[:1]))


def test_folding_leaves_static_training_and_shared_batchnorms_alone():
    from nets import create_model

    static = create_model("resnet20").eval()
    assert fold_dynamic_batchnorm(static) == (static, 0)  # an exporter folds a static conv's BN itself
    training = create_model("dy_resnet20").train()
    assert fold_dynamic_batchnorm(training) == (training, 0)  # batch statistics, not running ones

    class Shared(nn.Module):  # one BN after two convs: folding it into either would be wrong for the other
        def __init__(self):
            super().__init__()
            self.a, self.b = DynamicConv2d(3, 4, 3, padding=1), DynamicConv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.a(x)) + self.bn(self.b(x))

    shared = Shared().eval()
    assert fold_dynamic_batchnorm(shared) == (shared, 0)

    class Branchy(Shared):  # control flow on a tensor's value: torch.fx cannot trace it
        def forward(self, x):
            return self.bn(self.a(x)) if x.sum() > 0 else self.bn(self.b(x))

    branchy, said = Branchy().eval(), []
    assert fold_dynamic_batchnorm(branchy, on_skip=said.append) == (branchy, 0)
    (line,) = said
    assert line.startswith("no BatchNorm was folded into the dynamic convs: torch.fx could not trace the net (")


def test_a_module_pickled_before_folding_existed_loads_without_a_shift():
    dy = DynamicConv2d(4, 8, 3, padding=1)
    del dy._buffers["shift"]
    dy._non_persistent_buffers_set.discard("shift")
    again = pickle.loads(pickle.dumps(dy))
    assert again.shift is None and set(again.state_dict()) == set(DynamicConv2d(4, 8, 3, padding=1).state_dict())


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
