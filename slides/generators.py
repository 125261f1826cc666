"""Figures, sounds and numbers for the slides, computed at build time with ``course_lib``.

A deck refers to them as ``fig:NAME?k=v``, ``sound:NAME?k=v`` and ``{{num:NAME?k=v}}``
(see ``slides/build.py``). Query values arrive as strings; each generator converts them.

- figure generators return a matplotlib ``Figure``,
- sound generators return ``(wav (T,), sample_rate)``,
- number generators return the formatted text that goes on the slide.

Everything is deterministic (fixed ``torch.Generator`` seeds), so a rebuild gives the same
slides, and everything comes from the same code the notebooks use, so the slides say what
the course measures. Register a new generator with ``@figure("name")``, ``@sound("name")``
or ``@number("name")``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib import audio, metrics, plots  # noqa: E402
from course_lib.data import FAMILIES, SynthWorld  # noqa: E402
from course_lib.listen import wav_bytes  # noqa: E402
from course_lib.quantize import bits_per_second  # noqa: E402

FIGURES: dict[str, Callable[..., Figure]] = {}
SOUNDS: dict[str, Callable[..., tuple[torch.Tensor, int]]] = {}
NUMBERS: dict[str, Callable[..., str]] = {}
SR = 16_000
DPI = 100


def figure(name: str):
    return lambda fn: FIGURES.setdefault(name, fn)


def sound(name: str):
    return lambda fn: SOUNDS.setdefault(name, fn)


def number(name: str):
    return lambda fn: NUMBERS.setdefault(name, fn)


def figure_png(fig: Figure) -> bytes:
    return plots.fig_to_png(fig, dpi=DPI, close=True)


def sound_wav(wav: torch.Tensor, sample_rate: int) -> bytes:
    """16-bit WAV; peak-normalised only when the clip would clip (quantization demos keep their levels)."""
    return wav_bytes(wav, sample_rate, normalize=bool(wav.abs().max() > 1.0))


def _fig(w: float = 10.0, h: float = 3.6, rows: int = 1, cols: int = 1):
    fig = Figure(figsize=(w, h), constrained_layout=True)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def _tr(lang: str, en: str, de: str) -> str:
    return de if lang == "de" else en


# ----------------------------------------------------------------------------- clips

@lru_cache(maxsize=64)
def _example(family: str, index: int) -> tuple[torch.Tensor, str]:
    """(audio (T,), caption) of SynthWorld test clip ``index`` of one family; peak 0.9."""
    ex = SynthWorld(split="test", families=[family], sample_rate=SR, seed=0)[index]
    wav, caption = ex.audio.reshape(-1).float(), ex.caption
    return 0.9 * wav / wav.abs().max().clamp_min(1e-8), caption


def clip(family: str = "music", index: int | str = 0) -> torch.Tensor:
    """One second (T,) at 16 kHz from SynthWorld's test split: the class is ``index`` modulo the family's classes."""
    return _example(family, int(index))[0]


def _class(family: str, index: int) -> str:
    names = FAMILIES[family]
    return names[index % len(names)].replace("_", " ")


def caption(family: str = "music", index: int | str = 0) -> str:
    return _example(family, int(index))[1]


# ----------------------------------------------------------------------------- audio as data

@figure("waveform_spectrogram")
def fig_waveform_spectrogram(family: str = "music", index: str = "0", lang: str = "en") -> Figure:
    wav = clip(family, index)
    fig, (a, b) = _fig(11, 3.4, 1, 2)
    fig.suptitle(f"SynthWorld {family}: \"{caption(family, index)}\"", fontsize=11)
    plots.plot_waveform(wav, SR, ax=a, title=_tr(lang, "waveform", "Wellenform"))
    plots.plot_spectrogram(wav, SR, ax=b, title=_tr(lang, "mel spectrogram", "Mel-Spektrogramm"), n_fft=512, hop_length=128,
                           n_mels=64)
    return fig


@figure("families")
def fig_families(families: str = "drums,notes,environment,speech,music") -> Figure:
    names = families.split(",")
    fig, axes = _fig(12, 2.6, 1, len(names))
    for ax, fam in zip(axes, names):
        plots.plot_spectrogram(clip(fam, 0), SR, ax=ax, title=f"{fam}: {_class(fam, 0)}", n_fft=512, hop_length=128, n_mels=64,
                               colorbar=False)
        ax.set_ylabel("")
    return fig


@figure("zoom_levels")
def fig_zoom_levels(family: str = "music", lang: str = "en") -> Figure:
    wav = clip(family, 0)
    fig, axes = _fig(12, 2.8, 1, 3)
    for ax, (t0, t1) in zip(axes, [(0.0, 1.0), (0.30, 0.35), (0.300, 0.302)]):
        plots.plot_waveform(wav, SR, ax=ax, zoom=(t0, t1) if t1 < 1.0 else None)
        n = round((t1 - t0) * SR)
        ax.set_title(_tr(lang, f"{(t1 - t0) * 1000:g} ms = {n:,} samples", f"{(t1 - t0) * 1000:g} ms = {n:,} Samples"))
    return fig


@figure("quantization")
def fig_quantization(bits: str = "3") -> Figure:
    b = int(bits)
    t = torch.arange(64) / SR
    x = 0.9 * torch.sin(2 * math.pi * 440 * t)
    q = audio.quantize(x, b)
    fig, (ax,) = _fig(8, 3.2)
    ax.plot(t * 1000, x, lw=1.2, label="continuous")
    ax.step(t * 1000, q, where="mid", lw=1.2, label=f"{b}-bit ({2 ** b} levels)")
    ax.plot(t * 1000, q, ".", ms=5, color="C1")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("amplitude")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _snr_at(bits: int, family: str = "music") -> float:
    wav = clip(family, 0)[None, None]                         # (1, 1, T)
    return float(metrics.snr(audio.quantize(wav, bits), wav)[0])


@figure("bit_depth_snr")
def fig_bit_depth_snr(family: str = "music") -> Figure:
    bits = list(range(2, 17, 2))
    snrs = [_snr_at(b, family) for b in bits]
    fig, (ax,) = _fig(7, 3.2)
    ax.bar(bits, snrs, width=1.2, label=f"measured ({family} clip)")
    ax.plot(bits, [6.02 * b for b in bits], "k--", lw=1, label="6.02 dB per bit")
    ax.set_xlabel("bits per sample")
    ax.set_ylabel("SNR (dB)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return fig


@number("snr_bits")
def num_snr_bits(bits: str = "8", family: str = "music") -> str:
    return f"{_snr_at(int(bits), family):.1f} dB"


@sound("clip")
def snd_clip(family: str = "music", index: str = "0") -> tuple[torch.Tensor, int]:
    return clip(family, index), SR


@sound("quantized")
def snd_quantized(bits: str = "4", family: str = "music") -> tuple[torch.Tensor, int]:
    return audio.quantize(clip(family, 0), int(bits)), SR


@number("samples")
def num_samples(seconds: str = "1", sample_rate: str = "16000") -> str:
    return f"{round(float(seconds) * int(sample_rate)):,}"


# ----------------------------------------------------------------------------- the four challenges

def _clicked(family: str = "notes") -> tuple[torch.Tensor, int]:
    """The clip with ONE sample replaced by its negative peak (a single wrong sample)."""
    wav = clip(family, 0).clone()
    i = int(0.5 * SR)
    wav[i] = -0.9 if wav[i] >= 0 else 0.9
    return wav, i


@sound("click")
def snd_click(family: str = "notes") -> tuple[torch.Tensor, int]:
    return _clicked(family)[0], SR


@number("click_snr")
def num_click_snr(family: str = "notes") -> str:
    bad, _ = _clicked(family)
    ref = clip(family, 0)
    return f"{float(metrics.snr(bad[None, None], ref[None, None])[0]):.1f} dB"


@figure("click")
def fig_click(family: str = "notes", lang: str = "en") -> Figure:
    bad, i = _clicked(family)
    fig, (a, b) = _fig(11, 3.2, 1, 2)
    plots.plot_waveform(bad, SR, ax=a, zoom=(i / SR - 0.002, i / SR + 0.002),
                        title=_tr(lang, f"one wrong sample of {SR:,}", f"ein falsches Sample unter {SR:,}".replace(",", ".")))
    plots.plot_spectrogram(bad, SR, ax=b, kind="linear", n_fft=512, hop_length=64, colorbar=False,
                           title=_tr(lang, "the click: a vertical line through every frequency",
                                     "der Klick: eine senkrechte Linie durch alle Frequenzen"))
    return fig


@figure("hierarchy")
def fig_hierarchy(family: str = "music", lang: str = "en") -> Figure:
    wav = clip(family, 0)
    fig, (ax,) = _fig(10, 3.4)
    plots.plot_spectrogram(wav, SR, ax=ax, n_fft=512, hop_length=128, n_mels=64, colorbar=False)
    dur = wav.shape[-1] / SR
    levels = [(_tr(lang, "sample: 62.5 µs", "Sample: 62,5 µs"), 1 / SR),
              (_tr(lang, "period of 440 Hz: 2.3 ms", "Periode bei 440 Hz: 2,3 ms"), 1 / 440),
              (_tr(lang, "note / syllable: ~100 ms", "Note / Silbe: ~100 ms"), 0.1),
              (_tr(lang, "phrase: the whole clip", "Phrase: der ganze Clip"), dur)]
    top = ax.get_ylim()[1]
    for k, (label, span) in enumerate(levels):
        y = top * (0.93 - 0.13 * k)
        x0 = 0.02 if span < dur / 2 else 0.0
        ax.annotate("", xy=(min(x0 + max(span, 0.004), dur - 0.002), y), xytext=(x0 + 0.002, y),
                    arrowprops=dict(arrowstyle="|-|", color="white", lw=1.5))
        ax.text(0.03 + max(span, 0.004) if span < dur / 2 else 0.05, y, label, color="white",
                va="center", fontsize=9, fontweight="bold")
    ax.set_title(_tr(lang, "structure on every time scale", "Struktur auf jeder Zeitskala"))
    return fig


@figure("data_volume")
def fig_data_volume(lang: str = "en") -> Figure:
    rows = _rates()
    fig, (ax,) = _fig(9, 3.4)
    names, values = zip(*rows)
    ax.barh(names, values, color=["C0", "C0", "C2", "C1", "C3"])
    ax.set_xscale("log")
    for y, v in enumerate(values):
        ax.text(v * 1.1, y, f"{v:,.0f}", va="center", fontsize=9)
    ax.set_xlabel(_tr(lang, "values per second of audio (log scale)", "Werte pro Sekunde Audio (log. Skala)"))
    ax.invert_yaxis()
    ax.set_xlim(10, 3e6)
    return fig


def _rates() -> list[tuple[str, float]]:
    """Values per second: raw samples vs tokens (course codec: 16 kHz / 320 hop, Q=8)."""
    frame_rate = 16_000 / 320
    return [("CD stereo, 44.1 kHz x 2", 88_200.0), ("16 kHz mono samples", 16_000.0),
            ("codec tokens, 50 Hz x 8 quantizers", frame_rate * 8), ("codec frames, 50 Hz", frame_rate),
            ("semantic tokens, 25 Hz", 25.0)]


@number("bitrate")
def num_bitrate(frame_rate: str = "50", num_quantizers: str = "8", codebook_size: str = "1024") -> str:
    bps = bits_per_second(float(frame_rate), int(num_quantizers), int(codebook_size))
    return f"{bps / 1000:g} kbit/s"


@number("compression")
def num_compression(frame_rate: str = "50", num_quantizers: str = "8", codebook_size: str = "1024",
                    sample_rate: str = "16000", bits: str = "16") -> str:
    pcm = int(sample_rate) * int(bits)
    return f"{pcm / bits_per_second(float(frame_rate), int(num_quantizers), int(codebook_size)):.0f}x"


@number("rate_ratio")
def num_rate_ratio(rate: str, per: str) -> str:
    """rate / per, e.g. samples per token (16000 / 50 = 320)."""
    return f"{float(rate) / float(per):,.0f}"


@number("seconds")
def num_seconds(samples: str, sample_rate: str = "16000") -> str:
    return f"{int(samples) / int(sample_rate):.2f} s"


# ----------------------------------------------------------------------------- 1D convolutions

def _sinc_lowpass(cutoff_hz: float, taps: int = 101) -> torch.Tensor:
    n = torch.arange(taps) - (taps - 1) / 2
    h = torch.special.sinc(2 * cutoff_hz / SR * n) * torch.hann_window(taps, periodic=False)
    return h / h.sum()                                                   # (taps,), unity gain at DC


def _filtered(kind: str, cutoff: float, family: str) -> torch.Tensor:
    x = clip(family, 0)
    h = _sinc_lowpass(cutoff)
    low = F.conv1d(x[None, None], h.flip(0)[None, None], padding=len(h) // 2)[0, 0]     # (T,)
    return low if kind == "lowpass" else x - low


@sound("filtered")
def snd_filtered(kind: str = "lowpass", cutoff: str = "500", family: str = "music") -> tuple[torch.Tensor, int]:
    return _filtered(kind, float(cutoff), family), SR


@figure("conv_filter")
def fig_conv_filter(cutoff: str = "500", family: str = "music", lang: str = "en") -> Figure:
    c = float(cutoff)
    fig, axes = _fig(12, 3.0, 1, 3)
    axes[0].plot(_sinc_lowpass(c).numpy(), ".-", ms=3, lw=0.8)
    axes[0].set_title(_tr(lang, f"kernel: windowed sinc, {c:g} Hz, 101 taps", f"Kern: gefensterter Sinc, {c:g} Hz, 101 Taps"))
    axes[0].set_xlabel(_tr(lang, "tap", "Tap"))
    axes[0].grid(alpha=0.3)
    for ax, kind in zip(axes[1:], ("lowpass", "highpass")):
        plots.plot_spectrogram(_filtered(kind, c, family), SR, ax=ax, n_fft=512, hop_length=128, n_mels=64,
                               colorbar=False, title=_tr(lang, f"{kind} = conv1d" if kind == "lowpass" else "x - lowpass",
                                                         "Tiefpass = conv1d" if kind == "lowpass" else "x - Tiefpass"))
    return fig


def receptive_field(layers: int, kernel_size: int, dilated: bool) -> int:
    """Measured, not by formula: the support of d(output[-1]) / d(input) through a conv stack."""
    x = torch.zeros(1, 1, 4096, requires_grad=True)
    h = x
    for i in range(layers):
        w = torch.ones(1, 1, kernel_size)
        h = F.conv1d(h, w, dilation=2 ** i if dilated else 1)
    h[0, 0, -1].backward()
    return int((x.grad[0, 0] != 0).sum())


@figure("receptive_field")
def fig_receptive_field(kernel_size: str = "3", max_layers: str = "10") -> Figure:
    k, n = int(kernel_size), int(max_layers)
    ls = list(range(1, n + 1))
    fig, (ax,) = _fig(7, 3.2)
    ax.plot(ls, [receptive_field(i, k, False) for i in ls], "o-", label="dilation 1")
    ax.plot(ls, [receptive_field(i, k, True) for i in ls], "s-", label="dilation 1, 2, 4, ...")
    ax.set_yscale("log")
    ax.set_xlabel(f"layers (kernel size {k})")
    ax.set_ylabel("receptive field (samples)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


@number("receptive_field")
def num_receptive_field(layers: str = "10", kernel_size: str = "3", dilated: str = "1") -> str:
    return f"{receptive_field(int(layers), int(kernel_size), dilated not in ('0', 'false', 'no')):,}"


def _upsampled(mode: str, stride: int, family: str) -> torch.Tensor:
    """Downsample by ``stride`` (average), then upsample back with a transposed conv or nearest + conv."""
    x = clip(family, 0)[None, None]                                    # (1, 1, T)
    low = F.avg_pool1d(x, stride)                                       # (1, 1, T / stride)
    if mode == "transposed":
        # kernel 3 at stride 4 (kernel not a multiple of the stride): overlapping and missing taps -> checkerboard
        w = torch.ones(1, 1, stride - 1)
        return F.conv_transpose1d(low, w, stride=stride)[0, 0]
    up = F.interpolate(low, scale_factor=stride, mode="nearest")
    w = torch.ones(1, 1, stride) / stride
    return F.conv1d(F.pad(up, (stride // 2, stride - 1 - stride // 2)), w)[0, 0]   # "same" length


@sound("upsampled")
def snd_upsampled(mode: str = "transposed", stride: str = "4", family: str = "music") -> tuple[torch.Tensor, int]:
    return _upsampled(mode, int(stride), family), SR


@figure("checkerboard")
def fig_checkerboard(stride: str = "4", family: str = "music", lang: str = "en") -> Figure:
    s = int(stride)
    fig, axes = _fig(12, 3.0, 1, 3)
    ones = torch.ones(1, 1, 8)
    y = F.conv_transpose1d(ones, torch.ones(1, 1, s - 1), stride=s)[0, 0]
    axes[0].stem(y.numpy())
    axes[0].set_title(_tr(lang, f"constant input, transposed conv (k={s - 1}, stride={s})",
                          f"konstante Eingabe, transponierte Faltung (k={s - 1}, Stride {s})"))
    axes[0].set_xlabel(_tr(lang, "sample", "Sample"))
    titles = {"en": {"transposed": f"transposed upsampling x{s}: tones at k·sr/stride", "nearest": f"nearest upsampling x{s} + conv"},
              "de": {"transposed": f"transponiertes Upsampling x{s}: Töne bei k·sr/Stride",
                     "nearest": f"Nearest-Upsampling x{s} + Faltung"}}[lang if lang == "de" else "en"]
    for ax, mode in zip(axes[1:], ("transposed", "nearest")):
        plots.plot_spectrogram(_upsampled(mode, s, family), SR, ax=ax, kind="linear", n_fft=512, hop_length=128,
                               colorbar=False, title=titles[mode])
    return fig


@figure("causal")
def fig_causal(kernel_size: str = "5") -> Figure:
    k = int(kernel_size)
    x = torch.zeros(1, 1, 21)
    x[0, 0, 10] = 1.0                                                   # an impulse at t = 10
    w = torch.ones(1, 1, k)
    same = F.conv1d(x, w, padding=k // 2)[0, 0]                         # centred: sees the future
    causal = F.conv1d(F.pad(x, (k - 1, 0)), w)[0, 0]                    # left padding only
    fig, axes = _fig(10, 2.8, 1, 2)
    for ax, y, title in zip(axes, (same, causal), ("'same' padding: output moves before the input",
                                                   f"causal: pad {k - 1} on the left only")):
        ax.stem(x[0, 0].numpy(), linefmt="C7-", markerfmt="C7o", basefmt=" ", label="input impulse")
        ax.stem(np.arange(21) + 0.15, y.numpy(), linefmt="C1-", markerfmt="C1s", basefmt=" ", label="output")
        ax.axvline(10, color="k", lw=0.5, ls=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time step")
        ax.legend(fontsize="x-small", loc="upper left")
    return fig


@number("causal_pad")
def num_causal_pad(kernel_size: str = "5", dilation: str = "1") -> str:
    """Left padding that makes a conv causal, checked: output[t] must not see input[t + 1]."""
    k, d = int(kernel_size), int(dilation)
    pad = (k - 1) * d
    x = torch.zeros(1, 1, 32, requires_grad=True)
    F.conv1d(F.pad(x, (pad, 0)), torch.ones(1, 1, k), dilation=d)[0, 0, 10].backward()
    assert x.grad[0, 0, 11:].abs().sum() == 0 and x.grad[0, 0, 10] != 0, "padding is not causal"
    return str(pad)


# ----------------------------------------------------------------------------- tokens, CLAP, models

@figure("tokens")
def fig_tokens(family: str = "music", num_quantizers: str = "4", codebook_size: str = "16", lang: str = "en") -> Figure:
    """Mel frames of a clip, coded by course_lib's residual VQ (codebooks by k-means on the clip)."""
    from course_lib.quantize import ResidualVectorQuantizer
    from course_lib.spectral import log_mel_spectrogram

    mel = log_mel_spectrogram(clip(family, 0)[None], SR, n_fft=1024, hop_length=320, n_mels=32)
    z = mel.reshape(1, 32, -1)                                          # (B, D, L): one frame per 20 ms
    rvq = ResidualVectorQuantizer(32, int(codebook_size), int(num_quantizers)).train()
    with torch.no_grad():
        rvq(z, generator=torch.Generator().manual_seed(0))              # first call: k-means initialises
        codes = rvq.eval()(z).codes[0]                                  # (Q, L)
    fig, (a, b) = _fig(12, 3.6, 2, 1)
    plots.plot_spectrogram(clip(family, 0), SR, ax=a, n_fft=1024, hop_length=320, n_mels=32, colorbar=False,
                           title=_tr(lang, "50 mel frames per second", "50 Mel-Frames pro Sekunde"))
    plots.plot_tokens(codes[:, :50], ax=b, codebook_size=int(codebook_size),
                      title=_tr(lang, f"residual VQ: {num_quantizers} tokens per frame (first second)",
                                f"Residual-VQ: {num_quantizers} Tokens pro Frame (erste Sekunde)"))
    return fig


@number("chance_loss")
def num_chance_loss(batch: str = "64") -> str:
    """Contrastive (InfoNCE) loss of a CLAP that has learned nothing: equal logits -> ln B."""
    from course_lib.clap import contrastive_loss

    b = int(batch)
    e = F.normalize(torch.ones(b, 8), dim=-1)
    return f"{float(contrastive_loss(e, e, scale=1.0).loss):.2f}"


@figure("clap_matrix")
def fig_clap_matrix(batch: str = "8", lang: str = "en") -> Figure:
    """Similarity matrix of paired embeddings (audio = caption + noise): the diagonal wins."""
    from course_lib.clap import contrastive_loss

    b, g = int(batch), torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(b, 32, generator=g), dim=-1)
    aud = F.normalize(text + 0.6 * torch.randn(b, 32, generator=g), dim=-1)
    out = contrastive_loss(aud, text, scale=1 / 0.07)
    fig, (ax,) = _fig(4.6, 3.8)
    im = ax.imshow(out.logits.numpy() * 0.07, cmap="viridis", vmin=-1, vmax=1)
    ax.set_xlabel(_tr(lang, "caption j", "Beschreibung j"))
    ax.set_ylabel(_tr(lang, "audio clip i", "Audioclip i"))
    ax.set_title(f"cosine similarity, loss {float(out.loss):.2f}", fontsize=10)
    fig.colorbar(im, ax=ax)
    return fig


_MODELS = [  # year, name, authors, key idea (en), key idea (de), inherits from
    (2018, "WaveGAN", "Donahue, McAuley, Puckette", "GAN on raw samples\n1D transposed convs",
     "GAN auf rohen Samples\n1D-Transposed-Convs"),
    (2020, "Jukebox", "Dhariwal et al.", "hierarchical VQ-VAE\n+ transformer prior",
     "hierarchisches VQ-VAE\n+ Transformer-Prior"),
    (2022, "AudioLM", "Borsos et al.", "semantic + acoustic tokens\n(SoundStream) as language",
     "semantische + akustische\nTokens als Sprache"),
    (2023, "AudioLDM", "Liu et al.", "latent diffusion\ntext control via CLAP",
     "latente Diffusion\nTextsteuerung über CLAP"),
]


@figure("timeline")
def fig_timeline(lang: str = "en") -> Figure:
    fig, (ax,) = _fig(12, 3.4)
    for i, (year, name, who, en, de) in enumerate(_MODELS):
        ax.text(i, 0.78, f"{name}\n{year}", ha="center", va="center", fontsize=14, fontweight="bold",
                bbox=dict(boxstyle="round", fc=f"C{i}", alpha=0.25))
        ax.text(i, 0.36, _tr(lang, en, de), ha="center", va="center", fontsize=10)
        ax.text(i, 0.08, who, ha="center", va="center", fontsize=8, color="#555")
        if i:
            ax.annotate("", xy=(i - 0.38, 0.78), xytext=(i - 0.62, 0.78), arrowprops=dict(arrowstyle="->", lw=2))
    links = _tr(lang, ["convs that hear", "discrete tokens", "text-audio space"],
                ["Convs, die hören", "diskrete Tokens", "Text-Audio-Raum"]) if lang == "de" else \
        ["convs that hear", "discrete tokens", "text-audio space"]
    for i, label in enumerate(links):
        ax.text(i + 0.5, 0.95, label, ha="center", fontsize=8, style="italic")
    ax.set_xlim(-0.6, 3.6)
    ax.set_ylim(0, 1.05)
    ax.set_axis_off()
    return fig


@number("tokens_per_second")
def num_tokens_per_second(sample_rate: str = "44100", hop: str = "128", num_quantizers: str = "1") -> str:
    """Frames per second (``sample_rate / hop``) times the tokens per frame (``num_quantizers``)."""
    return f"{int(sample_rate) / int(hop) * int(num_quantizers):,.0f}"


@number("ar_steps")
def num_ar_steps(seconds: str = "60", rate: str = "44100") -> str:
    """Autoregressive steps to generate ``seconds`` of audio at ``rate`` values per second."""
    return f"{float(seconds) * float(rate):,.0f}"


# The model decks (02, 03, 06) and the token-model decks (04) register their generators from their own modules.
import generators_models  # noqa: E402,F401
import generators_tokens  # noqa: E402,F401
import generators_diffusion  # noqa: E402,F401
import generators_future  # noqa: E402,F401
