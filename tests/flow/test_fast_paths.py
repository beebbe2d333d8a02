"""The fast paths compute what the plain computation does: the coupling network as matrix
products, the cached 1x1-convolution weights, and float32 numerics under bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from dpglow.flow import AffineCoupling, Glow, InvConv2dLU, ZeroConv2d, coupling


def _perturbed(module: torch.nn.Module, scale: float = 0.1, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def _tiny_glow(**kw) -> Glow:
    torch.manual_seed(0)
    model = Glow(image_size=8, num_levels=2, depth=2, hidden_channels=16, **kw)
    model.initialize(torch.rand(32, 1, 8, 8) - 0.5)
    return _perturbed(model, 0.05, seed=3)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coupling_matmul_path_equals_the_convolutions(affine, dtype):
    torch.manual_seed(0)
    layer = _perturbed(AffineCoupling(6, 16, affine=affine).to(dtype))
    x_a = torch.randn(3, 3, 5, 7, dtype=dtype, requires_grad=True)
    fast, plain = layer._hidden(x_a), layer.net(x_a)
    assert fast.shape == plain.shape and fast.dtype == plain.dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast, plain, atol=tol, rtol=tol)
    # Same gradients for the input and every parameter.
    grad_out = torch.randn_like(plain)
    params = [x_a, *layer.parameters()]
    fast_grads = torch.autograd.grad(fast, params, grad_out)
    plain_grads = torch.autograd.grad(plain, params, grad_out)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=10 * tol, rtol=10 * tol)


def test_spline_coupling_rows_path_equals_the_convolutions():
    """On CPU the spline coupling's network and its 1x1 head run as matrix products over pixel
    rows; they compute the convolutions' outputs, the head's channels in the same order."""
    torch.manual_seed(0)
    layer = _perturbed(AffineCoupling(6, 16, spline_bins=4).double())
    x_a = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    out, params = layer._with_spline(x_a)
    features = layer.net[:4](x_a)
    per_element = layer.spline_head(features).view(2, 3, 11, 5, 7).permute(0, 1, 3, 4, 2)
    torch.testing.assert_close(out, layer.net(x_a), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(params, per_element, atol=1e-12, rtol=1e-12)


def test_zero_conv_rows_equals_the_convolution():
    torch.manual_seed(0)
    layer = _perturbed(ZeroConv2d(12, 5))
    x = torch.randn(2, 12, 6, 4)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(layer.forward_rows(rows, (2, 6, 4)), layer(x), atol=1e-5, rtol=1e-5)


def test_invconv_cache_is_reused_and_equals_a_fresh_computation():
    layer = _perturbed(InvConv2dLU(6))
    with torch.no_grad():
        weight, inverse = layer.weight(), layer.inverse_weight()
        assert layer.weight() is weight and layer.inverse_weight() is inverse
    assert not weight.requires_grad and not inverse.requires_grad
    torch.testing.assert_close(weight, layer._weight().detach(), atol=0, rtol=0)
    fresh_inverse = torch.linalg.inv(layer._weight().detach().double()).float()
    torch.testing.assert_close(inverse, fresh_inverse, atol=0, rtol=0)
    # With autograd on, the weight is part of the graph and never comes from the cache.
    assert layer.weight().requires_grad and layer.weight() is not weight


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=1e-3),
        # Fused Adam (what training uses) updates in place without bumping the tensors' version
        # counters: a cache keyed on versions kept the step-0 weight through a whole training run.
        lambda params: torch.optim.Adam(params, lr=1e-3, fused=True),
    ],
    ids=["sgd", "fused_adam"],
)
def test_invconv_cache_follows_optimizer_steps_loads_and_dtype_changes(make_optimizer):
    layer = _perturbed(InvConv2dLU(4))
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        stale = layer.inverse_weight()
        stale_y = layer(x)[0]
    optimizer = make_optimizer(layer.parameters())
    y, logdet = layer(x)
    (y.square().sum() + logdet.sum()).backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(layer.reverse(layer(x)[0]), x, atol=1e-5, rtol=0)
        torch.testing.assert_close(layer(x)[0], layer._mix(x, layer._weight()), atol=0, rtol=0)
        assert not torch.allclose(layer(x)[0], stale_y)
        new = layer.inverse_weight()
    assert not torch.allclose(new, stale)
    torch.testing.assert_close(
        new, torch.linalg.inv(layer._weight().detach().double()).float(), atol=0, rtol=0
    )

    other = _perturbed(InvConv2dLU(4), seed=7)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer.inverse_weight(), other.inverse_weight())
    layer.double()
    with torch.no_grad():
        assert layer.inverse_weight().dtype == torch.float64


def test_encode_and_decode_without_autograd_equal_the_plain_passes():
    model = _tiny_glow()
    x = torch.rand(4, 1, 8, 8) - 0.5
    _, logdet, latents = model(x)  # autograd on: nothing cached
    assert logdet.requires_grad
    model.eval()
    with torch.no_grad():
        fast = model.encode(x)
        # Equal up to float32 rounding (matmul may pick another kernel without autograd).
        for a, b in zip(fast, latents, strict=True):
            torch.testing.assert_close(a, b.detach(), atol=1e-6, rtol=1e-6)
        decoded = model.decode(fast)
    torch.testing.assert_close(decoded, model.decode(latents).detach(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(decoded, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("split_prior", ["fixed", "learned"])
def test_bf16_autocast_keeps_logdet_latents_and_inverse_in_float32(split_prior):
    model = _tiny_glow(split_prior=split_prior)
    x = torch.rand(4, 1, 8, 8) - 0.5
    with torch.no_grad():
        reference = model.log_prob(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_p, logdet, latents = model(x)
            invconv = model.levels[0].steps[0].invconv
            assert invconv(torch.randn(2, 4, 4, 4))[0].dtype == torch.float32
            decoded = model.decode(latents)
    assert log_p.dtype == logdet.dtype == torch.float32
    assert all(u.dtype == torch.float32 for u in latents)
    assert decoded.dtype == torch.float32
    # The coupling networks run in bf16 (about 3 significant digits), the rest in float32.
    torch.testing.assert_close(log_p + logdet, reference, atol=0.5, rtol=1e-2)
    torch.testing.assert_close(decoded, x, atol=1e-2, rtol=0)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 32 rows (the minimum): the loops run over several chunks, a partial one last."""
    monkeypatch.setattr(coupling, "CHUNK_BYTES", 1)


def _rows_net_inputs(layer: AffineCoupling, x_a: torch.Tensor) -> tuple:
    first, _, second, _, last = layer.net
    hidden = first.out_channels
    return (
        x_a,
        first.weight.view(hidden, -1),
        first.bias,
        second.weight.view(hidden, -1),
        second.bias,
        coupling._taps_weight(last.conv),
    )


def test_rows_net_passes_gradcheck(small_chunks):
    torch.manual_seed(0)
    layer = _perturbed(AffineCoupling(4, 5).double(), 0.3)
    x_a = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)  # 84 rows: 3 chunks
    inputs = tuple(t.detach().requires_grad_() for t in _rows_net_inputs(layer, x_a))
    assert torch.autograd.gradcheck(coupling._RowsNet.apply, inputs)
    # Only the input's gradient wanted (a frozen network): the weight gradients are skipped.
    frozen = (inputs[0], *(t.detach() for t in inputs[1:]))
    assert torch.autograd.gradcheck(coupling._RowsNet.apply, frozen)


@pytest.mark.parametrize("grad", [True, False])
def test_chunked_coupling_network_equals_the_convolutions(small_chunks, grad):
    torch.manual_seed(0)
    layer = _perturbed(AffineCoupling(6, 16))
    x_a = torch.randn(2, 3, 8, 9, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        fast, plain = layer._hidden(x_a), layer.net(x_a)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    if grad:
        params = [x_a, *layer.parameters()]
        grad_out = torch.randn_like(plain)
        fast_grads = torch.autograd.grad(fast, params, grad_out)
        plain_grads = torch.autograd.grad(plain, params, grad_out)
        for a, b in zip(fast_grads, plain_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_chunked_encode_decode_and_log_prob_follow_the_chunk_size(monkeypatch):
    model = _tiny_glow()
    x = torch.rand(4, 1, 8, 8) - 0.5
    with torch.no_grad():
        log_p, latents = model.log_prob(x), model.encode(x)
        monkeypatch.setattr(coupling, "CHUNK_BYTES", 1)
        torch.testing.assert_close(model.log_prob(x), log_p, atol=1e-5, rtol=1e-6)
        for a, b in zip(model.encode(x), latents, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(model.decode(latents), x, atol=1e-5, rtol=0)


def test_adam_runs_fused_where_supported_and_as_configured_otherwise():
    import functools

    from dpglow.utils.optim import build_optimizers

    layer = torch.nn.Linear(3, 2)
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    assert build_optimizers(layer, adam)["optimizer"].defaults["fused"] is True
    assert build_optimizers(layer, torch.optim.AdamW)["optimizer"].defaults["fused"] is True
    # An explicit choice in the config wins; other optimizers are left alone.
    explicit = functools.partial(torch.optim.Adam, lr=1e-3, fused=False)
    assert not build_optimizers(layer, explicit)["optimizer"].defaults["fused"]
    foreach = functools.partial(torch.optim.Adam, lr=1e-3, foreach=True)
    assert not build_optimizers(layer, foreach)["optimizer"].defaults["fused"]
    sgd = build_optimizers(layer, functools.partial(torch.optim.SGD, lr=0.1))["optimizer"]
    assert not sgd.defaults.get("fused")
    # The fused step is the same update up to float rounding.
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    models = [torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.Adam(models[0].parameters(), lr=1e-3)]
    optimizers.append(build_optimizers(models[1], adam)["optimizer"])
    for _ in range(3):
        for model, opt in zip(models, optimizers, strict=True):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
