"""Affine (or additive) coupling with a zero-initialised output and a floored scale, optionally
after a rational-quadratic spline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dpglow.flow.spline import num_spline_params, rational_quadratic_spline

# The spline couplings' interval [-SPLINE_BOUND, SPLINE_BOUND] (identity outside): the coupled
# half leaves every ActNorm at unit scale, so it covers all but the tails.
SPLINE_BOUND = 3.0

# Size of the chunk of pixel rows that the CPU coupling network computes at a time: one chunk's
# hidden activations (rows x hidden x itemsize bytes) stay in cache between the matrix products
# and the elementwise passes (bias, ReLU and their gradients). 2 MiB measured best of 0.5-8 MiB
# for widths 256 and 512 (2 threads, 1 MiB L2 per core, 32 MiB L3).
CHUNK_BYTES = 1 << 21


def _chunk_rows(rows: int, hidden: int, itemsize: int) -> int:
    return max(32, min(rows, CHUNK_BYTES // (hidden * itemsize)))


def _taps_weight(last: nn.Conv2d) -> torch.Tensor:
    """``[9 * C_out, C_in]``: row ``c * 9 + ky * 3 + kx`` is the flipped tap (``fold``'s order)."""
    # fold adds tap (ky, kx) of input pixel p to output pixel p + (ky, kx) - 1; a convolution
    # reads input pixel q + (ky, kx) - 1 for output q: the taps are flipped.
    return last.weight.flip(2, 3).permute(0, 2, 3, 1).reshape(9 * last.out_channels, -1)


def _rows_net(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    w3: torch.Tensor,
    *,
    save: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """The forward computation of :class:`_RowsNet`, and with ``save`` its saved activations.

    Without ``save`` (no autograd) two chunk-sized buffers, reused chunk after chunk, hold the
    hidden activations: nothing of ``B * H * W`` rows by ``hidden`` is allocated. (Fresh
    allocations that size come from the system each call, freed memory being returned to it:
    the full-size activations cost encode 130k page faults and a third of its time.)
    """
    b, c, h, w = x.shape
    n = b * h * w
    hidden = w1.shape[0]
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(n, 9 * c)
    w1t, w2t, w3t = w1.t(), w2.t(), w3.t()
    step = _chunk_rows(n, hidden, x.element_size())
    taps = x.new_empty(n, w3.shape[0])
    if save:
        h1, h2 = x.new_empty(n, hidden), x.new_empty(n, hidden)
    else:
        buf1, buf2 = x.new_empty(step, hidden), x.new_empty(step, hidden)
    for start in range(0, n, step):
        stop = min(n, start + step)
        if save:
            a1, a2 = h1[start:stop], h2[start:stop]
        else:
            a1, a2 = buf1[: stop - start], buf2[: stop - start]
        torch.addmm(b1, cols[start:stop], w1t, out=a1).relu_()
        torch.addmm(b2, a1, w2t, out=a2).relu_()
        torch.mm(a2, w3t, out=taps[start:stop])
    out = F.fold(taps.view(b, h * w, -1).transpose(1, 2), (h, w), 3, padding=1)
    return out, (cols, h1, h2) if save else None


class _RowsNet(torch.autograd.Function):
    """The coupling network up to the last convolution's bias, as row-chunked matrix products.

    ``x [B, C, H, W] -> fold(relu(relu(cols(x) W1^T + b1) W2^T + b2) W3^T)`` with ``cols`` the
    3x3 im2col rows and ``W3`` the last convolution's taps (:func:`_taps_weight`). Forward and
    backward go through the ``B * H * W`` pixel rows a chunk at a time (:data:`CHUNK_BYTES`), so
    the elementwise passes and the bias gradients work on cached data, the ReLU gradients are
    applied in place, and the weight gradients accumulate chunk by chunk. Without autograd call
    :func:`_rows_net` (``save=False``) instead: ``apply`` cannot tell ``torch.no_grad()`` apart.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, w3):
        out, (cols, h1, h2) = _rows_net(x, w1, b1, w2, b2, w3, save=True)
        ctx.save_for_backward(cols, h1, h2, w1, w2, w3)
        ctx.shape = x.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        cols, h1, h2, w1, w2, w3 = ctx.saved_tensors
        b, c, h, w = ctx.shape
        n, hidden = h1.shape
        # fold's gradient is im2col: the gradient of every pixel's taps, as rows.
        gtaps = F.unfold(grad, 3, padding=1).transpose(1, 2).reshape(n, -1)
        need = ctx.needs_input_grad
        weights = any(need[1:])  # a frozen network (e.g. an attack through it): input only
        gw1, gb1 = torch.zeros_like(w1), torch.zeros_like(w1[:, 0])
        gw2, gb2 = torch.zeros_like(w2), torch.zeros_like(w2[:, 0])
        gw3 = torch.zeros_like(w3)
        gcols = cols.new_empty(cols.shape) if need[0] else None
        step = _chunk_rows(n, hidden, h1.element_size())
        g1, g2 = h1.new_empty(step, hidden), h1.new_empty(step, hidden)
        for start in range(0, n, step):
            stop = min(n, start + step)
            a1, a2, gt = h1[start:stop], h2[start:stop], gtaps[start:stop]
            d1, d2 = g1[: stop - start], g2[: stop - start]
            torch.mm(gt, w3, out=d2)
            torch.ops.aten.threshold_backward.grad_input(d2, a2, 0, grad_input=d2)
            torch.mm(d2, w2, out=d1)
            if weights:
                gw3.addmm_(gt.t(), a2)
                gb2 += d2.sum(0)
                gw2.addmm_(d2.t(), a1)
            torch.ops.aten.threshold_backward.grad_input(d1, a1, 0, grad_input=d1)
            if weights:
                gb1 += d1.sum(0)
                gw1.addmm_(d1.t(), cols[start:stop])
            if gcols is not None:
                torch.mm(d1, w1, out=gcols[start:stop])
        gx = None
        if gcols is not None:
            gx = F.fold(gcols.view(b, h * w, 9 * c).transpose(1, 2), (h, w), 3, padding=1)
        if not weights:
            return gx, None, None, None, None, None
        return gx, gw1, gb1, gw2, gb2, gw3


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output zeros, with a learned per-channel output gain.

    A zero output makes every coupling start as the identity (Glow, sec. 3.3).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_gain = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.exp(self.log_gain * 3)

    def forward_rows(self, rows: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """The same map for an input given as pixel rows ``[B*H*W, C_in]`` (channels last) of
        a ``(B, H, W)`` image; returns ``[B, C_out, H, W]``.

        One matrix product gives every pixel's 9 * C_out tap contributions, and col2im (``fold``)
        sums them at their output pixels. With few output channels this is faster on CPU than
        oneDNN's direct convolution, forward and backward (see docs/benchmarks.md, speed work).
        """
        b, h, w = shape
        out_channels = self.conv.out_channels
        taps = (rows @ _taps_weight(self.conv).t()).view(b, h * w, 9 * out_channels).transpose(1, 2)
        return self.finish(F.fold(taps, (h, w), 3, padding=1))

    def finish(self, summed: torch.Tensor) -> torch.Tensor:
        """The bias and the output gain on the convolution's weighted sums ``[B, C_out, H, W]``."""
        return (summed + self.conv.bias.view(1, -1, 1, 1)) * torch.exp(self.log_gain * 3)


class AffineCoupling(nn.Module):
    """Transforms the second half of the channels conditioned on the first half.

    ``y_b = (x_b + t(x_a)) * s(x_a)`` with ``s = floor + (1 - floor) * sigmoid(h + 2)``.
    The floor bounds the inverse's gain (``1 / s <= 1 / floor``): a scale collapsing towards zero
    is what makes a trained Glow's float32 inverse drift and off-distribution latents blow up.

    ``spline_bins = K >= 2`` first passes ``x_b`` through an elementwise monotone
    rational-quadratic spline of ``K`` bins on ``[-SPLINE_BOUND, SPLINE_BOUND]`` (identity
    outside; :func:`~dpglow.flow.spline.rational_quadratic_spline`) whose ``3K - 1`` parameters
    per element come from a zero-initialised 1x1 head on the network's last hidden layer:
    ``y_b = (spline(x_b; x_a) + t(x_a)) * s(x_a)`` (Flow++'s order: the nonlinearity, then the
    affine map). At initialisation the spline is the identity. Its inverse maps into the
    interval, so it cannot blow up a latent; where a trained spline is nearly flat, its float32
    inverse is as ill-conditioned as that slope (the error grows as 1 / slope).
    """

    def __init__(
        self,
        num_channels: int,
        hidden_channels: int,
        *,
        affine: bool = True,
        scale_floor: float = 0.1,
        spline_bins: int = 0,
    ) -> None:
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"coupling needs an even number of channels, got {num_channels}")
        if not 0.0 < scale_floor < 1.0:
            raise ValueError(f"scale_floor must lie in (0, 1), got {scale_floor}")
        check_spline_bins(spline_bins)
        self.affine = affine
        self.scale_floor = scale_floor
        half = num_channels // 2
        first = nn.Conv2d(half, hidden_channels, 3, padding=1)
        second = nn.Conv2d(hidden_channels, hidden_channels, 1)
        for conv in (first, second):
            nn.init.normal_(conv.weight, 0.0, 0.05)
            nn.init.zeros_(conv.bias)
        self.net = nn.Sequential(
            first,
            nn.ReLU(),
            second,
            nn.ReLU(),
            ZeroConv2d(hidden_channels, num_channels if affine else half),
        )
        self.spline_head = None
        if spline_bins:
            self.spline_head = nn.Conv2d(hidden_channels, half * num_spline_params(spline_bins), 1)
            nn.init.zeros_(self.spline_head.weight)
            nn.init.zeros_(self.spline_head.bias)

    # False: the plain matrix-product path below (what bf16 autocast runs), for comparisons.
    rows_net = True

    def _hidden(self, x_a: torch.Tensor) -> torch.Tensor:
        """``self.net(x_a)``; on CPU computed as matrix products over pixel rows.

        The thin first 3x3 convolution becomes im2col (``unfold``) + one matrix product, the 1x1
        convolution a matrix product, the thin last one :meth:`ZeroConv2d.forward_rows`. Same
        parameters and the same function up to float rounding, about 1.3x faster for a training
        step than oneDNN's convolutions at these shapes. GPUs keep the cuDNN convolutions.

        In float32/float64 (no autocast) it runs chunk by chunk over the rows (:class:`_RowsNet`,
        :func:`_rows_net` without autograd): the same numbers (bit for bit forward, gradients up
        to the order of the chunk sums), a training step 5-8% and encoding / decoding 25-40%
        faster with 2 threads.
        """
        if x_a.device.type != "cpu":
            return self.net(x_a)
        first, _, second, _, last = self.net
        if self.rows_net and not torch.is_autocast_enabled("cpu"):
            hidden = first.out_channels
            inputs = (
                x_a,
                first.weight.view(hidden, -1),
                first.bias,
                second.weight.view(hidden, -1),
                second.bias,
                _taps_weight(last.conv),
            )
            if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
                out = _RowsNet.apply(*inputs)
            else:
                out = _rows_net(*inputs, save=False)[0]
            return last.finish(out)
        b, c, h, w = x_a.shape
        hidden = first.out_channels
        cols = F.unfold(x_a, 3, padding=1).transpose(1, 2).reshape(b * h * w, 9 * c)
        rows = torch.relu_(torch.addmm(first.bias, cols, first.weight.view(hidden, -1).t()))
        rows = torch.relu_(torch.addmm(second.bias, rows, second.weight.view(hidden, -1).t()))
        return last.forward_rows(rows, (b, h, w))

    def _with_spline(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self.net(x_a), spline parameters [B, C/2, H, W, 3K - 1])``; on CPU as matrix
        products over pixel rows (the unchunked path of :meth:`_hidden`)."""
        first, _, second, _, last = self.net
        head = self.spline_head
        b, c, h, w = x_a.shape
        per = head.out_channels // c
        if x_a.device.type != "cpu":
            features = self.net[:4](x_a)
            params = head(features).view(b, c, per, h, w).permute(0, 1, 3, 4, 2)
            return last(features), params
        hidden = first.out_channels
        cols = F.unfold(x_a, 3, padding=1).transpose(1, 2).reshape(b * h * w, 9 * c)
        rows = torch.relu_(torch.addmm(first.bias, cols, first.weight.view(hidden, -1).t()))
        rows = torch.relu_(torch.addmm(second.bias, rows, second.weight.view(hidden, -1).t()))
        params = torch.addmm(head.bias, rows, head.weight.view(-1, hidden).t())
        params = params.view(b, h, w, c, per).permute(0, 3, 1, 2, 4)
        return last.forward_rows(rows, (b, h, w)), params

    def _scale_shift(
        self, x_a: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``(scale or None for an additive coupling, shift, spline parameters or None)``."""
        # Back to the input's dtype: under bf16 autocast only the network runs in bf16; the
        # scale, the shift, the spline, the coupled half and the logdet stay float32.
        if self.spline_head is None:
            h, params = self._hidden(x_a), None
        else:
            h, params = self._with_spline(x_a)
            params = params.to(x_a.dtype)
        h = h.to(x_a.dtype)
        if not self.affine:
            return None, h, params
        raw, shift = h.chunk(2, dim=1)
        scale = self.scale_floor + (1.0 - self.scale_floor) * torch.sigmoid(raw + 2.0)
        return scale, shift, params

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_a, x_b = x.chunk(2, dim=1)
        scale, shift, params = self._scale_shift(x_a)
        logdet = x.new_zeros(x.shape[0])
        if params is not None:
            x_b, log_slope = rational_quadratic_spline(x_b, params, bound=SPLINE_BOUND)
            logdet = logdet + log_slope.flatten(1).sum(1)
        if scale is None:
            return torch.cat([x_a, x_b + shift], dim=1), logdet
        y_b = (x_b + shift) * scale
        logdet = logdet + torch.log(scale).flatten(1).sum(1)
        return torch.cat([x_a, y_b], dim=1), logdet

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        y_a, y_b = y.chunk(2, dim=1)
        scale, shift, params = self._scale_shift(y_a)
        x_b = y_b - shift if scale is None else y_b / scale - shift
        if params is not None:
            x_b = rational_quadratic_spline(x_b, params, bound=SPLINE_BOUND, inverse=True)[0]
        return torch.cat([y_a, x_b], dim=1)


def check_spline_bins(spline_bins: int) -> None:
    """0 (no spline) or a number of bins >= 2; a ValueError otherwise."""
    ok = isinstance(spline_bins, int) and not isinstance(spline_bins, bool)
    if not ok or spline_bins == 1 or spline_bins < 0:
        raise ValueError(
            f"spline_bins must be 0 (affine or additive coupling only) or an int >= 2 (the "
            f"bins of a rational-quadratic spline before it), got {spline_bins!r}"
        )
