"""Noise schedule, q_sample (FD2Talk eq. 2), the DDIM step (eq. 5) against float64 formulas written from the
papers, the sampling loop against a hand-written loop, and continuity of windowed sampling at the seams."""

import math

import numpy as np
import pytest
import torch

from singer_core.motion.dit import MotionDiT, MotionDiTConfig
from singer_core.motion.sampling import sample, window_starts
from singer_core.ops.noise_schedule import NoiseSchedule, ddim_step, q_sample


def reference_alpha_bar(steps=1000, start=1e-4, end=0.02):
    betas = np.linspace(start, end, steps, dtype=np.float64)  # DDPM linear schedule
    return np.cumprod(1.0 - betas)


def reference_ddim(x_t, x0, a_t, a_prev, eta, eps):
    """FD2Talk eq. (5) with sigma_t from DDIM (Song et al. 2021) eq. (16), float64 numpy."""
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
    return (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma ** 2) / np.sqrt(1 - a_t) * (x_t - np.sqrt(a_t) * x0)
            + sigma * eps)


def test_schedule_matches_linear_ddpm_in_float64():
    schedule = NoiseSchedule.fd2talk()
    assert schedule.alphas_cumprod.dtype == torch.float64
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), reference_alpha_bar(), rtol=1e-12)
    other = NoiseSchedule.fd2talk(train_steps=200, beta_start=1e-3, beta_end=0.05)
    np.testing.assert_allclose(other.alphas_cumprod.numpy(), reference_alpha_bar(200, 1e-3, 0.05), rtol=1e-12)
    cosine = NoiseSchedule.fd2talk(beta_schedule="cosine").alphas_cumprod
    assert bool((cosine[1:] < cosine[:-1]).all()) and 0 < float(cosine[-1]) < 1e-3
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        NoiseSchedule.fd2talk(beta_schedule="quadratic")


def test_q_sample_closed_form():
    schedule = NoiseSchedule.fd2talk()
    x0, noise = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    t = torch.tensor([0, 10, 500, 999])
    got = q_sample(x0, noise, t, schedule.alphas_cumprod).double().numpy()
    a = reference_alpha_bar()[t.numpy()][:, None, None]
    np.testing.assert_allclose(got, np.sqrt(a) * x0.double().numpy() + np.sqrt(1 - a) * noise.double().numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="0..999"):
        q_sample(x0, noise, torch.tensor([0, 1, 2, 1000]), schedule.alphas_cumprod)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t,t_prev", [(999, 979), (500, 480), (20, 0)])
def test_ddim_step_matches_eq5(eta, t, t_prev):
    a = reference_alpha_bar()
    generator = torch.Generator().manual_seed(0)
    x_t, x0, eps = (torch.randn(2, 5, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    got = ddim_step(x_t, x0, float(a[t]), float(a[t_prev]), eta=eta, noise=eps)
    np.testing.assert_allclose(got.numpy(), reference_ddim(x_t.numpy(), x0.numpy(), a[t], a[t_prev], eta, eps.numpy()),
                               rtol=1e-12, atol=1e-12)


def test_ddim_final_step_returns_x0_and_eta_needs_noise():
    x_t, x0 = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(ddim_step(x_t, x0, 0.9, 1.0, eta=1.0), x0)  # sigma = 0 when alpha_bar_prev = 1
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x_t, x0, 0.5, 0.6, eta=0.5)


def test_timesteps_50_of_1000():
    steps = NoiseSchedule.fd2talk().timesteps(50)
    assert steps[:, 0].tolist() == [1000 - 20 * (i + 1) for i in range(50)]
    assert steps[:, 1].tolist() == [1000 - 20 * (i + 2) for i in range(49)] + [-1]  # then the clean sample


def test_single_window_sample_matches_hand_written_ddim_loop():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, dtype=torch.float64)

    def model(x_t, t, audio):  # any deterministic function of (x_t, t, audio)
        return (torch.tanh(audio.double() @ weight) + 0.3 * x_t.double() * (t[:, None, None] / 1000.0)).float()

    audio = torch.randn(2, 9, 5)
    got = sample(model, audio, steps=10, eta=0.6, seed=3, window=20, motion_dim=3)
    # hand-written loop: x_T, then per step x0 = model, eq. (5) with DDIM sigma, fresh noise except at the end
    a = reference_alpha_bar()
    timesteps = list(range(0, 1000, 100))[::-1]
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, 3, generator=generator).double().numpy()
    for n, t in enumerate(timesteps):
        a_prev = a[timesteps[n + 1]] if n + 1 < len(timesteps) else 1.0
        x0 = model(torch.from_numpy(x).float(), torch.full((2,), t), audio).double().numpy()
        eps = torch.randn(2, 9, 3, generator=generator).double().numpy() if n + 1 < len(timesteps) else 0.0
        x = reference_ddim(x, x0, a[t], a_prev, 0.6, eps)
    np.testing.assert_allclose(got.double().numpy(), x, atol=1e-4)


def test_per_frame_model_gives_the_same_result_windowed_or_not():
    weight = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))

    def model(x_t, t, audio):  # each frame depends only on its own x_t and audio: no window-position effects
        return torch.sin(audio @ weight) + 0.5 * x_t

    audio = torch.randn(1, 53, 6)
    whole = sample(model, audio, steps=8, eta=0.3, seed=4, window=53, motion_dim=2)
    for overlap in (0, 3, 7):
        windowed = sample(model, audio, steps=8, eta=0.3, seed=4, window=10, overlap=overlap, motion_dim=2)
        torch.testing.assert_close(windowed, whole, atol=1e-5, rtol=0)


def gaussian_process_denoiser(length_scale=3.0, seed=5):
    """The exact posterior mean E[x0 | x_t] for x0 ~ N(m(audio), C) (C: squared-exponential over frames)
    computed from the frames of the window only: what an ideal model trained on windows can know."""
    schedule = NoiseSchedule.fd2talk()
    weight = torch.randn(10, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def model(x_t, t, audio):
        frames = x_t.shape[1]
        index = torch.arange(frames, dtype=torch.float64)
        eye = torch.eye(frames, dtype=torch.float64)
        cov = torch.exp(-(index[:, None] - index[None]) ** 2 / (2 * length_scale ** 2)) + 1e-6 * eye
        a = schedule.alphas_cumprod[t].reshape(-1, 1, 1)
        mean = torch.tanh(audio.double() @ weight)
        gain = a.sqrt() * cov @ torch.linalg.inv(a * cov + (1 - a) * eye)
        return (mean + gain @ (x_t.double() - a.sqrt() * mean)).float()

    return model


def seam_jump_ratio(out, ref, starts, overlap):
    """max frame-to-frame change around the window seams / max change of the single-window reference."""
    change = (out[0, 1:] - out[0, :-1]).abs().amax(-1)
    reference = (ref[0, 1:] - ref[0, :-1]).abs().amax(-1)
    seam = torch.zeros_like(change, dtype=torch.bool)
    for start in starts[1:]:
        seam[start - 1:start + overlap + 1] = True
    return float(change[seam].max() / reference.max())


def test_windowed_sampling_is_continuous_at_seams():
    model = gaussian_process_denoiser()
    audio = torch.randn(1, 70, 10, generator=torch.Generator().manual_seed(0))
    for _ in range(3):  # smooth audio -> smooth mean motion
        audio = torch.nn.functional.avg_pool1d(audio.transpose(1, 2), 7, 1, 3, count_include_pad=False).transpose(1, 2)
    ratios_blended, ratios_cut = [], []
    for seed in range(3):
        ref = sample(model, audio, steps=20, seed=seed, window=70, motion_dim=3)  # one window, no seams
        blended = sample(model, audio, steps=20, seed=seed, window=16, overlap=5, motion_dim=3)
        cut = sample(model, audio, steps=20, seed=seed, window=16, overlap=0, motion_dim=3)
        ratios_blended.append(seam_jump_ratio(blended, ref, window_starts(70, 16, 5), 5))
        ratios_cut.append(seam_jump_ratio(cut, ref, window_starts(70, 16, 0), 0))
        assert float((blended - ref).abs().max()) < 0.45 * float(ref.std())  # close to the seamless result
    assert max(ratios_blended) < 1.2, ratios_blended  # no jump beyond what the seamless sample has
    assert max(ratios_cut) > 1.5, ratios_cut  # control: windows without overlap do jump


def tiny_dit():
    torch.manual_seed(0)
    config = MotionDiTConfig(motion_dim=4, audio_dim=6, frames=8, width=16, layers=1, heads=2, time_dim=8)
    return MotionDiT(config).eval()


def test_sample_with_dit_is_deterministic_for_a_seed():
    model = tiny_dit()
    audio = torch.randn(2, 19, 6)
    first = sample(model, audio, steps=5, seed=7, overlap=3)
    assert first.shape == (2, 19, 4) and torch.isfinite(first).all()
    torch.testing.assert_close(sample(model, audio, steps=5, seed=7, overlap=3), first, atol=0, rtol=0)
    torch.testing.assert_close(sample(model, audio, steps=5, seed=torch.Generator().manual_seed(7), overlap=3),
                               first, atol=0, rtol=0)
    assert not torch.allclose(sample(model, audio, steps=5, seed=8, overlap=3), first)
    stochastic = sample(model, audio, steps=5, seed=7, eta=1.0, overlap=3)
    torch.testing.assert_close(sample(model, audio, steps=5, seed=7, eta=1.0, overlap=3), stochastic)
    assert not torch.allclose(stochastic, first)


def test_progress_reports_and_can_stop():
    model = tiny_dit()
    calls = []
    sample(model, torch.randn(1, 8, 6), steps=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def stop(done, total):
        if done == 2:
            raise InterruptedError("stop")

    with pytest.raises(InterruptedError):
        sample(model, torch.randn(1, 8, 6), steps=4, progress=stop)


def test_window_starts_cover_the_sequence():
    for frames, window, overlap in [(5, 8, 3), (8, 8, 3), (9, 8, 3), (70, 16, 5), (100, 25, 0)]:
        starts = window_starts(frames, window, overlap)
        covered = set()
        for start in starts:
            covered.update(range(start, min(start + window, frames)))
        assert covered == set(range(frames)) and starts[-1] + min(window, frames) == frames
        assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="overlap"):
        sample(tiny_dit(), torch.randn(1, 9, 6), overlap=8)
    assert math.isclose(NoiseSchedule.fd2talk().alpha_bar(-1), 1.0)


@pytest.mark.slow
def test_trained_tiny_dit_follows_the_audio_across_windows():
    """A tiny DiT trained with the x0 objective (eqs. 2-3) on motion = tanh(audio W) samples that motion back
    for a sequence 4x its training length (windows + seams) from pure noise."""
    torch.manual_seed(0)
    config = MotionDiTConfig(motion_dim=4, audio_dim=6, frames=12, width=32, layers=2, heads=4, time_dim=16)
    model, schedule = MotionDiT(config), NoiseSchedule.fd2talk()
    weight = torch.randn(6, 4)
    optimizer = torch.optim.AdamW(model.parameters(), 2e-3)
    for _ in range(600):
        audio = torch.randn(32, 12, 6)
        x0 = torch.tanh(audio @ weight)
        t = schedule.random_timesteps(32)
        loss = ((model(q_sample(x0, torch.randn_like(x0), t, schedule.alphas_cumprod), t, audio) - x0) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    audio = torch.randn(2, 50, 6)
    target = torch.tanh(audio @ weight)
    out = sample(model.eval(), audio, steps=20, overlap=4, seed=0)
    assert float(((out - target) ** 2).mean()) < 0.05 * float(target.var())


def test_x0_range_keeps_every_sampled_frame_inside_the_box():
    def wild(x_t, t, audio):  # a model whose x0 estimates leave any plausible range
        return 5.0 * torch.sin(audio @ torch.ones(6, 3)) + 3.0 * x_t

    audio = torch.randn(1, 30, 6, generator=torch.Generator().manual_seed(0))
    low, high = torch.tensor([-1.0, -0.5, 0.0]), torch.tensor([1.0, 0.5, 2.0])
    free = sample(wild, audio, steps=10, seed=1, window=12, overlap=3, motion_dim=3)
    boxed = sample(wild, audio, steps=10, seed=1, window=12, overlap=3, motion_dim=3, x0_range=(low, high))
    assert bool(((free < low) | (free > high)).any())  # without the prior it leaves the box
    assert bool(((boxed >= low - 1e-6) & (boxed <= high + 1e-6)).all())
    inside = sample(wild, audio, steps=10, seed=1, window=12, overlap=3, motion_dim=3,
                    x0_range=(torch.full((3,), -1e9), torch.full((3,), 1e9)))
    torch.testing.assert_close(inside, free)  # a box nothing reaches changes nothing
    with pytest.raises(ValueError, match="x0_range"):
        sample(wild, audio, steps=2, window=12, motion_dim=3, x0_range=(high, low))
