"""The fast training paths against the reference ones: batched passes, channels-last, bfloat16 autocast,
and the config switches and checkpoints that select them."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from data_utils.phantoms import make_dataset
from lmisa_lite import device as device_module
from lmisa_lite import training
from lmisa_lite.adversarial import critic_update
from lmisa_lite.config import ARCHITECTURE_FIELDS, TrainConfig, build_networks
from lmisa_lite.device import autocast_dtype, channels_last_format, cpu_has_native_bf16, memory_format_of
from lmisa_lite.inference import predict_volume
from lmisa_lite.training import load_checkpoint, train, update_average

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

SIZE = 32
SPEED_FIELDS = ("batched_passes", "channels_last", "closed_form_penalty")


@pytest.fixture(scope="module")
def domains():
    ct = make_dataset("kidney", "ct", n=3, dims=2, seed=0, shape=(SIZE, SIZE))
    mri = make_dataset("kidney", "mri", n=3, dims=2, seed=1, shape=(SIZE, SIZE))
    return ct, mri


@pytest.fixture
def fresh_detection():
    """A clean bfloat16 detection cache before and after the test (which may monkeypatch the reader)."""
    cpu_has_native_bf16.cache_clear()
    yield
    cpu_has_native_bf16.cache_clear()


def tiny(**changes) -> TrainConfig:
    base = dict(steps=2, image_size=(SIZE, SIZE), base_filters=4, depth=3, progress=False, device="cpu",
                val_every=1)
    return TrainConfig(**{**base, **changes})


def tiny_batches(config: TrainConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random labelled source, target and unlabelled source batches of ``config``'s shape."""
    g = torch.Generator().manual_seed(seed)
    shape = (config.batch_size, 1, *config.image_size)
    fmt = channels_last_format(config.spatial_dims, config.channels_last)

    def image():
        return torch.randn(shape, generator=g).contiguous(memory_format=fmt)

    def label():
        shape = (config.batch_size, *config.image_size)
        return torch.randint(config.resolved_num_classes, shape, generator=g)

    return dict(xs=image(), ys=label(), xt=image(), yt=label(), xu=image())


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}


# ---- batched passes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims, channels_last", [(2, False), (2, True), (3, True)])
def test_batched_generator_pass_equals_per_domain_passes_with_instance_norm(dims, channels_last):
    size = (SIZE, SIZE) if dims == 2 else (16, 16, 8)
    base = tiny(spatial_dims=dims, image_size=size, batch_size=2, channels_last=channels_last, amp=False)
    model, critic = build_networks(base)
    fmt = channels_last_format(dims, channels_last)
    model.to(memory_format=fmt)
    critic.to(memory_format=fmt)
    batches = tiny_batches(base)
    results = {}
    for batched in (False, True):
        config = TrainConfig(**{**base.to_dict(), "batched_passes": batched})
        model.zero_grad(set_to_none=True)
        with training._frozen(critic):
            losses = training._generator_losses(config, model, critic, batches)
        losses["loss_g"].backward()
        results[batched] = losses, grads(model)
    (per_domain, grads_a), (batched, grads_b) = results[False], results[True]
    for key in ("loss_g", "loss_seg", "loss_rec", "loss_adv"):
        torch.testing.assert_close(batched[key], per_domain[key], rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(batched["logits_t"], per_domain["logits_t"], rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for key in grads_a:  # float rounding: relative to each gradient's scale (sums differ in order)
        scale = float(grads_a[key].abs().max())
        torch.testing.assert_close(grads_b[key], grads_a[key], rtol=1e-4, atol=1e-5 * scale, msg=key)


def test_batched_critic_pass_equals_two_passes():
    base = tiny(batch_size=2, amp=False)
    model, critic = build_networks(base)
    batches = tiny_batches(base)
    with torch.no_grad():
        _, logits_t = model(batches["xt"])
    after = {}
    for batched in (False, True):
        config = TrainConfig(**{**base.to_dict(), "batched_passes": batched})
        net = copy.deepcopy(critic)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(7)  # the same interpolation weights in both
        out = critic_update(config, net, opt, batches["ys"], logits_t, generator)
        after[batched] = out, net
    (two, net_a), (one, net_b) = after[False], after[True]
    for key in ("loss_critic", "gp", "wasserstein"):
        torch.testing.assert_close(one[key], two[key], rtol=1e-5, atol=1e-6, msg=key)
    for (key, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("dims, gp_on", [(2, "labels"), (3, "labels"), (2, "reconstruction")])
def test_closed_form_penalty_equals_the_double_backward(dims, gp_on):
    size = (SIZE, SIZE) if dims == 2 else (16, 16, 8)
    base = tiny(spatial_dims=dims, image_size=size, batch_size=2, amp=False, gp_on=gp_on, n_critic=2)
    model, critic = build_networks(base)
    batches = tiny_batches(base)
    with torch.no_grad():
        rec_t, logits_t = model(batches["xt"])
    after = {}
    for closed in (False, True):
        config = TrainConfig(**{**base.to_dict(), "closed_form_penalty": closed})
        net = copy.deepcopy(critic)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        out = critic_update(config, net, opt, batches["ys"], logits_t, torch.Generator().manual_seed(7),
                            images_t=(batches["xt"], rec_t))
        after[closed] = out, net
    (autograd, net_a), (closed, net_b) = after[False], after[True]
    assert float(autograd["gp"].detach()) > 0
    for key in ("loss_critic", "gp", "wasserstein"):
        torch.testing.assert_close(closed[key], autograd[key], rtol=1e-5, atol=1e-6, msg=key)
    for (key, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)


def test_batch_norm_keeps_one_pass_per_domain():
    config = tiny(norm="batch", ema_decay=0, batch_size=2, batched_passes=True, amp=False)
    model, critic = build_networks(config)
    batches = tiny_batches(config)
    separate, together = copy.deepcopy(model), copy.deepcopy(model)
    with training._frozen(critic):
        training._generator_losses(config, model, critic, batches)
    with torch.no_grad():
        for key in ("xs", "xt", "xu"):  # the order of training: labelled source, target, unlabelled source
            separate(batches[key])
        together(torch.cat([batches[k] for k in ("xs", "xt", "xu")]))
    buffers = dict(model.named_buffers())
    assert any("running_mean" in k for k in buffers)
    for key, value in separate.named_buffers():
        assert torch.equal(buffers[key], value), key
    assert not all(torch.equal(buffers[k], v) for k, v in together.named_buffers())


# ---- precision: detection and the autocast dtype -----------------------------------------------------------
def test_bf16_detection_reads_the_cpu_flags(monkeypatch, fresh_detection):
    monkeypatch.setattr(device_module, "_read_cpu_flags", lambda: {"fpu", "avx512f", "amx_bf16"})
    assert cpu_has_native_bf16() is True
    assert autocast_dtype("cpu", None) == (torch.bfloat16 if device_module.CPU_BF16_BY_DEFAULT else None)
    cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(device_module, "_read_cpu_flags", lambda: {"fpu", "avx512f", "avx2"})
    assert cpu_has_native_bf16() is False
    assert autocast_dtype("cpu", None) is None


def test_bf16_detection_falls_back_to_float32_on_error(monkeypatch, fresh_detection, domains):
    def unreadable():
        raise OSError("no /proc/cpuinfo here")

    monkeypatch.setattr(device_module, "_read_cpu_flags", unreadable)
    assert cpu_has_native_bf16() is False
    assert autocast_dtype("cpu", None) is None
    assert autocast_dtype("cpu", False) is None and autocast_dtype("cpu", True) == torch.bfloat16
    assert autocast_dtype("cuda", None) == torch.float16 and autocast_dtype("cuda", False) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # amp=None: float32 here, without a word
        result = train(tiny(steps=1), *domains)
    assert math.isfinite(result.history["loss_g"][0])


def test_real_cpuinfo_reader_gives_flags_or_a_clean_error(fresh_detection):
    try:
        flags = device_module._read_cpu_flags()
    except OSError:
        return  # no /proc/cpuinfo: detection answers False, as tested above
    assert isinstance(flags, set)
    assert cpu_has_native_bf16() == (any(f in flags for f in device_module.NATIVE_BF16_FLAGS)
                                     and torch.backends.mkldnn.is_available())


# ---- the fast paths train ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes", [
    dict(channels_last=True, amp=False),
    dict(channels_last=True, amp=True),
    dict(channels_last=False, amp=True, batched_passes=False),
    dict(channels_last=True, amp=True, norm="batch", ema_decay=0),
    dict(channels_last=True, amp=True, spatial_dims=3, image_size=(16, 16, 8), batch_size=2),
])
def test_fast_paths_train_and_return_plain_networks(domains, changes):
    ct, mri = domains
    if changes.get("spatial_dims") == 3:
        ct = make_dataset("kidney", "ct", n=2, dims=3, seed=0, shape=(24, 24, 16))
        mri = make_dataset("kidney", "mri", n=2, dims=3, seed=1, shape=(24, 24, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp=True on a CPU without native bfloat16 warns that it is slow
        result = train(tiny(steps=3, **changes), ct, mri, val=ct[:1])
    history = result.history
    for key in ("loss_g", "loss_seg", "loss_rec", "loss_adv", "loss_critic", "gp", "val_loss", "val_dice"):
        values = [v for v in history[key] if not (key.startswith("val") and math.isnan(v))]
        assert all(math.isfinite(v) for v in values), key
    assert math.isfinite(history["val_loss"][-1])
    for net in (result.model, result.critic, result.best_model):
        assert memory_format_of(net) == torch.contiguous_format
        assert all(p.dtype == torch.float32 for p in net.parameters())


def test_bf16_training_stays_close_to_float32(domains):
    """A few steps in bfloat16 follow the float32 run's losses (bfloat16 has about 3 significant digits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = {amp: train(tiny(steps=3, amp=amp), *domains).history for amp in (False, True)}
    np.testing.assert_allclose(runs[True]["loss_seg"], runs[False]["loss_seg"], rtol=0.05)
    np.testing.assert_allclose(runs[True]["loss_rec"], runs[False]["loss_rec"], rtol=0.05)


def test_channels_last_gives_the_same_training_up_to_rounding(domains):
    runs = {cl: train(tiny(steps=3, amp=False, channels_last=cl), *domains) for cl in (False, True)}
    np.testing.assert_allclose(runs[True].history["loss_g"], runs[False].history["loss_g"], rtol=1e-4)
    for (key, a), b in zip(runs[False].model.state_dict().items(), runs[True].model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5, msg=key)


def test_reference_path_and_fast_path_are_both_deterministic(domains):
    for changes in (dict(batched_passes=False, channels_last=False, amp=False), dict(amp=False), {}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = (train(tiny(steps=2, **changes), *domains) for _ in range(2))
        assert a.history["loss_g"] == b.history["loss_g"], changes
        for (key, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            assert torch.equal(x, y), (changes, key)


# ---- config and checkpoints --------------------------------------------------------------------------------
def test_speed_switches_are_config_fields_but_not_architecture():
    config = TrainConfig()
    assert config.batched_passes is True and config.channels_last is True and config.amp is None
    assert config.closed_form_penalty is True
    data = config.to_dict()
    assert all(k in data for k in SPEED_FIELDS) and "amp" in data
    assert not set(SPEED_FIELDS + ("amp",)) & set(ARCHITECTURE_FIELDS)
    assert TrainConfig.from_overrides(["batched_passes=false", "channels_last=off",
                                       "closed_form_penalty=no"]).to_dict() == {
        **data, "batched_passes": False, "channels_last": False, "closed_form_penalty": False}
    old = {k: v for k, v in data.items() if k not in SPEED_FIELDS}
    assert TrainConfig.from_dict(old) == config


def test_checkpoints_with_and_without_the_new_fields_load_and_resume(domains, tmp_path):
    ct, mri = domains
    config = tiny(steps=2, out_dir=tmp_path, batched_passes=False, channels_last=False)
    result = train(config, ct, mri, val=ct)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["config"]["batched_passes"] is False and raw["config"]["channels_last"] is False
    model, config = load_checkpoint(tmp_path / "last.pt")
    assert config == result.config
    for (key, a), b in zip(model.state_dict().items(), result.model.state_dict().values()):
        assert torch.equal(a, b), key
    for key in SPEED_FIELDS:  # a checkpoint from before these fields
        del raw["config"][key]
    torch.save(raw, tmp_path / "last.pt")
    model, config = load_checkpoint(tmp_path / "last.pt")
    assert config.batched_passes is True and config.channels_last is True
    resumed = train(tiny(steps=3, out_dir=tmp_path, resume=True), ct, mri, val=ct)  # switches may change
    assert resumed.history["step"] == [0, 1, 2] and math.isfinite(resumed.history["loss_g"][-1])


def test_channels_last_weights_load_into_plain_networks(domains, tmp_path):
    ct, mri = domains
    train(tiny(steps=1, out_dir=tmp_path), ct, mri)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    model, _ = build_networks(TrainConfig.from_dict(state["config"]))
    model.load_state_dict(state["ema"])
    assert memory_format_of(model) == torch.contiguous_format


# ---- helpers -----------------------------------------------------------------------------------------------
def test_update_average_equals_the_per_parameter_update():
    torch.manual_seed(0)
    config = tiny(norm="batch")
    fused_avg, current = build_networks(config)[0], build_networks(config)[0]
    with torch.no_grad():
        for p in current.parameters():
            p.add_(torch.randn_like(p))
        current(torch.randn(2, 1, SIZE, SIZE))  # moves the batch-norm statistics
    loop_avg = copy.deepcopy(fused_avg)
    update_average(fused_avg, current, 0.9)
    with torch.no_grad():
        for kept, p in zip(loop_avg.parameters(), current.parameters()):
            kept.lerp_(p, 0.1)
    for (key, a), b in zip(fused_avg.named_parameters(), loop_avg.parameters()):
        torch.testing.assert_close(a, b, msg=key)
    for (key, a), b in zip(fused_avg.named_buffers(), current.buffers()):
        assert torch.equal(a, b), key


def test_deterministic_mode_restores_the_callers_settings():
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory)
    with training._deterministic(True):
        assert torch.are_deterministic_algorithms_enabled() and not det.fill_uninitialized_memory
    assert (torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory) == before


@pytest.mark.parametrize("dims", [2, 3])
def test_inference_memory_format_and_precision(dims):
    torch.manual_seed(0)
    model, _ = build_networks(tiny(spatial_dims=dims, image_size=(16,) * dims))
    model.eval()
    image = np.random.default_rng(0).normal(size=(16, 16, 8)).astype(np.float32)
    options = dict(device="cpu", return_probs=True, patch_size=(16, 16, 8) if dims == 3 else None)
    plain = predict_volume(model, image, channels_last=False, **options)
    fast = predict_volume(model, image, channels_last=True, **options)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)
    assert memory_format_of(model) == torch.contiguous_format and not model.training  # restored
    low = predict_volume(model, image, amp=True, **options)
    assert low.dtype == np.float32 and np.abs(low - plain).max() < 0.05
    np.testing.assert_allclose(low.sum(0), 1, atol=1e-5)  # float32 softmax
    fmt = channels_last_format(dims)
    model.to(memory_format=fmt)  # a channels-last model stays channels-last
    predict_volume(model, image, channels_last=False, **options)
    assert memory_format_of(model) == fmt


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_cat_gives_the_gradients_of_cat_in_dense_layout(dims):
    from lmisa_lite.networks import _cat_channels

    fmt = channels_last_format(dims)
    shape = (2, 3) + (4,) * dims
    a, b = (torch.randn(shape).contiguous(memory_format=fmt).requires_grad_() for _ in range(2))
    weight = torch.randn((2, 6) + (4,) * dims)
    (_cat_channels([a, b]) * weight).sum().backward()
    assert a.grad.is_contiguous(memory_format=fmt) and b.grad.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(a.grad, weight[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(b.grad, weight[:, 3:], rtol=0, atol=0)


def test_max_pool_stays_bfloat16_under_autocast():
    from lmisa_lite.networks import _max_pool

    pool = torch.nn.MaxPool3d(2)
    x = torch.randn(1, 2, 4, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _max_pool(pool, x)
        assert torch.is_autocast_enabled("cpu")  # restored
    assert out.dtype == torch.bfloat16 and torch.equal(out.float(), pool(x.float()))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_instance_norm_gradients_do_not_depend_on_the_memory_format(dims, batch):
    # PyTorch's own instance norm gets the gradients of a channels-last batch of one image wrong on CPU;
    # the network's instance norm must not.
    from lmisa_lite.networks import NORMS

    torch.manual_seed(0)
    shape = (batch, 8) + (12,) * dims
    x, g = torch.randn(shape), torch.randn(shape)
    grads = []
    for fmt in (torch.contiguous_format, channels_last_format(dims, True)):
        norm = NORMS["instance"][dims](8)
        with torch.no_grad():
            norm.weight.copy_(torch.linspace(0.5, 2.0, 8))
            norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
        xx = x.clone().contiguous(memory_format=fmt).requires_grad_()
        y = norm(xx)
        assert y.is_contiguous(memory_format=fmt)
        y.backward(g.contiguous(memory_format=fmt))
        grads.append((y.detach(), xx.grad, norm.weight.grad, norm.bias.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_a_one_image_pass_learns_in_channels_last():
    # The source-only variants at batch 1 pass one image per step; their gradients must match plain layout.
    config = tiny(batch_size=1, use_reconstruction=False, use_shape_constraint=False, amp=False)
    model, _ = build_networks(config)
    batches = tiny_batches(config)
    grads = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        net = copy.deepcopy(model).to(memory_format=fmt)
        cfg = TrainConfig(**{**config.to_dict(), "channels_last": fmt == torch.channels_last})
        losses = training._generator_losses(cfg, net, None, {k: v if v is None or v.dim() < 4 else
                                                              v.contiguous(memory_format=fmt)
                                                              for k, v in batches.items()})
        losses["loss_g"].backward()
        grads[fmt] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    for a, b in zip(grads[torch.contiguous_format], grads[torch.channels_last]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
