"""Unit tests of the SAC-AE learner: shapes, which parameters each step moves, targets, determinism."""

from __future__ import annotations

import copy
import dataclasses
import functools

import numpy as np
import pytest
import torch

from learner import losses
from learner.config import ConfigError, LearnerConfig
from learner.learning import SacAeLearner
from learner.networks import SacAeNetworks, build_policy
from learner.reference import StraightforwardLearner
from learner.weights import load_policy_state
from replay.types import SampledBatch

TINY = LearnerConfig(batch_size=8, latent_dim=8, num_filters=4, hidden_dim=16)


def make_batch(obs_shape=(9, 84, 84), batch=8, seed=0, terminated=0.0) -> SampledBatch:
    rng = np.random.default_rng(seed)
    c, h, w = obs_shape
    frames = rng.integers(0, 256, (batch, c // 3 + 1, 3, h, w), dtype=np.uint8)
    return SampledBatch(
        frames=frames,
        actions=rng.uniform(-1, 1, (batch, 3)).astype(np.float32),
        rewards=rng.normal(size=batch).astype(np.float32),
        terminated=np.full(batch, terminated, np.float32),
        weights_version=np.zeros(batch, np.int64),
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("size", [84, 64, 96])
def test_shapes_for_three_input_sizes(size):
    nets = SacAeNetworks((9, size, size), 3, TINY)
    obs = torch.randint(0, 256, (2, 9, size, size), dtype=torch.uint8)
    z = nets.critic.encoder(obs)
    assert z.shape == (2, TINY.latent_dim)
    assert nets.decoder(z).shape == (2, 9, size, size)
    q1, q2 = nets.critic(obs, torch.zeros(2, 3))
    assert q1.shape == q2.shape == (2, 1)
    mu, pi, log_pi, _ = nets.policy(obs)
    assert mu.shape == pi.shape == (2, 3) and log_pi.shape == (2, 1)
    assert pi.abs().max() <= 1


def test_decoder_matches_odd_input():
    nets = SacAeNetworks((6, 85, 77), 3, TINY)
    z = nets.critic.encoder(torch.zeros(1, 6, 85, 77, dtype=torch.uint8))
    assert nets.decoder(z).shape == (1, 6, 85, 77)


def test_default_conv_output_is_35x35():
    nets = SacAeNetworks((9, 84, 84), 3, LearnerConfig())
    assert nets.critic.encoder.trunk.spatial_sizes == [(41, 41), (39, 39), (37, 37), (35, 35)]
    assert nets.critic.encoder.trunk.output_dim == 32 * 35 * 35


def test_policy_and_critic_share_conv_parameter_objects():
    nets = SacAeNetworks((9, 84, 84), 3, TINY)
    shared = list(nets.policy.encoder.trunk.parameters())
    assert all(a is b for a, b in zip(shared, nets.critic.encoder.trunk.parameters(), strict=True))
    target = list(nets.critic_target.encoder.trunk.parameters())
    assert all(a is not b for a, b in zip(shared, target, strict=True))
    # The heads are separate: only the conv trunk is shared.
    assert nets.policy.encoder.fc is not nets.critic.encoder.fc


def test_init_is_delta_orthogonal_and_orthogonal():
    nets = SacAeNetworks((9, 84, 84), 3, TINY)
    conv = nets.critic.encoder.trunk.convs[1]
    w = conv.weight.detach()
    off_centre = w.clone()
    off_centre[:, :, 1, 1] = 0
    assert torch.count_nonzero(off_centre) == 0 and torch.count_nonzero(conv.bias) == 0
    centre = w[:, :, 1, 1]
    gram = centre @ centre.T
    assert torch.allclose(gram, 2.0 * torch.eye(gram.shape[0]), atol=1e-5)  # ReLU gain sqrt(2)
    fc = nets.policy.trunk[0]
    assert torch.count_nonzero(fc.bias) == 0


def test_policy_step_leaves_conv_untouched_and_moves_policy():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    nets = learner.nets
    batch = learner.to_device(make_batch())
    trunk_before, policy_before = snapshot(nets.critic.encoder.trunk), snapshot(nets.policy)
    critic_before = snapshot(nets.critic)
    with torch.no_grad():
        conv = nets.critic.encoder.trunk(batch.obs)
    learner._policy_and_alpha_step(conv)
    assert changed(trunk_before, nets.critic.encoder.trunk) == set()
    assert changed(critic_before, nets.critic) == set()
    moved = changed(policy_before, nets.policy)
    assert any(k.startswith("trunk.") for k in moved)
    assert {"encoder.fc.weight", "encoder.ln.weight"} <= moved  # the policy trains its own head
    assert not any(k.startswith("encoder.trunk.") for k in moved)


def test_critic_step_moves_trunk_and_heads_not_policy_or_decoder():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    nets = learner.nets
    before = {
        name: snapshot(getattr(nets, name)) for name in ("critic", "decoder", "critic_target")
    }
    policy_mlp = snapshot(nets.policy.trunk)
    learner._critic_step(learner.to_device(make_batch()))
    moved = changed(before["critic"], nets.critic)
    assert any(k.startswith("encoder.trunk.") for k in moved)
    assert any(k.startswith("q1.") for k in moved) and any(k.startswith("q2.") for k in moved)
    assert changed(before["decoder"], nets.decoder) == set()
    assert changed(before["critic_target"], nets.critic_target) == set()
    assert changed(policy_mlp, nets.policy.trunk) == set()


def test_reconstruction_step_moves_trunk_encoder_head_and_decoder_only():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    nets = learner.nets
    critic_before, decoder_before = snapshot(nets.critic), snapshot(nets.decoder)
    learner._decoder_step(learner.to_device(make_batch()).obs, None)
    moved = changed(critic_before, nets.critic)
    assert any(k.startswith("encoder.trunk.") for k in moved) and "encoder.fc.weight" in moved
    assert not any(k.startswith(("q1.", "q2.")) for k in moved)
    assert changed(decoder_before, nets.decoder) == set(decoder_before)


def test_targets_move_only_by_soft_update_with_right_tau_and_frequency(monkeypatch):
    cfg = TINY
    learner = SacAeLearner((9, 84, 84), 3, cfg)
    # Without the decoder step the online encoder at the soft update equals the one after update().
    monkeypatch.setattr(learner, "_decoder_step", lambda obs, conv: {})
    nets = learner.nets
    batch = make_batch()
    target_before = snapshot(nets.critic_target)
    learner.update(batch)  # update 0: soft update happens
    online = nets.critic.state_dict()
    for key, value in nets.critic_target.state_dict().items():
        tau = cfg.encoder_tau if key.startswith("encoder.") else cfg.critic_tau
        expected = (1 - tau) * target_before[key] + tau * online[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    target_after_first = snapshot(nets.critic_target)
    learner.update(batch)  # update 1: no soft update (every 2)
    assert changed(target_after_first, nets.critic_target) == set()
    learner.update(batch)  # update 2: soft update again
    assert changed(target_after_first, nets.critic_target) != set()


def test_policy_updates_every_second_update():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    batch = make_batch()
    learner.update(batch)
    mlp = snapshot(learner.nets.policy.trunk)
    learner.update(batch)
    assert changed(mlp, learner.nets.policy.trunk) == set()
    learner.update(batch)
    assert changed(mlp, learner.nets.policy.trunk) != set()


@pytest.mark.parametrize("target_entropy, direction", [(-100.0, -1), (100.0, +1)])
def test_alpha_moves_toward_target_entropy(target_entropy, direction):
    learner = SacAeLearner((9, 84, 84), 3, dataclasses.replace(TINY, target_entropy=target_entropy))
    before = float(learner.alpha.detach())
    with torch.no_grad():
        conv = learner.nets.critic.encoder.trunk(learner.to_device(make_batch()).obs)
    metrics = learner._policy_and_alpha_step(conv)
    entropy = float(metrics["learner/entropy"])
    # Entropy above the target lowers alpha; below it raises alpha.
    assert np.sign(target_entropy - entropy) == direction
    assert np.sign(float(learner.alpha.detach()) - before) == direction


def test_target_entropy_defaults_to_minus_action_dims_and_follows_the_config():
    assert SacAeLearner((9, 84, 84), 3, TINY).target_entropy == -3.0
    assert SacAeLearner((9, 84, 84), 2, TINY).target_entropy == -2.0
    lowered = dataclasses.replace(TINY, target_entropy=-7.5)
    assert SacAeLearner((9, 84, 84), 3, lowered).target_entropy == -7.5


def test_td_target_termination_removes_bootstrap_truncation_keeps_it():
    r = torch.tensor([[1.0], [1.0]])
    q = torch.tensor([[5.0], [5.0]])
    log_pi = torch.tensor([[-1.0], [-1.0]])
    alpha = torch.tensor(0.1)
    terminated = torch.tensor(
        [[1.0], [0.0]]
    )  # the second is a time-limit truncation: not terminated
    y = losses.td_target(r, terminated, 0.99, q, q + 1, alpha, log_pi)
    assert y[0].item() == pytest.approx(1.0)
    assert y[1].item() == pytest.approx(1.0 + 0.99 * (5.0 + 0.1))


def test_learner_target_equals_reward_when_terminated():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    batch = make_batch(terminated=1.0)
    metrics = learner._critic_step(learner.to_device(batch))
    assert float(metrics["learner/target_q_mean"]) == pytest.approx(
        float(batch.rewards.mean()), abs=1e-6
    )
    metrics = learner._critic_step(learner.to_device(make_batch(terminated=0.0)))
    assert float(metrics["learner/target_q_mean"]) != pytest.approx(
        float(batch.rewards.mean()), abs=1e-3
    )


def test_n_step_targets_bootstrap_with_gamma_to_the_n():
    """frames [a, b, b, b, c] with n_step 2 and [a, b, b, c] with n_step 1 hold the same obs
    [a, b, b] and next_obs [b, b, c]: a 2-step learner with gamma 0.5 must then update exactly like
    a 1-step learner with gamma 0.25, and unlike one with gamma 0.5."""
    one_step = make_batch()
    a, b, c = (one_step.frames[:, i : i + 1] for i in (0, 1, 3))
    two_step = dataclasses.replace(one_step, frames=np.concatenate([a, b, b, b, c], axis=1))
    one_step = dataclasses.replace(one_step, frames=np.concatenate([a, b, b, c], axis=1))
    states = []
    for gamma, n_step, batch in ((0.5, 2, two_step), (0.25, 1, one_step), (0.5, 1, one_step)):
        cfg = dataclasses.replace(TINY, gamma=gamma, n_step=n_step)
        learner = SacAeLearner((9, 84, 84), 3, cfg, seed=5)
        for _ in range(3):
            learner.update(batch)
        states.append(learner.nets.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_same_seed_and_batch_give_identical_parameters():
    batch = make_batch()
    states = []
    for _ in range(2):
        learner = SacAeLearner((9, 84, 84), 3, TINY, seed=7)
        for _ in range(3):
            learner.update(batch)
        states.append(learner.nets.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_state_dict_round_trip_reproduces_next_update():
    batch = make_batch()
    a = SacAeLearner((9, 84, 84), 3, TINY, seed=1)
    for _ in range(3):
        a.update(batch)
    state = copy.deepcopy(a.state_dict())
    b = SacAeLearner((9, 84, 84), 3, TINY, seed=99)
    b.load_state_dict(state)
    assert b.updates == 3
    metrics_a = [a.update(batch) for _ in range(2)]  # updates 3 and 4: the policy steps at 4
    torch.set_rng_state(state["torch_rng"])
    metrics_b = [b.update(batch) for _ in range(2)]
    assert "learner/policy_loss" in metrics_b[1]
    for ma, mb in zip(metrics_a, metrics_b, strict=True):
        for key in mb:
            assert torch.equal(ma[key], mb[key]), key
    sa, sb = a.nets.state_dict(), b.nets.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.log_alpha, b.log_alpha)


def test_state_records_the_numerics_of_every_update_across_resumes():
    # precision=auto resolves per machine, so a run resumed elsewhere learns in other numerics:
    # the state must say how many updates ran in which, as a report records it.
    batch = make_batch()
    fp32 = dataclasses.replace(TINY, precision="fp32", channels_last="off")
    bf16 = dataclasses.replace(TINY, precision="bf16", channels_last="off")
    a = SacAeLearner((9, 84, 84), 3, fp32)
    assert a.state_dict()["numerics_updates"] == {}
    for _ in range(3):
        a.update(batch)
    assert a.state_dict()["numerics_updates"] == {"cpu: fp32, channels-last off": 3}
    b = SacAeLearner((9, 84, 84), 3, bf16)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.state_dict()["numerics_updates"] == {"cpu: fp32, channels-last off": 3}
    for _ in range(2):
        b.update(batch)
    assert b.state_dict()["numerics_updates"] == {
        "cpu: fp32, channels-last off": 3,
        "cpu: bf16, channels-last off": 2,
    }
    # A checkpoint from before the record existed: its updates are counted, as unrecorded.
    old = a.state_dict()
    del old["numerics_updates"]
    c = SacAeLearner((9, 84, 84), 3, fp32)
    c.load_state_dict(old)
    c.update(batch)
    assert c.state_dict()["numerics_updates"] == {
        "unrecorded": 3,
        "cpu: fp32, channels-last off": 1,
    }


def test_load_state_dict_refuses_other_shapes():
    state = SacAeLearner((9, 84, 84), 3, TINY).state_dict()
    with pytest.raises(ValueError, match="obs"):
        SacAeLearner((9, 64, 64), 3, TINY).load_state_dict(state)


def test_policy_weights_are_versioned_and_load_into_actor_copy():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    learner.update(make_batch())
    w1, w2 = learner.policy_weights(), learner.policy_weights()
    assert (w1.version, w2.version) == (1, 2)
    assert all(not k.startswith(("q1", "q2", "decoder")) for k in w1.state)
    actor_policy = build_policy((9, 84, 84), 3, TINY)
    load_policy_state(actor_policy, w2)
    obs = torch.randint(0, 256, (4, 9, 84, 84), dtype=torch.uint8)
    expected = learner.nets.policy.act(obs, deterministic=True)
    assert torch.allclose(actor_policy.act(obs, deterministic=True), expected, atol=1e-6)
    # The actor's copy holds no critic or decoder weights: it is a small subset.
    total = sum(p.numel() for p in learner.nets.parameters())
    assert sum(a.size for a in w1.state.values()) < total / 2


@pytest.mark.parametrize("channels_last", ["off", "on"])
def test_policy_average_is_the_exponential_average_of_the_live_weights(channels_last):
    # Channels-last replaces the conv weights' tensors after construction: an average holding the
    # old storage would silently stop following them.
    cfg = dataclasses.replace(
        TINY, policy_ema_decay=0.75, precision="fp32", channels_last=channels_last
    )
    learner = SacAeLearner((9, 84, 84), 3, cfg, seed=3)
    live = learner.nets.policy
    expected = snapshot(live)  # the average starts at the initial weights
    for step in range(4):
        learner.update(make_batch(seed=step))
        expected = {k: 0.75 * v + 0.25 * live.state_dict()[k] for k, v in expected.items()}
    average = learner.state_dict()["policy_average"]
    assert average.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(average[name], value, atol=1e-6), name
    # It is not the live policy (the trunk, head and MLP have all moved since), and the actors'
    # broadcast stays the live weights: the average never feeds back into what is collected.
    moved = {k for k, v in average.items() if not torch.allclose(v, live.state_dict()[k])}
    assert any(k.startswith("encoder.trunk.") for k in moved)  # the shared convs
    assert any(k.startswith("encoder.fc.") for k in moved)  # the policy's own head
    assert any(k.startswith("trunk.") for k in moved)  # the policy MLP
    broadcast = learner.policy_weights().state
    assert all(np.array_equal(broadcast[k], live.state_dict()[k].numpy()) for k in broadcast)
    # Off by default: nothing kept, nothing in the state.
    assert SacAeLearner((9, 84, 84), 3, TINY).state_dict()["policy_average"] is None


def test_policy_average_survives_a_resume_and_starts_from_live_weights_without_one():
    cfg = dataclasses.replace(TINY, policy_ema_decay=0.5)
    a = SacAeLearner((9, 84, 84), 3, cfg, seed=1)
    for step in range(3):
        a.update(make_batch(seed=step))
    state = copy.deepcopy(a.state_dict())
    b = SacAeLearner((9, 84, 84), 3, cfg, seed=2)
    b.load_state_dict(state)
    restored = b.state_dict()["policy_average"]
    assert all(torch.equal(restored[k], v) for k, v in state["policy_average"].items())
    # A checkpoint of a run without the average: it starts from the weights that were loaded.
    state["policy_average"] = None
    c = SacAeLearner((9, 84, 84), 3, cfg, seed=2)
    c.load_state_dict(state)
    started = c.state_dict()["policy_average"]
    assert all(torch.equal(started[k], v) for k, v in c.nets.policy.state_dict().items())


def test_metrics_are_tensors_with_expected_keys():
    learner = SacAeLearner((9, 84, 84), 3, TINY)
    metrics = learner.update(make_batch())
    expected = {
        "learner/critic_loss",
        "learner/policy_loss",
        "learner/alpha_loss",
        "learner/alpha",
        "learner/entropy",
        "learner/q1_mean",
        "learner/reconstruction_mse",
    }
    assert expected <= set(metrics)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in metrics.values())


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("gamma", 1.5),
        ("n_step", 0),
        ("critic_tau", 0.0),
        ("policy_update_every", 0),
        ("target_entropy", float("nan")),
        ("target_entropy", float("-inf")),
        ("policy_ema_decay", 1.0),
        ("policy_ema_decay", -0.1),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"learner.{field}"):
        LearnerConfig(**{field: value})


# -- same math as the straightforward update ------------------------------------------------------


@pytest.fixture
def float64():
    """Both learners in float64: fp32 rounding differs between their two orders of work and between
    CPUs (oneDNN picks other conv kernels on AMD than on Intel), and Adam's first steps, about
    lr * sign(grad), blow a rounding difference in a near-zero gradient up to a whole step. In
    float64 the same math agrees to ~1e-15, and a real change (the decoder's 1e-7 weight decay
    left out of one side) still moves parameters by ~1e-2."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("channels_last", ["off", "on"])
def test_update_reaches_the_straightforward_updates_parameters(channels_last, float64):
    """SacAeLearner's shortcuts (shared conv features, frozen critic in the policy loss, fused Adam
    and soft updates, in-place ReLU, uint8 straight to the conv dtype) change no math: after 6
    updates (3 policy steps) the parameters match learner/reference.py to float64 rounding."""
    cfg = dataclasses.replace(TINY, precision="fp32", channels_last=channels_last)
    fast = SacAeLearner((9, 84, 84), 3, cfg, seed=3)
    plain = StraightforwardLearner((9, 84, 84), 3, cfg, seed=3)
    assert not plain.numerics.channels_last and not plain.numerics.bf16
    assert fast.log_alpha.dtype == next(fast.nets.parameters()).dtype == torch.float64
    for i in range(6):
        batch = make_batch(seed=i % 3)
        for learner in (fast, plain):
            torch.manual_seed(100 + i)  # the same policy and reconstruction noise
            metrics = learner.update(batch)
            assert np.isfinite(float(metrics["learner/critic_loss"]))
    a, b = fast.nets.state_dict(), plain.nets.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-10, rtol=1e-9), key
    assert torch.allclose(fast.log_alpha, plain.log_alpha, atol=1e-12)


@pytest.mark.slow
def test_compiled_learner_updates_and_reconstruct_does_not_recompile(monkeypatch):
    """torch.compile on the CPU (the logic is the same on CUDA): the three step functions compile,
    and `reconstruct` with another batch size runs eager, compiling nothing new.

    With the aot_eager backend: dynamo's capture and AOT autograd decide the graphs and the
    recompiles that this test counts; inductor's C++ code generation on top took 90 s of the suite
    on a 2-core AVX2 machine (`sacae bench learner --compile on` runs it)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    counters.clear()
    learner = SacAeLearner((9, 48, 48), 3, dataclasses.replace(TINY, compile=True))
    batch = make_batch((9, 48, 48))
    for _ in range(3):
        metrics = learner.update(batch)
    assert np.isfinite(float(metrics["learner/reconstruction_loss"]))
    frames = dict(counters["stats"])
    assert frames.get("unique_graphs", 0) >= 4  # trunk, critic, policy and decoder functions
    learner.reconstruct(torch.zeros(4, 9, 48, 48, dtype=torch.uint8))
    learner.update(batch)
    assert dict(counters["stats"]).get("unique_graphs", 0) == frames["unique_graphs"]


def test_reconstruction_target_is_the_recipe_bit_for_bit():
    from learner.losses import reconstruction_target

    obs = torch.arange(256, dtype=torch.uint8).repeat(3, 1)
    torch.manual_seed(3)
    got = reconstruction_target(obs)
    torch.manual_seed(3)
    x = torch.floor(obs.float() / 8) / 32
    expected = x + torch.rand_like(x) / 32 - 0.5  # the recipe's formula
    assert torch.equal(got, expected)
