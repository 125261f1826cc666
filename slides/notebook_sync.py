"""Keep the notebooks' Colab plumbing in one place, and build student and solution notebooks.

    python slides/notebook_sync.py                 # write the set-up cell and Colab badge into every notebook
    python slides/notebook_sync.py --check         # exit 1 if a notebook is out of sync (also a test)
    python slides/notebook_sync.py export --out build/notebooks   # student/ and solutions/ versions

``sync`` also rewrites the README's table of shipped checkpoints from their cards (between the
``<!-- checkpoints:begin -->`` and ``<!-- checkpoints:end -->`` markers), so the README never types a score.

The repository URL is defined once, here (``REPO_URL``; a fork changes this line and runs the script).
In Colab, ``COURSE_REPO_URL`` set before the first cell overrides it without editing anything.

Every notebook opens with a Markdown cell whose first line is the "Open in Colab" badge and a code cell
(the set-up cell) that is safe to run again: it clones the repository only when the folder is missing,
installs it editable (``pip`` keeps Colab's preinstalled torch, which satisfies ``torch>=2.4``) and puts it
on ``sys.path`` so that no kernel restart is needed.

Exercises: each exercise's worked solution is a code cell tagged ``solution`` whose source is collapsed in
JupyterLab (``metadata.jupyter.source_hidden``), so a student can reveal it with one click. ``export``
writes ``student/`` (solution cells removed) and ``solutions/`` (solution cells expanded) from the same source.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

REPO_URL = "https://github.com/audio-gen-course/audio-generation-course"   # the one place: change it in a fork
BRANCH = "main"
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOLUTION_TAG = "solution"

SETUP_SOURCE = f'''\
# Set-up (JupyterLab or Colab; safe to run again). Where course_lib is not installed (Colab), this clones the
# course once and installs it, keeping Colab's own torch. A fork sets COURSE_REPO_URL before running it.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("course_lib") is None:
    REPO_URL = os.environ.get("COURSE_REPO_URL", "{REPO_URL}")
    if not os.path.isdir("course"):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "course"], check=True)
    sys.path.insert(0, os.path.abspath("course"))

import torch
from course_lib import get_device, profile, seed_everything, show_setup

seed_everything(0)
device = get_device()
cfg = profile()          # COURSE_PROFILE=smoke|cpu|gpu sizes data, models and training steps
show_setup();'''

_BADGE_RE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\s*$")


def colab_url(notebook: str) -> str:
    """The Colab address of ``notebooks/<notebook>`` on GitHub."""
    slug = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
    return f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def synced(nb: dict, name: str) -> dict:
    """A copy of ``nb`` with the canonical badge (first line of cell 0) and set-up cell (cell 1)."""
    nb = copy.deepcopy(nb)
    first, setup = nb["cells"][0], nb["cells"][1]
    if first["cell_type"] != "markdown" or setup["cell_type"] != "code" or "Set-up" not in _src(setup).split("\n")[0]:
        raise ValueError(f"{name}: expected a Markdown title cell, then the set-up code cell")
    lines = _src(first).split("\n")
    if _BADGE_RE.match(lines[0]):
        lines = lines[1:]
    first["source"] = _lines("\n".join([badge(name)] + lines))
    setup["source"] = _lines(SETUP_SOURCE)
    return nb


def write_notebook(path: Path, nb: dict) -> None:
    """The repository's format: indent 1, UTF-8 kept, trailing newline."""
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- README: checkpoints from their cards
def _jukebox_reference(m: dict) -> str:
    """What the style ruler says of the VQ-VAE's reconstructions of real songs (cards since the reference report)."""
    if "reference" not in m:
        return ""
    r = m["reference"]
    return (f" (the same rulers on {r['songs']} real songs: style {_pct(r['real']['style_accuracy'])}, on their "
            f"bottom-level reconstructions {_pct(r['bottom_reconstruction']['style_accuracy'])})")




README = ROOT / "README.md"
_TABLE_RE = re.compile(r"(<!-- checkpoints:begin -->\n).*?(<!-- checkpoints:end -->)", re.S)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _second_draw(again: dict | None) -> str:
    """A card's evaluation repeated with another seed (other songs, rulers and samples), when it has one."""
    if not again:
        return ""
    gen = again["generated"]
    return (f"; the whole evaluation again with another seed: style {_pct(gen['style_accuracy'])}, key "
            f"{_pct(gen['key_accuracy'])}, median tempo error {_pct(gen['median_relative_tempo_error'])}")


def _scores(card: dict) -> tuple[str, str]:
    """(what the model is, what it scores) for one card, in a student's words; every number from the card."""
    m, arch = card.get("metrics", {}), card.get("architecture", "?")
    if arch == "Codec" and "codec" not in m:                 # judged per set, voices never trained on first
        sets = [(name, r) for name, r in m.items() if isinstance(r, dict) and "codec" in r]
        q = max(sets[0][1]["codec"], key=lambda k: int(k[1:]))
        full = sets[0][1]["codec"][q]
        sources = ", ".join(d["name"].split(" (")[0] for d in card["data"])
        scores = "; ".join(
            f"{name} ({r['scored']} clips): PESQ {r['codec'][q]['pesq_wb']:.2f} (1 quantizer "
            f"{r['codec']['q1']['pesq_wb']:.2f}, unquantized {r['autoencoder']['pesq_wb']:.2f}, Opus 6 kbit/s "
            f"{r['opus']['6kbps']['pesq_wb']:.2f}), mel distance {r['codec'][q]['mel_distance']:.2f} dB (Opus "
            f"{r['opus']['6kbps']['mel_distance']:.2f})" for name, r in sets)
        role = "AudioLM's acoustic tokenizer (an earlier codec-speech): " if card.get("audiolm_note") else ""
        return (f"{role}SoundStream-style codec with a Vocos decoder, {full['bitrate'] / 1000:g} kbit/s at "
                f"{full['num_quantizers']} quantizers, trained on {sources}", scores)
    if arch == "Codec":
        q = max(m["codec"], key=lambda k: int(k[1:]))
        full, opus = m["codec"][q], m["opus"]["6kbps"]
        return (f"SoundStream-style codec, {full['bitrate'] / 1000:g} kbit/s at {full['num_quantizers']} quantizers, "
                f"trained on {card['data'].split(',')[0].split(' (')[0]} (data license: {card['license_of_data']})",
                f"multi-scale mel distance {full['mel_distance']:.2f} dB vs Opus {opus['mel_distance']:.2f} dB at "
                f"{opus['bitrate'] / 1000:.1f} kbit/s on {card['eval']['clips']} test clips; every quantizer uses "
                f"at least {_pct(min(full['usage']))} of its codes")
    if arch == "WaveGAN":
        ruler = ("classifier trained on clean drums" if m.get("ruler") == "classifier"
                 else "classifier trained with added noise")
        d = m.get("decay_p10_db", {})
        decay = (f"; quietest tenth of {d['generated_clips']:,} clips decays {d['generated']:.0f} dB (real "
                 f"{d['real']:.0f} dB)" if "generated_clips" in d else "")
        settings = card.get("settings", {})
        critics = [what for key, what in (
            ("spectral_critic", "SpecGAN's, on 256-point log-spectrograms"),
            ("long_critic", "one on 1,024-point ones, for lower notes"),
            ("body_critic", "one on their lowest 16 bins, for the body of kicks and toms")) if settings.get(key)]
        mode = (", trained on mu-law companded samples" if settings.get("mu_law") else "") + (
            f", with spectrogram critics beside the waveform's ({'; '.join(critics)})" if critics else "") + (
            f", and a learned {settings['post_filter']}-tap post-filter" if settings.get("post_filter") else "")
        return (f"WaveGAN, {card['slice']}, {len(card['classes'])} drum classes{mode}",
                f"{ruler}: inception analogue {_pct(m['inception_ratio'])} of real; {m['classes_generated']} of "
                f"{len(m['class_fractions'])} classes; Fréchet distance {m['frechet']:.1f} (noise bursts "
                f"{m['noise_frechet']:.0f}, real vs real {m['frechet_train_vs_test']:.2f}){decay}; "
                f"classifier scores on {m['eval_clips']} clips")
    if arch == "Clap":
        return ("CLAP: a small audio CNN with a from-scratch and a pretrained (MiniLM) text tower",
                f"zero-shot top-1 {_pct(m['minilm/zero_shot_top1'])} (MiniLM) / {_pct(m['scratch/zero_shot_top1'])} "
                f"(scratch) on {m['clips']:,} test clips, {m['classes']} classes, held-out prompt templates")
    if arch == "HierarchicalVQVAE":
        levels = ("bottom", "middle", "top")
        return ("Jukebox-style hierarchical VQ-VAE, hop lengths " + " / ".join(str(m[k]["hop_length"]) for k in levels),
                "mel distance " + " / ".join(f"{m[k]['mel_distance_db']:.1f}" for k in levels) +
                " dB (bottom / middle / top); codebook usage " + " / ".join(_pct(m[k]["codebook_usage"]) for k in levels))
    if arch == "JukeboxPriors":
        levels, gen = ("top", "middle", "bottom"), m["generated"]
        guided = (f"; top prior sampled with classifier-free guidance {card['guidance']:g}"
                  if card.get("guidance", 1) != 1 else "")
        return (f"Jukebox-style transformer priors (style, key and tempo conditioning{guided})",
                "held-out bits per token " + " / ".join(f"{m[k]['bits_per_token']:.2f}" for k in levels) +
                " (top / middle / bottom; unigram " + " / ".join(f"{m[k]['unigram_bits_per_token']:.2f}" for k in levels) +
                f"); on {gen['songs']} generated songs: style {_pct(gen['style_accuracy'])}, key {_pct(gen['key_accuracy'])}, "
                f"median tempo error {_pct(gen['median_relative_tempo_error'])}" +
                (f" at both ends of each style's tempo range, where a prior deaf to the tempo request errs by "
                 f"{_pct(gen['median_relative_tempo_error_style_only'])}"
                 if "median_relative_tempo_error_style_only" in gen else "") + _jukebox_reference(m) +
                (f"; the style ruler trained on songs as recorded only (not through Opus): generated "
                 f"{_pct(gen['style_accuracy_uncoded_ruler'])}" if "style_accuracy_uncoded_ruler" in gen else "") +
                _second_draw(card.get("second_seed")))
    if arch == "MelVAE":
        return ("AudioLDM's 2-D KL-VAE of mel spectrograms (8 latent channels, 4x smaller in time and frequency)",
                f"through Griffin-Lim, mel distance {m['vae->griffin_lim']['mel_distance_db']:.2f} dB from the VAE vs "
                f"{m['mel->griffin_lim']['mel_distance_db']:.2f} dB from the exact mel; {m['clips']} test clips")
    if arch == "Vocoder":
        voc, gl = m["mel->vocoder"], m["mel->griffin_lim"]
        kind = ("Vocos-style vocoder (STFT frames from ConvNeXt blocks, inverse STFT)"
                if card.get("settings", {}).get("vocoder_preset", "").endswith("istft") else "HiFi-GAN-style vocoder")
        return (f"{kind}, 64 mel bands at 16 kHz (AudioLDM's front end)",
                f"mel distance {voc['mel_distance_db']:.2f} dB vs Griffin-Lim {gl['mel_distance_db']:.2f} dB; speech PESQ "
                f"{voc['speech_pesq_wb']:.2f} vs {gl['speech_pesq_wb']:.2f}; {m['clips']} test clips")
    if arch == "UNet":
        return ("AudioLDM's denoiser: a 2-D UNet over VAE latents, FiLM-conditioned on CLAP audio embeddings",
                f"held-out prompts: {_pct(m['test_accuracy'])} of generated clips in the prompt's class (guidance "
                f"{m['guidance_scale']:g}, condition: {m.get('prior', 'text')}"
                + (f"; the text embedding alone: {_pct(m['test_accuracy_by_prior']['text'])}"
                   if 'test_accuracy_by_prior' in m else "") + f"); Fréchet distance {m['frechet_generated_vs_test']:.0f} (real "
                f"{m['frechet_real_vs_test']:.0f}, noise {m['frechet_noise_vs_test']:.0f})")
    if arch == "HuBERT":
        p = m["probes"]["voices-digits-heldout"]
        return ("HuBERT-style semantic tokenizer (AudioLM's semantic tokens): 25 Hz, "
                f"{m['tokens']['voices-unseen']['clusters']} clusters",
                f"linear probes on held-out voices' digits: content {_pct(p['semantic']['content_accuracy'])}, speaker "
                f"{_pct(p['semantic']['speaker_accuracy'])} (MFCC k-means {_pct(p['mfcc_kmeans_baseline']['content_accuracy'])}"
                f" / {_pct(p['mfcc_kmeans_baseline']['speaker_accuracy'])}; chance {_pct(p['chance']['content'])} / "
                f"{_pct(p['chance']['speaker'])})")
    if arch in ("SemanticStage", "CoarseStage", "FineStage"):
        u, stage = m["voices-unseen"], arch[: -len("Stage")].lower()
        scores = (f"held-out bits per token {u['bits_per_token']:.2f} (unigram {u['unigram_bits_per_token']:.2f}, "
                  f"uniform {u['uniform_bits_per_token']:.2f}) on unseen voices")
        if "speaker_test" in m:
            t, h = m["speaker_test"]["unseen"], m["intelligibility"]
            codec = t.get("real_continuation_through_codec")
            ceiling = "" if codec is None else f", the real rest through the codec {_pct(codec)}"
            s = m["speaker_test"].get("seen")
            seen = "" if s is None else f"; seen voices {_pct(s['with_acoustic_prompt'])} / " \
                                        f"{_pct(s['without_acoustic_prompt'])}"
            scores += (f"; the pipeline's speaker test on unseen voices: {_pct(t['with_acoustic_prompt'])} with the "
                       f"acoustic prompt, {_pct(t['without_acoustic_prompt'])} without (chance {_pct(t['chance'])}"
                       f"{ceiling}{seen}, {t['prompts']} prompts each); digits resynthesised in another voice "
                       f"recognised {_pct(h['resynthesized'])} (codec {_pct(h['codec'])}, chance {_pct(h['chance'])})")
        return f"AudioLM's {stage} stage (a decoder-only transformer)", scores
    return arch, ", ".join(f"{k} {v}" for k, v in m.items() if isinstance(v, (int, float)))   # a family added later


def _command(card: dict) -> str:
    """The command that reproduces a card's run (a run exported with ``--export-only`` names its training command)."""
    return card.get("training_command") or card.get("command", "")


def checkpoint_table() -> str:
    """The README's table of shipped checkpoints, built from ``assets/checkpoints/*/card.json``."""
    from course_lib.checkpoint import train_seconds
    rows = ["| name | what it is | what it scores (its card) | reproduce |", "|---|---|---|---|"]
    for card_path in sorted((ROOT / "assets" / "checkpoints").glob("*/card.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        what, scores = _scores(card)
        minutes = train_seconds(card, earlier=False) / 60
        steps = f"{card['steps']:,} steps, " if isinstance(card.get("steps"), int) else ""
        before = card.get("runs_before", [])                     # a fine-tuned checkpoint's earlier runs
        total = train_seconds(card) / 60
        history = (f"; it starts from {len(before)} earlier run{'s' if len(before) > 1 else ''} listed on its card, "
                   f"{total:.0f} min in all" if before else "")
        rows.append(f"| `{card_path.parent.name}` | {what} | {scores} | `{_command(card)}` "
                    f"({steps}{minutes:.0f} min on {card.get('device', 'CPU').upper()}{history}) |")
    return "\n".join(rows) + "\n"


def readme_synced(text: str) -> str:
    if not _TABLE_RE.search(text):
        raise ValueError("README.md has no <!-- checkpoints:begin --> ... <!-- checkpoints:end --> block")
    return _TABLE_RE.sub(lambda m: m.group(1) + checkpoint_table() + m.group(2), text)


def out_of_sync(paths: list[Path]) -> list[str]:
    bad = []
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        if synced(nb, path.name) != nb:
            bad.append(path.name)
    return bad


def student_and_solution(nb: dict) -> tuple[dict, dict]:
    """Two versions from one source: without solution cells, and with them expanded."""
    student, solution = copy.deepcopy(nb), copy.deepcopy(nb)
    student["cells"] = [c for c in student["cells"] if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in solution["cells"]:
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            cell["metadata"].pop("jupyter", None)
    return student, solution


def export(out: Path, paths: list[Path]) -> None:
    for sub in ("student", "solutions"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        student, solution = student_and_solution(nb)
        write_notebook(out / "student" / path.name, student)
        write_notebook(out / "solutions" / path.name, solution)
    print(f"{len(paths)} notebooks -> {out / 'student'} and {out / 'solutions'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("args", nargs="*", metavar="[sync|export] NOTEBOOK",
                    help="the command (default sync), then notebook files (default: notebooks/*.ipynb)")
    ap.add_argument("--check", action="store_true", help="only report notebooks that are out of sync")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks")
    args = ap.parse_args(argv)
    command = args.args.pop(0) if args.args and args.args[0] in ("sync", "export") else "sync"
    paths = [Path(p) for p in args.args] or sorted(NOTEBOOKS.glob("*.ipynb"))
    if command == "export":
        export(args.out, paths)
        return 0
    if args.check:
        bad = out_of_sync(paths)
        if readme_synced(README.read_text(encoding="utf-8")) != README.read_text(encoding="utf-8"):
            bad.append("README.md")
        print("out of sync: " + ", ".join(bad) if bad else "all notebooks in sync")
        return 1 if bad else 0
    for path in paths:
        nb = json.loads(path.read_text(encoding="utf-8"))
        new = synced(nb, path.name)
        if new != nb:
            write_notebook(path, new)
            print("synced", path.name)
    if not args.args:
        text = README.read_text(encoding="utf-8")
        if readme_synced(text) != text:
            README.write_text(readme_synced(text), encoding="utf-8")
            print("synced README.md (checkpoint table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
