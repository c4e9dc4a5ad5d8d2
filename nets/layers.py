"""Layers shared by the families; `get_act_layer` is the only place that picks an activation.

Also the layers more than one family uses: dynamic convolution (with its temperature helpers),
ESRGAN's residual-in-residual dense block and SAGAN's self-attention.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from nets.errors import ModelConfigError

#: The activations every net accepts, by the name the CLI uses.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
}


def get_act_layer(act: str) -> type[nn.Module]:
    """The activation class for `act` ('relu', 'leaky_relu', 'silu')."""
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ModelConfigError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}") from None


def create_act(act: str, inplace: bool = True) -> nn.Module:
    """A new activation module; in-place where the activation supports it."""
    cls = get_act_layer(act)
    return cls(inplace=inplace)


# --------------------------------------------------------------------------------------------
# Dynamic convolution
# --------------------------------------------------------------------------------------------


#: How DynamicConv2d computes its output (see the class docstring); every mode gives the same numbers.
DYNAMIC_CONV_MODES = ("auto", "grouped", "unfold", "expand", "chunked")

#: Mode "chunked" aggregates the kernels of this many floats at a time (B * chunk * C_in*k*k), 1 MiB: a block
#: that stays in cache between being written and being multiplied.
CHUNK_FLOATS = 1 << 18

#: In PyTorch, "auto" takes "expand" at a batch of 2 or more where (K - 1) * H' * W' <= this: (K - 1) * L is
#: expand's extra MACs per element of a per-sample kernel, which grouped must write and read instead (tens
#: of MACs' worth on a CPU). Measured with K=4 on one CPU core: expand won at 2x2 and 4x4 outputs, grouped
#: at 8x8 and larger.
EXPAND_MAX_EXTRA_MACS = 48

#: In PyTorch, "auto" takes "unfold" instead of "grouped" at a batch of 2 or more where the batch's kernels
#: (B * C_out * C_in*k*k elements) pass this many bytes: oneDNN's grouped conv copies its weight into its own
#: layout on every call, and in training its backward is slow on such weights. Measured on one CPU core (DY-VGG-11's
#: 8x8 layers, batch 64, forward + backward): 128->256 grouped 311 ms vs unfold 216, 256->256 603 vs 451; the
#: 64->128 layer at 16x16 (19 MB of kernels) 113 vs 170, and every layer at batch 8 in inference, favour grouped.
#: 32 MiB is also glibc's largest mmap threshold: a bigger temporary is fresh pages on every call.
GROUPED_MAX_KERNEL_BYTES = 32 << 20

#: "expand" computes its conv of all K kernels as im2col + one matrix product (B*L rows) where H' * W' <= this, and
#: as F.conv2d above: at 2x2 and 4x4 outputs oneDNN's conv, its backward above all, ran far below GEMM speed
#: (DY-VGG-11's 512->512 at 2x2, batch 64, forward + backward on one core: 453 ms as a conv, 193 as a GEMM;
#: 4x4: 728 vs 660; at 8x8 the conv won, 589 vs 744).
EXPAND_GEMM_MAX_POSITIONS = 16

#: In PyTorch, "auto" takes "chunked" at a batch of 1 where H' * W' <= this. Measured on one CPU core (DY-VGG-11
#: at 32x32, 512 channels): at 2x2 grouped's aggregated kernel plus a conv at that size cost about 3x chunked's
#: time; at 4x4 and larger grouped was as fast or faster.
CHUNKED_MAX_POSITIONS = 4


def check_dynamic_settings(kernels: int, temperature: float) -> None:
    """Refuse K < 1 kernels or a temperature <= 0 (dynamic convolution and the dynamic channel-agnostic stem)."""
    if kernels < 1:
        raise ModelConfigError(f"kernels must be a positive integer, got {kernels!r}")
    if temperature <= 0:
        raise ModelConfigError(f"temperature must be positive, got {temperature!r}")


class DynamicConv2d(nn.Module):
    """Dynamic convolution: K kernels aggregated per sample by attention.

    Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020
    (arXiv:1912.03458). A squeeze-and-excitation branch (global average pool -> FC -> act -> FC
    to K -> softmax(logits / temperature)) weighs K parallel kernels; the weighted sum is the
    kernel (and bias) this sample is convolved with. BatchNorm and the activation follow, as for
    a static conv, outside this layer.

    Four forms compute the same numbers (`mode`), and the default picks among them:

    - "grouped": every sample's kernel is aggregated, attention (B, K) @ kernels (K, C_out*C_in*k*k),
      the batch is folded into the channels, (1, B*C_in, H, W), and ONE grouped conv with
      ``groups = B`` runs every sample against its own kernel at conv speed. Its cost is what the
      paper claims: a static conv's MACs plus the aggregation (B*K*C_out*C_in*k*k) and the
      attention branch. The batch size becomes a constant of the graph: no dynamic-batch export,
      and only the dynamo exporter takes a conv whose weight is computed.
    - "unfold": the same aggregated kernels, (B, C_out, C_in*k*k) @ im2col (B, C_in*k*k, L) in one
      batched matmul, which never reads the batch size: it exports with a dynamic batch through
      either exporter. The columns are strided slices of the padded input, not F.unfold, which
      exports as index Gathers (dy_resnet20 in onnxruntime: 18x resnet20's latency, 3x with slices).
    - "expand": one static conv of x with all K kernels (K*C_out output channels), then the
      attention-weighted sum over K. K times a static conv's MACs, but no per-sample kernel is
      ever made: where the output is small (L = H'*W' of 4 or 16) and the kernel large, writing
      B kernels of C_out*C_in*k*k costs far more than the extra MACs (DY-VGG-11 at 32x32, batch 8,
      PyTorch: 11x vgg11_bn's latency in "grouped", 2.8x with "expand" on its 4x4 and 2x2 layers).
      A static conv: exports with a dynamic batch through either exporter.
    - "chunked": im2col once, then per block of output channels that block of every sample's kernel
      and one batched matmul, so no full per-sample kernel goes through memory (see `chunked_conv`).
      Exports with a dynamic batch, but as a loop of blocks: meant for eager PyTorch.
    - "auto" (the default): in PyTorch (eager, torch.compile, training) "grouped", except "expand"
      at a batch of 2 or more where (K - 1) * L <= EXPAND_MAX_EXTRA_MACS, "unfold" at a batch of 2
      or more whose kernels pass GROUPED_MAX_KERNEL_BYTES (DY-VGG's 8x8 layers in training), and
      "chunked" at a batch of 1 where L <= CHUNKED_MAX_POSITIONS (VGG's 2x2 layers at 32x32); in a fixed-batch dynamo
      export "grouped"; where an export keeps the batch symbolic, or the TorchScript exporter
      traces, "unfold". Choose by hand with `set_dynamic_conv_mode` / `dynamic_conv_mode`.
      (torch.compile specializes the grouped conv on the batch size: a new size recompiles.)

    thop sees none of these functional convs and matmuls by itself. `torch.utils.flop_counter.
    FlopCounterMode` counts the form that ran: "expand" (auto at a batch above 1 on small outputs)
    counts K convs; count in "grouped" (or at batch 1) for the paper's figure.

    With ``kernels=1`` the softmax is 1 and the layer computes exactly what ``nn.Conv2d`` with
    the same weight computes.

    For inference a BatchNorm after the layer folds into its K kernels (`fold_batchnorm`,
    `fold_dynamic_batchnorm` for a whole net): `export.to_onnx` does so, since no exporter folds a
    BatchNorm into a computed weight (dy_resnet20 at batch 1: 18 fewer nodes, onnxruntime's Conv + Relu
    fuse again).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as nn.Conv2d.
        kernels: K, the number of kernels attended over (the paper uses 4).
        temperature: softmax temperature; large flattens the attention (the paper starts at 30
            and anneals to 1, see `temperature_schedule`).
        reduction: the attention's hidden width is in_channels // reduction (at least 4).
        act: activation inside the attention branch (the net's activation).
        mode: how the output is computed, one of DYNAMIC_CONV_MODES (not saved in the state_dict).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = True, *, kernels: int = 4,
                 temperature: float = 30.0, reduction: int = 4, act: str = "relu", mode: str = "auto"):
        super().__init__()
        check_dynamic_settings(kernels, temperature)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.kernels = kernels
        self.temperature = float(temperature)
        self.mode = check_dynamic_conv_mode(mode)
        hidden = max(in_channels // reduction, 4)
        self.attn_fc1 = nn.Linear(in_channels, hidden)
        self.attn_act = create_act(act)
        self.attn_fc2 = nn.Linear(hidden, kernels)
        self.weight = nn.Parameter(torch.empty(kernels, out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(kernels, out_channels)) if bias else None
        # A per-channel shift after the conv that no attention weighs: a BatchNorm folded in by
        # `fold_batchnorm` into a layer without bias. Not saved: checkpoints keep their keys.
        self.register_buffer("shift", None, persistent=False)
        self.reset_parameters()

    def __setstate__(self, state: dict) -> None:
        state.setdefault("mode", "auto")  # a whole module pickled before modes existed
        super().__setstate__(state)
        if "shift" not in self._buffers:  # ... or before folding existed
            self._buffers["shift"] = None
            self._non_persistent_buffers_set.add("shift")

    @torch.no_grad()
    def fold_batchnorm(self, bn: nn.BatchNorm2d) -> None:
        """Fold the inference-mode `bn` that follows this layer into its K kernels: this layer then
        computes bn(self(x)) and `bn` can go (an export drops one node per layer).

        BN scales each output channel by s = gamma / sqrt(var + eps) and adds beta - s * mean. The
        scale multiplies all K kernels. The shift can join the K biases, s * (b_k - mean) + beta,
        because the attention weights sum to 1 (softmax), so any mix of the K biases carries it
        whole; without biases it is one constant per channel (`shift`), no aggregation needed.
        """
        if bn.training or bn.running_mean is None or bn.num_features != self.out_channels:
            raise ModelConfigError("fold_batchnorm needs an inference-mode BatchNorm2d with running statistics "
                                   f"over this layer's {self.out_channels} output channels")
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        offset = -bn.running_mean * scale
        if bn.bias is not None:
            offset = offset + bn.bias
        self.weight.mul_(scale.view(1, -1, 1, 1, 1))
        if self.shift is not None:
            offset = offset + self.shift * scale
        if self.bias is not None:
            self.bias.mul_(scale).add_(offset)
        else:
            self.shift = offset.detach().clone()

    def reset_parameters(self) -> None:
        # Each kernel is initialised as a static conv would be (kaiming fan_out, as the nets do).
        for k in range(self.kernels):
            nn.init.kaiming_normal_(self.weight[k], mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The per-sample weights of the K kernels, (B, K), rows summing to 1."""
        logits = self.attn_fc2(self.attn_act(self.attn_fc1(x.mean(dim=(2, 3)))))
        return torch.softmax(logits / self.temperature, dim=1)

    def resolved_mode(self, x: torch.Tensor) -> str:
        """The form ("grouped", "unfold" or "expand") that `forward` uses for `x` in the current context."""
        batch = x.shape[0]
        # The TorchScript exporter refuses a computed conv weight, and traces sizes as tensors.
        tracing = torch.jit.is_tracing()
        # torch.compile may make the batch symbolic too; only an export must keep it so in the graph.
        symbolic = not isinstance(batch, int) and (torch.compiler.is_exporting() or not isinstance(batch, torch.SymInt))
        if self.mode == "auto":
            if tracing or symbolic:
                return "unfold"
            # Expand pays where PyTorch itself runs: onnxruntime makes the per-sample kernels cheaply (its
            # arena reuses their memory) and ran expand's wide convs slower (DY-VGG-11, batch 8: 4.6x, not 2.2x).
            if torch.compiler.is_exporting():
                return "grouped"
            positions = self._positions(x)
            if batch == 1:
                return "chunked" if positions <= CHUNKED_MAX_POSITIONS else "grouped"
            if (self.kernels - 1) * positions <= EXPAND_MAX_EXTRA_MACS:
                return "expand"
            kernel_bytes = batch * self.weight[0].numel() * self.weight.element_size()
            return "grouped" if kernel_bytes <= GROUPED_MAX_KERNEL_BYTES else "unfold"
        if self.mode == "grouped" and (symbolic or (tracing and torch.onnx.is_in_onnx_export())):
            # Said here: the exporters' own errors point deep into the graph, not at the remedy.
            raise ModelConfigError("DynamicConv2d mode 'grouped' fixes the batch size and needs the dynamo exporter; "
                                   "export with a dynamic batch or the TorchScript exporter in mode 'unfold' "
                                   "(nets.dynamic_conv_mode(model, 'unfold'))")
        return self.mode

    def _positions(self, x: torch.Tensor) -> int:
        """L = H' * W', the output positions per channel."""
        span = self.dilation * (self.kernel_size - 1) + 1
        height, width = ((size + 2 * self.padding - span) // self.stride + 1 for size in x.shape[-2:])
        return height * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.attention(x)  # (B, K)
        mode = self.resolved_mode(x)
        if mode == "grouped":
            return self._forward_grouped(x, attn)
        if mode == "expand":
            return self._forward_expand(x, attn)
        if mode == "chunked":
            return self.chunked_conv(x, attn)
        return self._forward_unfold(x, attn)

    # Each form is two named parts, so that `bench.scenarios.dynamic_cost` can time and count the same calls apart:
    # "grouped" and "unfold" aggregate the kernels (`aggregate_kernels`) then convolve with them; "expand"
    # convolves with all K kernels (`expand_conv`) then aggregates the outputs (`mix_outputs`).

    def aggregate_kernels(self, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each sample's kernel and bias from the K kernels: (B, C_out*C_in*k*k) and (B, C_out) or None."""
        weight = attn @ self.weight.flatten(1)  # (B, K) @ (K, C_out*C_in*k*k)
        bias = attn @ self.bias if self.bias is not None else None  # (B, K) @ (K, C_out)
        return weight, bias

    def grouped_conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Convolve each sample with its own aggregated kernel in one grouped conv (mode "grouped")."""
        batch, channels, height, width = x.shape
        k = self.kernel_size
        weight = weight.view(-1, channels, k, k)  # (B*C_out, C_in, k, k)
        if self.shift is not None:  # (a folded BatchNorm's shift exists only in a layer without biases)
            bias = self.shift.repeat(batch) if batch != 1 else self.shift
        bias = bias.flatten() if bias is not None else None  # (B*C_out,)
        if isinstance(batch, int) and batch == 1:  # one sample: a plain conv, no reshape of x or out in the graph
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        # Sample b's channels form group b, so group b meets only sample b's kernel.
        out = F.conv2d(x.reshape(1, -1, height, width), weight, bias, self.stride, self.padding, self.dilation,
                       groups=batch)  # (1, B*C_out, H', W')
        return out.view(batch, self.out_channels, out.shape[-2], out.shape[-1])

    def unfold_conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Convolve each sample with its own aggregated kernel as im2col + one batched matmul (mode "unfold")."""
        cols = self._columns(x)  # (B, C_in*k*k, H', W')
        out_hw = cols.shape[-2:]
        out = torch.bmm(weight.view(-1, self.out_channels, cols.shape[1]), cols.flatten(2))  # (B, C_out, L)
        if bias is not None:
            out = out + bias.unsqueeze(-1)  # (B, C_out, 1)
        return self._shifted(out.unflatten(2, out_hw))  # (B, C_out, H', W')

    def expand_conv(self, x: torch.Tensor) -> torch.Tensor:
        """One static conv of `x` with all K kernels: (B, K*C_out, H', W') (mode "expand").

        On small outputs (H'*W' <= EXPAND_GEMM_MAX_POSITIONS) as im2col and one matrix product, (B*L, C_in*k*k)
        @ (C_in*k*k, K*C_out): the same numbers, at GEMM speed where oneDNN's conv is slow.
        """
        bias = self.bias.flatten() if self.bias is not None else None  # (K*C_out,)
        weight = self.weight.flatten(0, 1)  # (K*C_out, C_in, k, k)
        if self._positions(x) > EXPAND_GEMM_MAX_POSITIONS:
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)
        cols = self._columns(x)  # (B, C_in*k*k, H', W')
        rows = cols.flatten(2).transpose(1, 2)  # (B, L, C_in*k*k)
        out = rows @ weight.flatten(1).t()  # (B, L, K*C_out): one GEMM over B*L rows
        if bias is not None:
            out = out + bias
        return out.transpose(1, 2).unflatten(2, cols.shape[-2:])  # (B, K*C_out, H', W')

    def mix_outputs(self, out: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The attention-weighted sum of `expand_conv`'s K outputs: (B, C_out, H', W')."""
        # sum_k a_k (W_k * x + b_k) = (sum_k a_k W_k) * x + sum_k a_k b_k: the conv is linear in its kernel.
        out_hw = out.shape[-2:]
        out = torch.bmm(attn.unsqueeze(1), out.flatten(1).unflatten(1, (self.kernels, -1)))  # (B, 1, K) @ (B, K, C_out*L)
        return self._shifted(out.view(-1, self.out_channels, *out_hw))

    def chunked_conv(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Aggregate and apply the kernels a block of output channels at a time (mode "chunked").

        im2col once, then per block of output channels: that block of every sample's kernel (small enough
        to stay in cache) and one batched matmul (B, L, C_in*k*k) @ (B, C_in*k*k, block). No B full-size
        kernels are written to memory and read back (grouped) and no K-fold MACs are spent (expand): on
        VGG's 512-channel 2x2 layers grouped cost about 3x this form. The (L, C_in*k*k) @ (C_in*k*k, block)
        orientation matters: with the tiny L as the matmul's last dimension it ran 6x slower on one CPU core.
        """
        cols_t, out_hw = self.chunk_columns(x)
        blocks = [torch.bmm(cols_t, self.chunk_kernel(attn, start, stop).transpose(1, 2))  # (B, L, block)
                  for start, stop in self.chunk_bounds(x)]
        return self.chunk_output(blocks, attn, out_hw)

    def chunk_columns(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """im2col as (B, L, C_in*k*k), and (H', W')."""
        cols = self._columns(x)  # (B, C_in*k*k, H', W')
        return cols.flatten(2).transpose(1, 2), cols.shape[-2:]

    def chunk_bounds(self, x: torch.Tensor) -> list[tuple[int, int]]:
        """The blocks of output channels "chunked" aggregates at a time: B * block * C_in*k*k <= CHUNK_FLOATS."""
        taps = self.in_channels * self.kernel_size * self.kernel_size
        step = max(8, CHUNK_FLOATS // (x.shape[0] * taps))
        return [(start, min(start + step, self.out_channels)) for start in range(0, self.out_channels, step)]

    def chunk_kernel(self, attn: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output channels start..stop of every sample's kernel: (B, block, C_in*k*k)."""
        taps = self.in_channels * self.kernel_size * self.kernel_size
        weight = self.weight.view(self.kernels, -1)[:, start * taps:stop * taps]  # (K, block*C_in*k*k)
        return (attn @ weight).view(-1, stop - start, taps)

    def chunk_output(self, blocks: list[torch.Tensor], attn: torch.Tensor, out_hw: torch.Size) -> torch.Tensor:
        """The blocks (B, L, block) joined, plus the aggregated bias: (B, C_out, H', W')."""
        out = torch.cat(blocks, 2) if len(blocks) > 1 else blocks[0]  # (B, L, C_out)
        if self.bias is not None:
            out = out + (attn @ self.bias).unsqueeze(1)  # (B, 1, C_out)
        return self._shifted(out.transpose(1, 2).unflatten(2, out_hw))  # (B, C_out, H', W')

    def _shifted(self, out: torch.Tensor) -> torch.Tensor:
        return out + self.shift.view(-1, 1, 1) if self.shift is not None else out

    def _forward_grouped(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.grouped_conv(x, *self.aggregate_kernels(attn))

    def _forward_expand(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.mix_outputs(self.expand_conv(x), attn)

    def _forward_unfold(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.unfold_conv(x, *self.aggregate_kernels(attn))

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """im2col as F.unfold orders it, (B, C_in*k*k, H', W'), from strided slices of the padded input.

        No size is read from `x`: each slice stops at an offset from the end, so the exported graph
        holds only Pad, Slice, Concat and reshapes, whatever the batch (and the height and width).
        Rows are shifted first and columns second (2k slices, not k*k): the dynamo exporter's
        optimizer took 10 s over the k*k-slice graph of dy_resnet20.
        """
        p, s, d, k = self.padding, self.stride, self.dilation, self.kernel_size
        padded = F.pad(x, (p, p, p, p)) if p else x
        if k == 1:
            return padded[:, :, ::s, ::s]
        last = d * (k - 1)  # offset of the last tap; every tap keeps the same H' x W' positions
        shifts = [slice(i * d, i * d - last or None, s) for i in range(k)]
        rows = torch.cat([padded.unsqueeze(2)[:, :, :, r] for r in shifts], 2)  # (B, C_in, k, H', W_pad)
        cols = torch.cat([rows.unsqueeze(3)[..., c] for c in shifts], 3)  # (B, C_in, k, k, H', W')
        return cols.flatten(1, 3)  # (B, C_in*k*k, H', W')

    def extra_repr(self) -> str:
        mode = "" if self.mode == "auto" else f", mode={self.mode}"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, kernels={self.kernels}, temperature={self.temperature:g}{mode}")


def check_dynamic_conv_mode(mode: str) -> str:
    """`mode` if it is one of DYNAMIC_CONV_MODES, else ModelConfigError naming them."""
    if mode not in DYNAMIC_CONV_MODES:
        raise ModelConfigError(f"unknown dynamic conv mode {mode!r}; choose one of {', '.join(DYNAMIC_CONV_MODES)}")
    return mode


def dynamic_conv_layer(kernels: int = 4, temperature: float = 30.0, act: str = "relu"):
    """A `conv_layer` factory (nn.Conv2d's signature) that builds DynamicConv2d layers."""
    return functools.partial(DynamicConv2d, kernels=kernels, temperature=temperature, act=act)


# --------------------------------------------------------------------------------------------
# Residual-in-residual dense block (ESRGAN) and self-attention (SAGAN)
# --------------------------------------------------------------------------------------------


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the last maps back to `channels`, scaled and added.

    Wang et al., "ESRGAN", ECCV Workshops 2018 (arXiv:1809.00219), Fig. 4. No BatchNorm: the
    paper removes it from the SR trunk. `act` replaces ESRGAN's LeakyReLU(0.2) like every other
    activation in rbench.
    """

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, act: str = "relu"):
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )
        self.acts = nn.ModuleList(create_act(act, inplace=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv, act in zip(self.convs[:4], self.acts):
            features.append(act(conv(torch.cat(features, dim=1))))
        out = self.convs[4](torch.cat(features, dim=1))
        return x + self.res_scale * out  # residual scaling keeps the deep trunk stable (ESRGAN §3.2)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, the whole scaled and added again."""

    def __init__(self, channels: int = 64, growth: int = 32, res_scale: float = 0.2, act: str = "relu"):
        super().__init__()
        self.res_scale = res_scale
        self.blocks = nn.Sequential(*(ResidualDenseBlock(channels, growth, res_scale, act) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.blocks(x)


class SelfAttention2d(nn.Module):
    """SAGAN self-attention: every position attends to every other; output gamma * o + x.

    Zhang et al., "Self-Attention Generative Adversarial Networks", ICML 2019 (arXiv:1805.08318).
    Query and key are 1x1 convs to C/8 (attention only needs a cheap similarity), value keeps C.
    gamma starts at 0, so the block starts as the identity and learns how much non-local
    evidence to add (SAGAN §3). Memory grows as (H*W)^2: meant for small feature maps.
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k = self.key(x).flatten(2)  # (B, C/8, N)
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N, N): row i = where position i looks
        v = self.value(x).flatten(2)  # (B, C, N)
        out = torch.bmm(v, attn.transpose(1, 2)).view(batch, channels, height, width)
        return x + self.gamma * out
