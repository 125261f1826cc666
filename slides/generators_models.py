"""Slide generators for the decks of the model notebooks (02 WaveGAN, 03 codec, 06 CLAP).

Split from ``generators.py`` (which imports this module at its end) to keep each file readable;
the registries and helpers live there.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from course_lib import metrics, plots
from course_lib.data import SynthWorld
from generators import SR, _fig, clip, figure, number, sound


# ----------------------------------------------------------------------------- shipped checkpoints (decks 02, 03, 06)
# Loaded once per build; numbers that take minutes to recompute come from the checkpoint's card
# (``course_lib.checkpoint.read_card(name)["metrics"]``, written by ``course-lib eval ...``).

def _card_value(name: str, key: str):
    """``key`` is a path into the card's metrics, ``.``-separated; list items by index (``codec.q1.dead.0``)."""
    from course_lib.checkpoint import read_card

    value = read_card(name)["metrics"]
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            known = sorted(value) if isinstance(value, dict) else f"indices 0..{len(value) - 1}"
            raise KeyError(f"card of {name!r} has no metric {key!r} (stops at {part!r}; known: {known})")
    return value


def _fmt(value: float, fmt: str) -> str:
    if fmt == "text":
        return str(value)
    if fmt == "pct":
        return f"{100 * float(value):.1f} %"
    if fmt == "int":
        return f"{round(float(value)):,}"
    return f"{float(value):,.{int(fmt)}f}"


@number("card_metric")
def num_card_metric(name: str, key: str, fmt: str = "2") -> str:
    """A metric from a shipped checkpoint's card; ``fmt`` is ``pct``, ``int``, ``text`` or a number of decimals."""
    return _fmt(_card_value(name, key), fmt)


@number("card_field")
def num_card_field(name: str, key: str, fmt: str = "int") -> str:
    """A card field (``steps``, ``wall_time_s``, ``parameters``, ``eval.clips``); ``fmt`` as in card_metric, ``min``,
    or ``min_all``: minutes of this run and of every earlier run it started from (the card's ``runs_before``)."""
    from course_lib.checkpoint import read_card, train_seconds

    card = value = read_card(name)
    for part in key.split("."):                       # list items by index (sampling_changes.0.reading)
        value = value[int(part)] if isinstance(value, list) else value[part]
    if fmt == "min_all":
        value = train_seconds(card)
    return f"{float(value) / 60:.0f} min" if fmt in ("min", "min_all") else _fmt(value, fmt)


# --- WaveGAN

@lru_cache(maxsize=1)
def _wavegan():
    from course_lib import wavegan

    return wavegan.load_pretrained("wavegan-synthworld-drums").eval()


@lru_cache(maxsize=4)
def _wavegan_clips(which: str, n: int = 32) -> torch.Tensor:
    """(n, 1, T) clips: ``shipped`` generator, ``untrained`` generator (same config, seed 0) or ``real`` drums."""
    from course_lib import wavegan
    from course_lib.recipes import wavegan as wavegan_recipe

    model = _wavegan()
    if which == "real":
        return wavegan_recipe.load_clips("synthworld-drums", "test", size=n, slice_length=model.config.slice_length).audio
    if which == "untrained":
        with torch.random.fork_rng():                                  # default init, seeded, no global side effect
            torch.manual_seed(0)
            model = wavegan.WaveGAN(model.config).eval()
    with torch.no_grad():
        return model.generate(n, torch.Generator().manual_seed(0))


def _power_db(wav: torch.Tensor) -> np.ndarray:
    """Mean power spectrum (dB) of clips (B, 1, T), Hann-windowed, DC removed."""
    x = wav[:, 0].double() - wav[:, 0].double().mean(-1, keepdim=True)
    spec = torch.fft.rfft(x * torch.hann_window(x.shape[-1], dtype=torch.float64), dim=-1)
    return 10 * np.log10((spec.abs() ** 2).mean(0).numpy() + 1e-20)


def _peak_db(power_db: np.ndarray, f0: float, n: int) -> float:
    """How far the bin at f0 sticks out of the median of its +-30 neighbours (as notebook 02 measures)."""
    i = int(round(f0 * n / SR))
    return float(power_db[i] - np.median(np.r_[power_db[i - 30:i - 3], power_db[i + 4:i + 31]]))


@sound("wavegan")
def snd_wavegan(which: str = "shipped", index: str = "0") -> tuple[torch.Tensor, int]:
    """One WaveGAN clip (4,096 samples = 256 ms), repeated 3 times with 0.25 s gaps so it can be heard."""
    wav = _wavegan_clips(which)[int(index), 0]
    gap = torch.zeros(SR // 4)
    return torch.cat([wav, gap, wav, gap, wav]), SR


@number("wavegan_tone")
def num_wavegan_tone(which: str = "untrained", freq: str = "4000") -> str:
    clips = _wavegan_clips(which)
    return f"{_peak_db(_power_db(clips), float(freq), clips.shape[-1]):.0f} dB"


@figure("wavegan_spectra")
def fig_wavegan_spectra() -> Figure:
    fig, (ax,) = _fig(10, 3.4)
    for which, color in (("real", "C2"), ("untrained", "C3"), ("shipped", "C0")):
        clips = _wavegan_clips(which)
        p = _power_db(clips)
        f = np.fft.rfftfreq(clips.shape[-1], 1 / SR)
        ax.plot(f, p - p.max(), lw=0.8, color=color, label=f"{which} (32 clips)")
    for f0 in (250, 1000, 4000):
        ax.axvline(f0, color="k", lw=0.5, ls=":")
    ax.set_xlabel("frequency (Hz); dotted: stride frequencies 16000/4^k")
    ax.set_ylabel("mean power (dB)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


@figure("wavegan_history")
def fig_wavegan_history() -> Figure:
    from course_lib.checkpoint import read_card

    hist = read_card("wavegan-synthworld-drums")["history"]
    fig, axes = _fig(11, 3.0, 1, 2)
    for ax, key in zip(axes, ("wasserstein", "gradient_penalty")):
        ax.plot([h["step"] for h in hist], [h[key] for h in hist], ".-", ms=3, lw=0.8)
        ax.set_title(f"{key.replace('_', ' ')} (shipped run, from its card)", fontsize=10)
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
    return fig


@figure("wavegan_coverage")
def fig_wavegan_coverage() -> Figure:
    fractions = _card_value("wavegan-synthworld-drums", "class_fractions")
    names = list(fractions)
    fig, (ax,) = _fig(9, 3.2)
    ax.bar(np.arange(len(names)) - 0.2, [1 / len(names)] * len(names), 0.4, color="C2", label="real drums (balanced)")
    ax.bar(np.arange(len(names)) + 0.2, [fractions[k] for k in names], 0.4, color="C0",
           label="shipped WaveGAN, 512 clips")
    ax.set_xticks(np.arange(len(names)), [n.replace("_", " ") for n in names])
    ax.set_ylabel("share of clips")
    ax.set_title("which drum the course classifier hears (card metrics)", fontsize=10)
    ax.legend(fontsize="small")
    return fig


@figure("wavegan_clips")
def fig_wavegan_clips(which: str = "shipped", n: str = "4") -> Figure:
    clips = _wavegan_clips(which)
    k = int(n)
    fig, axes = _fig(12, 2.4, 1, k)
    for i, ax in enumerate(axes):
        plots.plot_spectrogram(clips[i, 0], SR, ax=ax, n_fft=256, hop_length=32, n_mels=48, colorbar=False,
                               title=f"{which} #{i}")
        if i:
            ax.set_ylabel("")
    return fig


# --- neural codec

@lru_cache(maxsize=1)
def _codec():
    from course_lib import codec

    torch.set_flush_denormal(True)   # SynthWorld decays hold subnormals, which slow CPU convolutions
    return codec.load_pretrained("codec-synthworld").eval()


@lru_cache(maxsize=16)
def _coded(family: str, q: int) -> torch.Tensor:
    """(T,) clip through the shipped codec with the first ``q`` quantizers (0: all)."""
    x = clip(family, 0)[None, None]
    with torch.no_grad():
        return _codec().reconstruct(x, q or None)[0, 0, : x.shape[-1]]


@sound("codec")
def snd_codec(family: str = "music", q: str = "0") -> tuple[torch.Tensor, int]:
    return _coded(family, int(q)), SR


@sound("opus")
def snd_opus(family: str = "music", bitrate: str = "6000") -> tuple[torch.Tensor, int]:
    from course_lib import baselines

    return baselines.opus(clip(family, 0)[None], SR, float(bitrate)).audio[0], SR


@number("codec")
def num_codec(prop: str = "frame_rate", q: str = "0") -> str:
    """Properties of the shipped codec: hop_length, frame_rate, bitrate (kbit/s, for ``q`` quantizers), Q, K,
    tokens_per_second, parameters (M)."""
    m = _codec()
    c = m.config
    values = {"hop_length": f"{m.hop_length}", "frame_rate": f"{m.frame_rate:g}",
              "bitrate": f"{m.bitrate(int(q) or None) / 1000:g} kbit/s", "Q": f"{c.num_quantizers}",
              "K": f"{c.codebook_size}", "tokens_per_second": f"{m.frame_rate * c.num_quantizers:,.0f}",
              "strides": " x ".join(str(s) for s in c.strides),
              "parameters": f"{sum(p.numel() for p in m.parameters()) / 1e6:.1f} M",
              "compression": f"{16 * SR / m.bitrate():.0f}x"}
    if prop not in values:
        raise KeyError(f"unknown codec property {prop!r}; known: {sorted(values)}")
    return values[prop]


@figure("codec_tokens")
def fig_codec_tokens(family: str = "music") -> Figure:
    x = clip(family, 0)[None, None]
    with torch.no_grad():
        codes = _codec().encode(x)[0]                                   # (Q, L)
    fig, (a, b) = _fig(12, 3.8, 2, 1)
    plots.plot_spectrogram(clip(family, 0), SR, ax=a, n_fft=1024, hop_length=320, n_mels=48, colorbar=False,
                           title=f"one second of {family}: {x.shape[-1]:,} samples")
    plots.plot_tokens(codes, ax=b, codebook_size=_codec().config.codebook_size,
                      title=f"codec-synthworld: {codes.shape[0]} quantizers x {codes.shape[1]} frames = "
                            f"{codes.numel():,} tokens")
    return fig


@figure("codec_ladder")
def fig_codec_ladder() -> Figure:
    """Mel distance against bitrate, from the codec card (200 test clips), with Opus."""
    card = _card_value("codec-synthworld", "codec")
    opus = _card_value("codec-synthworld", "opus")
    rows = sorted(card.values(), key=lambda r: r["bitrate"])
    fig, axes = _fig(11, 3.2, 1, 2)
    axes[0].plot([r["bitrate"] / 1000 for r in rows], [r["mel_distance"] for r in rows], "o-",
                 label="codec-synthworld (Q = 1, 3, 7, 15)")
    axes[0].plot([o["bitrate"] / 1000 for o in opus.values()], [o["mel_distance"] for o in opus.values()], "s",
                 color="C3", ms=8, label="Opus")
    axes[0].set_xlabel("kbit/s")
    axes[0].set_ylabel("multi-scale mel distance (dB), lower = better")
    axes[0].set_ylim(0, None)
    axes[0].legend(fontsize="small")
    axes[0].grid(alpha=0.3)
    full = max(rows, key=lambda r: r["num_quantizers"])
    axes[1].bar(np.arange(1, len(full["usage"]) + 1), full["usage"])
    axes[1].set_xlabel("quantizer")
    axes[1].set_ylabel("share of the 256 codes used")
    axes[1].set_ylim(0, 1)
    axes[1].grid(alpha=0.3, axis="y")
    return fig


@figure("codec_spectrograms")
def fig_codec_spectrograms(family: str = "music") -> Figure:
    fig, axes = _fig(13, 2.8, 1, 4)
    from course_lib import baselines

    rows = [("original", clip(family, 0)), ("codec Q=1, 0.4 kbit/s", _coded(family, 1)),
            ("codec all Q, 6 kbit/s", _coded(family, 0)),
            ("Opus 6 kbit/s", baselines.opus(clip(family, 0)[None], SR, 6000.0).audio[0])]
    for i, (ax, (title, wav)) in enumerate(zip(axes, rows)):
        plots.plot_spectrogram(wav, SR, ax=ax, n_fft=512, hop_length=128, n_mels=64, colorbar=False, title=title)
        if i:
            ax.set_ylabel("")
    return fig


@number("codec_mel")
def num_codec_mel(family: str = "music", q: str = "0") -> str:
    """Multi-scale mel distance (dB) of one clip through the codec (``q`` quantizers; 0: all), measured now."""
    x = clip(family, 0)[None, None]
    return f"{float(metrics.multiscale_mel_distance(_coded(family, int(q))[None, None], x, SR).mean()):.1f} dB"


# --- CLAP

@lru_cache(maxsize=1)
def _clap():
    from course_lib import clap

    return clap.load_pretrained("clap-synthworld").eval()


_CLAP_PICK = (0, 9, 15, 19, 23, 26, 29, 33)      # eight classes, as in notebook 06 (label = index mod 34)


@lru_cache(maxsize=2)
def _clap_batch(tower: str = "scratch"):
    """(similarity (8, 8), captions) of the shipped CLAP on 8 test clips of 8 classes."""
    batch = SynthWorld("test", size=34, seed=1).examples(list(_CLAP_PICK))
    model = _clap()
    with torch.no_grad():
        a, t = model.embed_audio(batch.audio), model.embed_text(list(batch.caption), tower)
    return a @ t.T, list(batch.caption)


@figure("clap_trained_matrix")
def fig_clap_trained_matrix(tower: str = "scratch") -> Figure:
    sim, captions = _clap_batch(tower)
    fig, (ax,) = _fig(9, 4.2)
    im = ax.imshow(sim.numpy(), cmap="viridis", vmin=-1, vmax=1)
    ax.set_yticks(range(len(captions)), [c if len(c) < 40 else c[:38] + "…" for c in captions], fontsize=8)
    ax.set_xticks(range(len(captions)), [str(j) for j in range(len(captions))])
    ax.set_xlabel("caption j")
    ax.set_title(f"clap-synthworld ({tower} text tower): cosine of clip i and caption j", fontsize=10)
    fig.colorbar(im, ax=ax)
    return fig


@number("clap_diag")
def num_clap_diag(tower: str = "scratch") -> str:
    """How many of the 8 clips rank their own caption first."""
    sim, _ = _clap_batch(tower)
    return f"{int((sim.argmax(1) == torch.arange(len(sim))).sum())} of {len(sim)}"


@number("clap_tau")
def num_clap_tau(tower: str = "scratch") -> str:
    return f"{1 / float(_clap().scale(tower).detach()):.3f}"


@lru_cache(maxsize=1)
def _clap_test(per_class: int = 4):
    """(audio embeddings (N, D), audio (N, 1, T), classes, labels) of 34 x per_class SynthWorld test clips."""
    ds = SynthWorld("test", size=34 * per_class, seed=0)
    wav = ds.batch(range(len(ds)))
    with torch.no_grad():
        emb = _clap().embed_audio(wav)
    return emb, wav, ds.classes, torch.arange(len(ds)) % len(ds.classes)


@figure("clap_map")
def fig_clap_map(tower: str = "scratch") -> Figure:
    """PCA of audio embeddings coloured by family, class-name prompt embeddings as crosses."""
    from course_lib.data import FAMILY_OF
    from course_lib.recipes.clap import class_prompts

    emb, _, classes, labels = _clap_test()
    prompts = class_prompts(classes, "heldout")
    with torch.no_grad():
        cls = torch.stack([F.normalize(_clap().embed_text(p, tower).mean(0), dim=-1) for p in prompts])
    both = torch.cat([emb, cls])
    mean = both.mean(0)
    _, _, v = torch.pca_lowrank(both - mean, q=2, center=False, niter=4)
    xy, cxy = ((emb - mean) @ v).numpy(), ((cls - mean) @ v).numpy()
    fig, (ax,) = _fig(8, 4.2)
    fams = sorted(set(FAMILY_OF[c] for c in classes))
    for k, fam in enumerate(fams):
        idx = [i for i, lab in enumerate(labels.tolist()) if FAMILY_OF[classes[lab]] == fam]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=12, color=f"C{k}", label=fam, alpha=0.7)
    ax.scatter(cxy[:, 0], cxy[:, 1], marker="x", color="k", s=25, label="class prompts (text)")
    ax.legend(fontsize="x-small", loc="best")
    ax.set_title("one space for audio (dots) and text (crosses), PCA of the shipped CLAP", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


@sound("clap_search")
def snd_clap_search(query: str = "a loud drum hit", rank: str = "0", tower: str = "scratch") -> tuple[torch.Tensor, int]:
    """The test clip ranked ``rank`` for a text query (one matrix product over the stored embeddings)."""
    emb, wav, _, _ = _clap_test()
    with torch.no_grad():
        order = (_clap().embed_text([query], tower) @ emb.T)[0].argsort(descending=True)
    return wav[int(order[int(rank)]), 0], SR


@number("clap_search_class")
def num_clap_search_class(query: str = "a loud drum hit", rank: str = "0", tower: str = "scratch") -> str:
    emb, _, classes, labels = _clap_test()
    with torch.no_grad():
        order = (_clap().embed_text([query], tower) @ emb.T)[0].argsort(descending=True)
    return classes[int(labels[int(order[int(rank)])])].replace("_", " ")


@number("chance")
def num_chance(classes: str = "34") -> str:
    return f"{100 / int(classes):.1f} %"


@number("wavegan_slice")
def num_wavegan_slice() -> str:
    """Samples (and ms) one forward pass of the shipped WaveGAN generator makes, measured on its output."""
    n = _wavegan_clips("shipped").shape[-1]
    return f"{n:,} samples = {1000 * n / SR:.0f} ms"
