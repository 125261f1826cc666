"""The slide build: parsing, generated media, missing references, offline HTML, EN/DE parity."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SLIDES = ROOT / "slides"
sys.path.insert(0, str(SLIDES))

import build as slide_build  # noqa: E402  (slides/build.py)
from build import BuildError, parse_deck  # noqa: E402


def _deck(tmp_path: Path, text: str, name: str = "t.md") -> Path:
    decks = tmp_path / "decks"
    decks.mkdir(exist_ok=True)
    (decks / name).write_text(text, encoding="utf-8")
    return decks


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every real deck, built once into a temporary folder."""
    return slide_build.build(None, tmp_path_factory.mktemp("slides"))


# ----------------------------------------------------------------------------- parsing

def test_parse_splits_slides_notes_and_meta(tmp_path):
    decks = _deck(tmp_path, "% title: T\n% lang: de\n\n# One\ntext\nNote: say this\nand this\n---\n## Two\n\n---\n")
    deck = parse_deck(decks / "t.md")
    assert deck.title == "T" and deck.lang == "de"
    assert [s.index for s in deck.slides] == [1, 2]
    assert deck.slides[0].body == "# One\ntext"
    assert deck.slides[0].notes == "say this\nand this"
    assert deck.slides[1].notes == ""


def test_deck_without_title_fails(tmp_path):
    decks = _deck(tmp_path, "# no meta\n")
    with pytest.raises(BuildError, match="title"):
        parse_deck(decks / "t.md")


# ----------------------------------------------------------------------------- bad references

@pytest.mark.parametrize("ref, named", [
    ("![x](fig:no_such_figure)", "no_such_figure"),
    ("![x](sound:no_such_sound?a=1)", "no_such_sound"),
    ("{{num:no_such_number}}", "no_such_number"),
    ("![x](file:missing/picture.png)", "missing/picture.png"),
    ("![x](https://example.org/a.png)", "https://example.org/a.png"),
])
def test_missing_figure_or_sound_fails_naming_it(tmp_path, ref, named):
    decks = _deck(tmp_path, f"% title: T\n\n# ok\n![s](sound:clip?family=drums)\nNote: n\n---\n## bad\n{ref}\nNote: n\n")
    out = tmp_path / "out"
    with pytest.raises(BuildError) as err:
        slide_build.build(None, out, decks)
    msg = str(err.value)
    assert named in msg and "t.md, slide 2" in msg
    assert not list(out.glob("*.html")), "a failed build must not leave a deck page behind"


def test_generator_with_wrong_argument_fails_naming_it(tmp_path):
    decks = _deck(tmp_path, "% title: T\n\n![x](fig:quantization?bitz=3)\nNote: n\n")
    with pytest.raises(BuildError, match="quantization"):
        slide_build.build(None, tmp_path / "out", decks)


def test_builds_sharing_a_cache_take_turns(tmp_path):
    import fcntl
    import threading
    decks, cache = _deck(tmp_path, "% title: T\n\n# One\ntext\nNote: n\n"), tmp_path / "cache"
    second = threading.Thread(target=slide_build.build, args=(None, tmp_path / "out", decks, cache))
    with slide_build._cache_lock(cache):
        with open(cache / ".lock") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive(), "a build went ahead while another held the cache"
        assert not (tmp_path / "out" / "t.html").exists()
    second.join(timeout=60)
    assert not second.is_alive() and (tmp_path / "out" / "t.html").is_file()   # it ran once the first was done
    with slide_build._cache_lock(None):                        # no cache, nothing to share
        pass


def test_cli_exit_code_and_message(tmp_path, capsys):
    decks = _deck(tmp_path, "% title: T\n\n![x](fig:nope)\nNote: n\n")
    assert slide_build.main(["--out", str(tmp_path / "out"), "--decks-dir", str(decks)]) == 1
    assert "nope" in capsys.readouterr().err


def test_generator_outputs_are_reused_only_while_their_inputs_hold(tmp_path, monkeypatch):
    decks = _deck(tmp_path, "% title: T\n\n![q](fig:quantization?bits=3) {{num:snr_bits?bits=8}}\nNote: n\n")
    cache = tmp_path / "cache"
    first = slide_build.build(None, tmp_path / "a", decks, cache_dir=cache)
    assert len(first.timings) == 2, "a cold cache runs every generator"
    again = slide_build.build(None, tmp_path / "b", decks, cache_dir=cache)
    assert again.timings == {}, "unchanged inputs: nothing runs again"
    assert (tmp_path / "a" / "t.html").read_bytes() == (tmp_path / "b" / "t.html").read_bytes()
    assert sorted(p.name for p in (tmp_path / "b" / "media").iterdir()) == \
        sorted(p.name for p in (tmp_path / "a" / "media").iterdir())
    monkeypatch.setenv("COURSE_PROFILE", "gpu" if slide_build.os.environ.get("COURSE_PROFILE") != "gpu" else "cpu")
    changed = slide_build.build(None, tmp_path / "c", decks, cache_dir=cache)
    assert len(changed.timings) == 2, "a changed input (here the profile) runs the generators again"
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1, "outputs of stale inputs are removed"


def test_static_file_beside_deck_is_copied(tmp_path):
    decks = _deck(tmp_path, "% title: T\n\n![a tone](file:tone.wav)\nNote: n\n")
    sf.write(decks / "tone.wav", np.zeros(1600, dtype=np.float32), 16000)
    result = slide_build.build(None, tmp_path / "out", decks)
    media = result.decks[0].slides[0].sounds
    assert len(media) == 1 and (tmp_path / "out" / media[0]).is_file()


@pytest.mark.parametrize("ref", ["../secret.png", "../../etc/hostname", "{outside}", "..%2Fsecret.png",
                                 "linked.png"])
def test_file_reference_outside_allowed_folders_is_refused_before_copying(tmp_path, ref):
    (tmp_path / "secret.png").write_bytes(b"not for the slides")
    decks = _deck(tmp_path, "")
    (decks / "linked.png").symlink_to(tmp_path / "secret.png")      # a symlink beside the deck, pointing out
    ref = ref.format(outside=tmp_path / "secret.png")               # an absolute path
    (decks / "t.md").write_text(f"% title: T\n\n![x](file:{ref})\nNote: n\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(BuildError) as err:
        slide_build.build(None, out, decks)
    msg = str(err.value)
    assert "t.md, slide 1" in msg and repr(ref) in msg and "outside the folders a deck may take files from" in msg
    assert not list((out / "media").iterdir()), "nothing may be copied before the reference is checked"


def test_file_with_wrong_suffix_is_refused_before_copying(tmp_path):
    decks = _deck(tmp_path, "% title: T\n\n![x](file:notes.txt)\nNote: n\n")
    (decks / "notes.txt").write_text("hello")
    with pytest.raises(BuildError, match="neither an image nor a sound"):
        slide_build.build(None, tmp_path / "out", decks)
    assert not list((tmp_path / "out" / "media").iterdir())


def test_file_from_an_allowed_assets_folder_is_copied(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    assets.mkdir()
    sf.write(assets / "tone.wav", np.zeros(1600, dtype=np.float32), 16000)
    monkeypatch.setattr(slide_build, "MEDIA_ROOTS", (assets,))
    decks = _deck(tmp_path, "% title: T\n\n![a tone](file:../assets/tone.wav)\nNote: n\n")
    result = slide_build.build(None, tmp_path / "out", decks)
    assert (tmp_path / "out" / result.decks[0].slides[0].sounds[0]).is_file()


# ----------------------------------------------------------------------------- the real decks

def test_every_slide_has_media_or_number_and_notes(built):
    names = {d.name for d in built.decks}
    assert {"overview.en", "overview.de", "00_audio_as_data", "01_1d_convolutions"} <= names
    for deck in built.decks:
        for s in deck.slides:
            assert s.figures or s.sounds or s.numbers, f"{deck.name} slide {s.index} has no figure, sound or number"
            assert len(s.notes) > 20, f"{deck.name} slide {s.index} has no speaker notes"


def test_overview_exists_in_english_and_german_with_the_same_content(built):
    by_name = {d.name: d for d in built.decks}
    en, de = by_name["overview.en"], by_name["overview.de"]
    assert en.lang == "en" and de.lang == "de"
    assert len(en.slides) == len(de.slides)
    for a, b in zip(en.slides, de.slides):
        assert a.sounds == b.sounds, f"slide {a.index}: different sounds in EN and DE"
        assert a.numbers == b.numbers, f"slide {a.index}: numbers differ"
        assert len(a.figures) == len(b.figures), f"slide {a.index}"
    text = de.path.read_text(encoding="utf-8")
    for term in ("zeitliche Abhängigkeit", "hierarchische Struktur", "Datenmenge", "Wahrnehmungsempfindlichkeit",
                 "Geisterartefakte", "Echtzeit", "Feinsteuerung"):
        assert term in text
    for term in ("WaveGAN", "Jukebox", "AudioLM", "AudioLDM", "CLAP", "SoundStream"):
        assert term in en.path.read_text(encoding="utf-8")


def test_html_is_offline_and_every_local_reference_exists(built):
    for page in built.html_files:
        html = page.read_text(encoding="utf-8")
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs
        remote = [r for r in refs if re.match(r"^(https?:)?//", r)]
        assert not remote, f"{page.name} needs the network: {remote}"
        for r in refs:
            if r.startswith(("data:", "#")):
                continue
            assert (page.parent / r).is_file(), f"{page.name} references {r}, which was not written"
        assert html.count("<section") == len(next(d for d in built.decks if d.name == page.stem).slides)
        assert "<figure" in html and '<aside class="notes">' in html
    assert (built.out / "index.html").is_file()
    assert (built.out / "reveal" / "dist" / "reveal.js").stat().st_size > 50_000


def test_notebook_decks_name_their_notebook(built):
    for deck in built.decks:
        m = re.match(r"(\d\d)_", deck.name)
        if m:
            assert re.fullmatch(rf"notebooks/{m.group(1)}_\w+\.ipynb", deck.meta.get("notebook", "")), deck.name


# ----------------------------------------------------------------------------- the numbers are true

def test_bit_depth_snr_agrees_with_an_independent_computation():
    import generators as gen

    x = gen.clip("music", 0).double().numpy()
    for bits in (4, 8, 12):
        step = 2.0 / 2 ** bits                                   # numpy mid-rise quantizer, written out here
        q = np.clip((np.floor(x / step) + 0.5) * step, -1 + step / 2, 1 - step / 2)
        ref = 10 * np.log10((x ** 2).sum() / ((q - x) ** 2).sum())
        assert gen.num_snr_bits(str(bits)) == f"{ref:.1f} dB"
    s8, s16 = (float(gen.num_snr_bits(b).split()[0]) for b in ("8", "16"))
    assert 5.0 < (s16 - s8) / 8 < 7.0, "about 6 dB per bit"


def test_receptive_field_matches_the_formula():
    import generators as gen

    for layers, k in [(1, 3), (4, 3), (10, 2)]:
        assert gen.receptive_field(layers, k, dilated=False) == 1 + layers * (k - 1)
        assert gen.receptive_field(layers, k, dilated=True) == 1 + (k - 1) * (2 ** layers - 1)


def test_click_sound_differs_in_one_sample_and_chance_loss_is_ln_b(built):
    import generators as gen

    clean, bad = gen.snd_clip("notes")[0], gen.snd_click("notes")[0]
    assert int((clean != bad).sum()) == 1
    assert gen.num_chance_loss("64") == f"{np.log(64):.2f}"
    wavs = sorted((built.out / "media").glob("sound-*.wav"))
    assert len(wavs) >= 8
    for w in wavs:
        data, sr = sf.read(io.BytesIO(w.read_bytes()))
        assert sr == 16000 and 0.2 < len(data) / sr < 30 and np.abs(data).max() > 0.01, w.name
