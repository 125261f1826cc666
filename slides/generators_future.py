"""Deck 08 (evaluation and the future): every model's speed, the rulers' blind sides, streaming and control.

The same measurements as notebook 08, on the shipped checkpoints, with fixed seeds.
"""
from __future__ import annotations

import math
import time
from functools import lru_cache

import torch
from generators import SR, figure, number, sound
from matplotlib.figure import Figure


@lru_cache(maxsize=1)
def _models() -> dict:
    from course_lib import audioldm, audiolm, clap, codec, jukebox, wavegan

    torch.set_flush_denormal(True)      # decaying synthetic sounds hold subnormals, which slow CPU convolutions
    c = clap.load_pretrained("clap-synthworld")
    return {"WaveGAN": wavegan.load_pretrained("wavegan-synthworld-drums"), "codec": codec.load_pretrained("codec-speech"),
            "Jukebox": jukebox.load_pretrained("jukebox-songs"), "AudioLM": audiolm.load_pretrained("audiolm-speech"),
            "CLAP": c, "AudioLDM": audioldm.load_pretrained("audioldm-synthworld", clap=c)}


@lru_cache(maxsize=1)
def _sentences() -> list[torch.Tensor]:
    from course_lib.recipes.codec import voices_clips

    return [s[None] for s in voices_clips("test", "heldout", 3, SR)[0]]      # (1, 1, T) each, voices never trained on


def _rtf(fn, seconds: float, repeat: int = 2) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / seconds


@lru_cache(maxsize=1)
def _speeds() -> dict[str, float]:
    """Real-time factor of each model on this CPU, with notebook 08's workloads."""
    m, g = _models(), torch.Generator().manual_seed(0)
    clip = torch.cat([s[..., :SR] for s in _sentences()[:2]], dim=-1)
    wg, cdc, jbx, alm, ldm = (m[k] for k in ("WaveGAN", "codec", "Jukebox", "AudioLM", "AudioLDM"))
    return {"WaveGAN": _rtf(lambda: wg.generate(math.ceil(SR / wg.config.slice_length), g), 1.0, 3),
            "codec": _rtf(lambda: cdc.decode(cdc.encode(clip)), 2.0, 3),
            "Jukebox": _rtf(lambda: jbx.generate(1, jbx.styles[0], seconds=1.0, generator=g), 1.0, 1),
            "AudioLM": _rtf(lambda: alm.generate(1, 1.0, generator=g), 1.0, 1),
            "CLAP": _rtf(lambda: m["CLAP"].embed_audio(clip[..., :SR]), 1.0, 3),
            "AudioLDM": _rtf(lambda: ldm.generate(["a kick drum"], 1.0, 50, generator=g), 1.0, 2)}


@number("rtf")
def num_rtf(model: str = "WaveGAN") -> str:
    """Real-time factor of one model (seconds of compute per second of audio) on the machine that builds the slides."""
    value = _speeds()[model]
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


@number("params")
def num_params(model: str = "WaveGAN") -> str:
    return f"{sum(p.numel() for p in _models()[model].parameters()) / 1e6:.1f} M"


@figure("rtf_all")
def fig_rtf_all() -> Figure:
    speeds = _speeds()
    order = sorted(speeds, key=speeds.get)
    fig = Figure(figsize=(7, 2.8))
    ax = fig.subplots()
    ax.barh(order, [speeds[k] for k in order], color=["tab:green" if speeds[k] < 1 else "tab:red" for k in order])
    ax.axvline(1, color="k", ls="--", lw=1)
    ax.set(xscale="log", xlabel="real-time factor on one laptop CPU (log scale; < 1: faster than real time)")
    fig.tight_layout()
    return fig


@lru_cache(maxsize=1)
def _phase_versions() -> dict[str, torch.Tensor]:
    """One held-out sentence: as is, its exact STFT magnitude with random and with Griffin-Lim phase, Opus 6 kbit/s."""
    from course_lib import baselines, spectral

    x = _sentences()[0]
    mag = spectral.stft(x.reshape(1, -1), 512, 128).abs()
    phase = torch.rand(mag.shape, generator=torch.Generator().manual_seed(4)) * 2 * math.pi
    return {"original": x,
            "random": spectral.istft(mag * torch.exp(1j * phase), 512, 128, length=x.shape[-1]).reshape(1, 1, -1),
            "griffin_lim": spectral.griffin_lim(mag, 512, 128, generator=torch.Generator().manual_seed(4),
                                                length=x.shape[-1]).reshape(1, 1, -1),
            "opus": baselines.opus(x, SR, 6000).audio[..., : x.shape[-1]]}


@sound("phase_demo")
def snd_phase_demo(version: str = "original") -> tuple[torch.Tensor, int]:
    return _phase_versions()[version][0, 0], SR


@number("phase_metric")
def num_phase_metric(version: str = "random", metric: str = "mel") -> str:
    """``mel`` distance (dB), ``si_sdr`` (dB) or wideband ``pesq`` of one version against the sentence."""
    from course_lib import metrics

    v = _phase_versions()
    y, x = v[version], v["original"]
    value = {"mel": lambda: metrics.multiscale_mel_distance(y, x, SR)[0], "si_sdr": lambda: metrics.si_sdr(y, x)[0],
             "pesq": lambda: metrics.pesq_wb(y, x, SR)}[metric]()
    return f"{float(value):.1f}" if metric == "si_sdr" else f"{float(value):.2f}"


CONTROL = {"same": "a kick drum", "emotion": "an angry kick drum", "space": "a kick drum, far away on the left",
           "class": "rain falling on a roof"}


@lru_cache(maxsize=8)
def _control(variant: str) -> torch.Tensor:
    from course_lib import checkpoint

    guidance = checkpoint.read_card("audioldm-synthworld-unet")["metrics"]["guidance_scale"]   # chosen in training
    return _models()["AudioLDM"].generate([CONTROL[variant]], 1.0, 50, guidance, generator=torch.Generator().manual_seed(7))


@sound("control")
def snd_control(variant: str = "same") -> tuple[torch.Tensor, int]:
    return _control(variant)[0, 0], SR


@number("control_change")
def num_control_change(variant: str = "emotion") -> str:
    """Mel distance (dB) between the clip for a prompt variant and for the plain prompt, same noise."""
    from course_lib import metrics

    return f"{float(metrics.multiscale_mel_distance(_control(variant), _control('same'), SR)[0]):.1f}"


@number("control_prompt")
def num_control_prompt(variant: str = "emotion") -> str:
    return CONTROL[variant]


@number("stream_error")
def num_stream_error(model: str = "causal") -> str:
    """Largest relative change of a decode's first 20 frames when the later frames are cut off."""
    from course_lib import codec

    torch.manual_seed(0)
    m = codec.Codec(codec.CodecConfig(causal=True)).eval() if model == "causal" else _models()["codec"]
    with torch.no_grad():
        codes = m.encode(_sentences()[0])
        full, part = m.decode(codes), m.decode(codes[..., :20])
    n = 20 * m.hop_length
    return f"{float((full[..., :n] - part[..., :n]).abs().max() / full[..., :n].abs().max()):.0e}"
