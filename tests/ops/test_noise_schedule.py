"""The one noise schedule (singer_core/ops/noise_schedule.py) against diffusers' DDIMScheduler: betas, zero
terminal SNR, q_sample / velocity, timestep spacings and whole DDIM runs for every step count 1..60 (and
more) in both stepping modes; the DDIM step against eq. (5) written out in float64."""

import numpy as np
import pytest
import torch

from singer_core.ops.noise_schedule import (
    NoiseSchedule,
    ddim_step,
    q_sample,
    sample_ddim,
    training_target,
    v_target,
)

STEP_COUNTS = [*range(1, 61), 7, 30, 35, 75, 100, 333, 999, 1000]
# (our schedule, the same thing spelled in diffusers' config)
CONFIGS = {
    "hallo": (NoiseSchedule(), dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                                    rescale_betas_zero_snr=True, prediction_type="v_prediction")),
    "fd2talk": (NoiseSchedule.fd2talk(), dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                              prediction_type="sample")),
    "sd15-eps": (NoiseSchedule(beta_schedule="scaled_linear", zero_snr=False, prediction="epsilon", steps_offset=1),
                 dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="epsilon",
                      steps_offset=1)),
    "cosine-x0": (NoiseSchedule(beta_schedule="cosine", zero_snr=False, prediction="sample", train_steps=500),
                  dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample", num_train_timesteps=500)),
}


def diffusers_scheduler(kwargs, spacing):
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{"clip_sample": False, "set_alpha_to_one": True, **kwargs, "timestep_spacing": spacing})


def toy_model(channels=3, seed=0):
    """A fixed network whose output depends on x and t, so landing on the wrong timestep shows."""
    weight = torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed)) * 0.4

    def model(x, t):
        return torch.einsum("ij,bj...->bi...", weight, x) * (0.5 + float(t) / 1000) + 0.1 * torch.sin(x)

    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_alphas_cumprod_and_forward_noising_match_diffusers(name):
    ours, kwargs = CONFIGS[name]
    reference = diffusers_scheduler(kwargs, "leading")
    assert ours.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(ours.alphas_cumprod.float(), reference.alphas_cumprod, atol=2e-6, rtol=1e-5)
    x0, noise = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    t = torch.tensor([0, 17, ours.train_steps // 2, ours.train_steps - 1])
    torch.testing.assert_close(q_sample(x0, noise, t, ours.alphas_cumprod), reference.add_noise(x0, noise, t))
    torch.testing.assert_close(v_target(x0, noise, t, ours.alphas_cumprod), reference.get_velocity(x0, noise, t))
    with pytest.raises(ValueError, match=f"0..{ours.train_steps - 1}"):
        q_sample(x0, noise, torch.tensor([0, 1, 2, ours.train_steps]), ours.alphas_cumprod)


def test_zero_snr_ends_at_zero_and_keeps_the_first_alpha():
    schedule, plain = NoiseSchedule(), NoiseSchedule(zero_snr=False)
    assert float(schedule.alphas_cumprod[-1]) == 0.0
    assert float(schedule.alphas_cumprod[0]) == pytest.approx(float(plain.alphas_cumprod[0]), rel=1e-12)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_ddim_runs_match_diffusers_for_every_step_count(name, spacing):
    import dataclasses

    ours, kwargs = CONFIGS[name]
    ours = dataclasses.replace(ours, spacing=spacing, stepping="diffusers")
    reference = diffusers_scheduler(kwargs, spacing)
    model = toy_model()
    start = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    for steps in STEP_COUNTS:
        if steps > ours.train_steps or (ours.steps_offset and steps == ours.train_steps):
            continue  # offset 1 with every timestep would index past the table (we refuse; diffusers crashes)
        reference.set_timesteps(steps)
        timesteps = ours.timesteps(steps)
        assert timesteps[:, 0].tolist() == reference.timesteps.tolist(), steps
        x = start.clone()
        for t in reference.timesteps:
            x = reference.step(model(x, t), t, x).prev_sample
        got = sample_ddim(model, start, timesteps, schedule=ours)
        torch.testing.assert_close(got, x, atol=2e-4, rtol=2e-4, msg=lambda m, s=steps: f"{s} steps: {m}")


def test_chained_stepping_is_the_ddim_subsequence_and_differs_from_diffusers_off_divisors():
    diffusers_mode, chained = NoiseSchedule(), NoiseSchedule(stepping="chained")
    pairs = chained.timesteps(7).tolist()
    assert [p for _, p in pairs] == [t for t, _ in pairs[1:]] + [-1]
    assert diffusers_mode.timesteps(7).tolist()[-1] == [142, 0]  # diffusers lands on t = 0, not the clean sample
    assert diffusers_mode.timesteps(40).tolist() == chained.timesteps(40).tolist()  # 40 divides 1000
    model, start = toy_model(), torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    a = sample_ddim(model, start, diffusers_mode.timesteps(35), schedule=diffusers_mode)
    b = sample_ddim(model, start, chained.timesteps(35), schedule=chained)
    assert float((a - b).abs().max()) > 1e-3


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_stochastic_ddim_step_matches_diffusers(prediction):
    from diffusers import DDIMScheduler

    ours = NoiseSchedule(zero_snr=False, prediction=prediction, spacing="leading")
    reference = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                              prediction_type=prediction, timestep_spacing="leading")
    reference.set_timesteps(25)
    generator = torch.Generator().manual_seed(3)
    for t, t_prev in ours.timesteps(25).tolist()[:-1]:
        x, out, z = (torch.randn(2, 4, 3, generator=generator) for _ in range(3))
        expected = reference.step(out, t, x, eta=0.7, variance_noise=z).prev_sample
        got = ddim_step(x, out, ours.alpha_bar(t), ours.alpha_bar(t_prev), prediction=prediction, eta=0.7, noise=z)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_ddim_step_is_eq5_in_float64_for_x0_prediction():
    a_t, a_prev, eta = 0.3, 0.55, 0.4
    generator = torch.Generator().manual_seed(0)
    x_t, x0, z = (torch.randn(2, 5, generator=generator, dtype=torch.float64) for _ in range(3))
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
    expected = (np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma ** 2) / np.sqrt(1 - a_t) * (x_t - np.sqrt(a_t) * x0)
                + sigma * z)
    torch.testing.assert_close(ddim_step(x_t, x0, a_t, a_prev, eta=eta, noise=z), expected, rtol=1e-12, atol=1e-12)


def test_training_targets_and_bad_configs():
    x0, noise, t = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([5, 900])
    assert training_target(x0, noise, t, NoiseSchedule.fd2talk()) is x0
    assert training_target(x0, noise, t, NoiseSchedule(zero_snr=False, prediction="epsilon")) is noise
    with pytest.raises(ValueError, match="spacing must be one of"):
        NoiseSchedule(spacing="uniform")
    with pytest.raises(ValueError, match="steps must be an integer in 1..1000"):
        NoiseSchedule().timesteps(0)
    with pytest.raises(ValueError, match=r"\(steps, 2\)"):
        sample_ddim(toy_model(), torch.randn(1, 3), torch.tensor([999, 500]), schedule=NoiseSchedule())
    assert NoiseSchedule.from_json(NoiseSchedule.fd2talk().to_json()) == NoiseSchedule.fd2talk()
    # a SINGER folder written before spacing / stepping existed reads back as Hallo's trailing schedule
    legacy = ('{"beta_end": 0.012, "beta_schedule": "linear", "beta_start": 0.00085, "prediction": "v_prediction", '
              '"train_steps": 1000, "zero_snr": true}')
    assert NoiseSchedule.from_json(legacy) == NoiseSchedule()
