"""Teaching lint: every claim measured, every number sourced.

The course promises that a claim in a notebook is backed by a number the notebook computes, checked by an
assertion that could fail. This file keeps that promise mechanically where it can:

* **Assertions that cannot fail**: an ``assert`` that compares an expression with itself, or two expressions
  computed only from literals and names bound to literals (``assert pcm_bps == 256_000`` after
  ``pcm_bps = SR * 16``), or that only reads a checkpoint card (``assert card["metrics"][...] >= 0.9``).
* **Numbers typed into prose**: a number in a Markdown cell (or in a slide deck) must be a setting that the
  notebook's code also uses (possibly in other units: Hz/kHz, s/ms, a fraction as a percentage), a small
  count (0-10), a year, a section/notebook/exercise number, a fact cited from a paper (``CITED`` below,
  per file), or be rendered by code (``{{num:...}}`` in decks; ``IPython.display.Markdown`` in notebooks).
  Measured results (``1600x``, ``9.6 dB``, ``98 %``) typed into prose go stale and are flagged.

The synthetic notebooks at the bottom prove that the lint fails on each of these patterns.
"""
from __future__ import annotations

import ast
import io
import json
import re
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "slides"))
import notebook_sync  # noqa: E402

# Notebooks and decks this lint covers. 04 joins when its teaching pass is done.
LINTED_NOTEBOOKS = ["00_audio_as_data", "01_1d_convolutions", "02_wavegan", "03_neural_codec", "04_jukebox",
                    "05_audiolm", "06_clap", "07_audioldm", "08_evaluation_and_future"]
LINTED_DECKS = ["00_audio_as_data", "01_1d_convolutions", "02_wavegan", "03_neural_codec", "04_jukebox", "05_audiolm",
                "06_clap", "07_audioldm", "08_evaluation_and_future",
                "overview.en", "overview.de"]

# Cited facts: figures from papers, standards and well-known systems, quoted in the prose. Keys are file stems;
# "*" applies everywhere. A measured result never belongs here: render it from code instead.
CITED: dict[str, set[float]] = {
    # 6.02 dB per bit; 16-bit PCM; 62.5 µs between samples at 16 kHz; AudioLM: 12 quantizers, semantic tokens at
    # 25 Hz; WaveGAN's kernel 25; powers of two as sizes (32 ... 4096 samples, codes, widths); 16 kHz.
    "*": {6.02, 16, 12, 25, 62.5, 32, 64, 100, 128, 256, 1024, 4096, 16000},
    # WaveGAN (Donahue et al. 2019): one second = 16,384 samples; the paper's 512-tap post-processing filter;
    # exercise 6 adds noise 20 dB below the clip.
    "02_wavegan": {16384, 512, 20},
    # Receptive field of ten kernel-3 layers: 21 samples = 1.3 ms; STFT bin width 15.6 Hz at n_fft 1024;
    # 7,000 vs 7,100 Hz as an example of a hard-to-hear difference.
    "01_1d_convolutions": {1.3, 15.6, 7000, 7100},
    # SoundStream's hop: strides 2 x 4 x 5 x 8 = 320 samples per frame.
    "03_neural_codec": {320},
    # LAION-CLAP (Wu et al. 2023): ~2.6 M training pairs, HTSAT-tiny ~28 M and RoBERTa-base ~125 M parameters,
    # D = 512, a checkpoint of about 600 MB.
    "06_clap": {2.6, 28, 125, 512, 600},
    # The 440 Hz test tone (concert pitch A4) of the quantization figure.
    "00_audio_as_data": {440},
    # A 10 s song at 44.1 kHz: sample 441,000; one sample every 23 µs.
    "overview.en": {23, 441000},
    "overview.de": {23, 441000},
    # The WaveGAN critic's LeakyReLU slope 0.2 (paper).
    "02_wavegan.deck": {0.2},
    # Jukebox (Dhariwal et al. 2020): songs at 44.1 kHz, a top prior context of 8,192 tokens, about 3 hours to
    # sample 20 s (section 6); the course's top level at 16 kHz / hop 128 = 125 tokens per second.
    "04_jukebox": {44.1, 8192, 20, 125},
    # AudioLM (Borsos et al. 2023): Table III's 92.6 % and 3.2 %; codec frames every 20 ms (50 Hz), semantic tokens
    # every 40 ms; w2v-BERT's 600 M parameters; HuBERT (Hsu et al. 2021): 13 MFCCs, spans of l = 10 frames.
    "05_audiolm": {92.6, 3.2, 20, 40, 50, 600, 13},
    # AudioLDM (Liu et al. 2023): hop 160 at 16 kHz, betas 0.0015 -> 0.0195 over T = 1,000 steps; section 3.3;
    # it samples with 200 DDIM steps (haoheliu/AudioLDM, text_to_audio's ddim_steps default).
    "07_audioldm": {160, 0.0015, 0.0195, 1000, 3.3, 200},
    # MUSHRA (ITU-R BS.1534-3): the low anchor is the reference low-passed at 3.5 kHz, scores run 0..100;
    # SoundStream's frames every 20 ms (50 Hz); AudioLDM's 50 DDIM steps of the deck's measurement.
    "08_evaluation_and_future": {3.5, 100, 20, 50},
    # The README: Python 3.11, torch 2.14.1 with torchaudio 2.11.0 (the 2.13.0+cpu wheel breaks torchaudio); the
    # design's 15-minute CI budget; Jukebox's hop lengths 8, 32, 128; licenses CC BY(-SA) 4.0; FSDD's DOI prefix
    # 10.5281 and the arXiv identifiers of Jukebox (2005.00341), AudioLM (2209.03143), guidance (2207.12598) and
    # Vocos (2306.00814).
    "README": {3.11, 2.14, 2.11, 2.13, 15, 32, 128, 4.0, 10.5281, 2005.00341, 2209.03143, 2207.12598, 2306.00814},
}


_CONTEXT = re.compile(r"(notebooks?|section|sections|exercises?|Algorithm|table|eq\.|equation|RFC|G\.|appendix|"
                      r"Notebook|Abschnitt|Aufgabe|chapter|step|steps|Schritt|ICLR|NeurIPS|ICML|ICASSP|TASLP|"
                      r"version|v|fig\.|Figure|no\.)\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.\-/])(\d{1,3}(?:[ ,\u2009\u202f]\d{3})+|\d+)(?:\.(\d+))?(?![\w](?<!x))")
_STRIP = [re.compile(p, re.S) for p in (
    r"```.*?```", r"`[^`\n]*`", r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"\{\{\s*num:[^}]*\}\}", r"\]\([^)]*\)",
    r"<[^>]+>", r"https?://\S+", r"(?m)^[ \t]*%[^\n]*$")]
_HEADING = re.compile(r"^(#+\s*)\d+(?:\.\d+)*", re.M)


# ----------------------------------------------------------------------------- assertions that cannot fail

_PURE = {"math", "int", "float", "round", "abs", "min", "max", "len", "sum", "all", "any", "True", "False", "None"}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_const(node: ast.AST, consts: set[str]) -> bool:
    """True when ``node`` is computed from literals and constant names only (no data, no model)."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id not in consts | _PURE:
            return False
        if isinstance(n, ast.Subscript):
            return False
        if isinstance(n, ast.Attribute) and not (isinstance(n.value, ast.Name) and n.value.id == "math"):
            return False
    return True


def _reads_card(node: ast.AST, cards: set[str]) -> bool:
    return any((isinstance(n, ast.Name) and n.id in cards) or
               (isinstance(n, ast.Call) and "read_card" in ast.unparse(n.func)) for n in ast.walk(node))


def lint_assertions(code_cells: list[str]) -> list[str]:
    """Problems with the ``assert`` statements of a notebook's code cells, in order."""
    consts: set[str] = set()
    cards: set[str] = set()                                      # names holding a checkpoint card or a value read from one
    problems = []
    for i, src in enumerate(code_cells):
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue                                             # IPython magics etc.: nothing to lint
        for node in ast.walk(tree):
            mutated = set()                                      # x.append(...), x += ..., x[i] = ..., for x in ...
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                mutated = _names(node.func.value)
            elif isinstance(node, (ast.AugAssign, ast.For)):
                mutated = _names(node.target)
            consts -= mutated
            if not isinstance(node, ast.Assign):
                continue
            targets = set().union(*(_names(t) for t in node.targets))
            consts = consts | targets if _is_const(node.value, consts) else consts - targets
            value_names = _names(node.value) - _PURE
            if _reads_card(node.value, cards) and value_names <= cards | {"read_card", "checkpoint"}:
                cards |= targets
            else:
                cards -= targets
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assert):
                continue
            line = ast.unparse(node.test)
            for cmp in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
                sides = [cmp.left, *cmp.comparators]
                dumps = [ast.dump(s) for s in sides]
                if len(set(dumps)) < len(dumps):
                    problems.append(f"code cell {i}: compares a value with itself: assert {line}")
                    break
                if all(_is_const(s, consts) for s in sides):
                    problems.append(f"code cell {i}: compares constants, cannot fail: assert {line}")
                    break
            names = _names(node.test) - _PURE
            if names and names <= cards:
                problems.append(f"code cell {i}: only reads a card, recompute it: assert {line}")
    return problems


# ----------------------------------------------------------------------------- numbers in prose

def _literals(code_cells: list[str]) -> set[float]:
    """Numeric literals of the code (not of its comments or strings): the settings prose may repeat."""
    values: set[float] = set()
    for src in code_cells:
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
        except (tokenize.TokenError, IndentationError, SyntaxError):
            tokens = []
        for tok in tokens:
            if tok.type == tokenize.NUMBER:
                try:
                    values.add(float(tok.string.replace("_", "").rstrip("jJ")))
                except ValueError:
                    pass
    return values


def _parameters(refs: str) -> set[float]:
    """Parameters of a deck's generator references (``{{num:samples?seconds=10&sample_rate=44100}}``)."""
    return {float(v) for v in re.findall(r"[?&]\w+=(\d+(?:\.\d+)?)\b", refs)}


def _units(values: set[float]) -> set[float]:
    return {round(v, 6) for v in values}


# A setting may appear in prose in other units than in code: "16 kHz" for 16000, "100 ms" for 0.1, "90 %" for 0.9.
_UNIT_FACTORS = [(re.compile(r"\s?kHz"), 1000), (re.compile(r"\s?kbit|\s?kbps"), 1000), (re.compile(r"\s?ms\b"), 0.001),
                 (re.compile(r"\s?%"), 0.01), (re.compile(r"\s?µs"), 1e-6)]


def numbers_in_prose(text: str, lang: str = "en") -> list[tuple[str, float, str]]:
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    text = _HEADING.sub(r"\1", text)
    if lang == "de":                                           # 16.000 is sixteen thousand, 4,16 is 4.16
        text = re.sub(r"(?<=\d)[.,](?=\d)", lambda m: "," if m.group() == "." else ".", text)
    text = re.sub(r"^\s*\d+\.\s", " ", text, flags=re.M)        # numbered list items
    found = []
    for m in _NUMBER.finditer(text):
        if _CONTEXT.search(text[max(0, m.start() - 24):m.start()]):
            continue
        whole, frac = m.group(1), m.group(2)
        digits = re.sub(r"[ ,\u2009\u202f.]", "", whole)
        try:
            value = float(f"{digits}.{frac}" if frac else digits)
        except ValueError:
            continue
        raw = m.group(0)
        if lang == "de":
            raw = re.sub(r"[.,]", lambda c: "," if c.group() == "." else ".", raw)
        found.append((raw, value, text[m.end():m.end() + 6]))
    return found


def lint_prose(text: str, allowed: set[float], lang: str = "en") -> list[str]:
    bad = []
    for raw, value, after in numbers_in_prose(text, lang):
        if value <= 10 and value == int(value):
            continue                                           # small counts: "two towers", "4 ms", "3 kHz"
        if 1900 <= value <= 2030 and value == int(value):
            continue                                           # years of citations
        if round(value, 6) in allowed:
            continue
        if any(unit.match(after) and round(value * f, 6) in allowed for unit, f in _UNIT_FACTORS):
            continue
        bad.append(raw.strip())
    return bad


def lint_notebook(nb: dict, stem: str) -> list[str]:
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    problems = lint_assertions(code)
    allowed = _units(_literals(code)) | _units(CITED["*"] | CITED.get(stem, set()))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            bad = lint_prose("".join(cell["source"]), allowed)
            if bad:
                problems.append(f"markdown cell {i}: numbers typed into prose {bad}; compute them, "
                                f"render them from code, or cite them (CITED in tests/test_teaching_lint.py)")
    return problems


def lint_deck(text: str, stem: str) -> list[str]:
    lang = "de" if re.search(r"^% lang: de", text, re.M) else "en"
    refs = " ".join(re.findall(r"\{\{\s*num:[^}]*\}\}|\]\([^)]*\)", text))
    allowed = _units(_parameters(refs)) | _units(CITED["*"] | CITED.get(stem, set()) | CITED.get(f"{stem}.deck", set()))
    problems = []
    for k, slide in enumerate(re.split(r"^---\s*$", text, flags=re.M), start=1):
        bad = lint_prose(slide, allowed, lang)
        if bad:
            problems.append(f"slide {k}: numbers typed into the deck {bad}; use {{{{num:...}}}} or cite them")
    return problems


# ----------------------------------------------------------------------------- the course's files

@pytest.mark.parametrize("stem", LINTED_NOTEBOOKS)
def test_notebook_claims_are_measured(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    problems = lint_notebook(nb, stem)
    assert not problems, f"{stem}:\n" + "\n".join(problems)


@pytest.mark.parametrize("stem", LINTED_DECKS)
def test_deck_numbers_are_computed_or_cited(stem):
    problems = lint_deck((ROOT / "slides" / "decks" / f"{stem}.md").read_text(encoding="utf-8"), stem)
    assert not problems, f"{stem}:\n" + "\n".join(problems)


@pytest.mark.parametrize("stem", LINTED_NOTEBOOKS)
def test_notebook_has_colab_badge_and_rerunnable_setup(stem):
    """The set-up cell and badge come from slides/notebook_sync.py (the repository URL lives there only)."""
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    assert notebook_sync.out_of_sync([path]) == [], f"run: python slides/notebook_sync.py {path.relative_to(ROOT)}"
    nb = json.loads(path.read_text(encoding="utf-8"))
    setup = "".join(nb["cells"][1]["source"])
    assert 'os.path.isdir("course")' in setup, "the set-up cell must not clone twice"
    assert notebook_sync.REPO_URL in setup and notebook_sync.colab_url(path.name) in "".join(nb["cells"][0]["source"])


@pytest.mark.parametrize("stem", LINTED_NOTEBOOKS)
def test_student_text_has_no_developer_voice(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        text = "".join(cell["source"])
        if cell["cell_type"] == "code":                        # comments and printed strings are student text too
            text = "\n".join(re.findall(r"#.*|\"[^\"\n]*\"|'[^'\n]*'", text))
        hits = re.findall(r"\b(?:the issue|this issue|issue #?\d+|sessions?)\b", text, re.IGNORECASE)
        assert not hits, f"{stem} cell {i}: developer voice {hits}"


def lint_solutions(nb: dict) -> list[str]:
    """A solution cell ("# Solution N") carries the tag that keeps it out of the student export and starts
    collapsed in JupyterLab; a tagged cell is a solution."""
    problems = []
    for cell in nb["cells"]:
        meta, text = cell.get("metadata", {}), "".join(cell["source"])
        tagged = notebook_sync.SOLUTION_TAG in meta.get("tags", [])
        if cell["cell_type"] == "code" and text.startswith("# Solution") and not tagged:
            problems.append(f"cell {cell['id']}: a solution without the {notebook_sync.SOLUTION_TAG!r} tag")
        if tagged and meta.get("jupyter", {}).get("source_hidden") is not True:
            problems.append(f"cell {cell['id']}: a solution that does not start collapsed")
        if tagged and not text.startswith("# Solution"):
            problems.append(f"cell {cell['id']}: tagged as a solution but does not start with '# Solution'")
    return problems


@pytest.mark.parametrize("stem", LINTED_NOTEBOOKS)
def test_solutions_are_tagged_and_collapsed(stem):
    nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    problems = lint_solutions(nb)
    assert not problems, f"{stem}:\n" + "\n".join(problems)


def lint_readme(text: str) -> list[str]:
    """Numbers in the README's prose outside the generated checkpoint table (which comes from the cards)."""
    prose = notebook_sync._TABLE_RE.sub("", text)
    return lint_prose(prose, _units(CITED["*"] | CITED["README"]))


def test_readme_prose_numbers_are_cited():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert lint_readme(text) == [], "numbers typed into the README: read them from a card, or cite them in CITED"
    assert lint_readme(text + "\nThe codec scores 2.43 dB.\n") == ["2.43"]       # a typed result is caught


def test_readme_checkpoint_table_comes_from_the_cards():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert notebook_sync.readme_synced(text) == text, "run: python slides/notebook_sync.py (README checkpoint table)"


def test_readme_and_overview_decks_give_full_references():
    for path in (ROOT / "README.md", ROOT / "slides" / "decks" / "overview.en.md", ROOT / "slides" / "decks" / "overview.de.md"):
        text = path.read_text(encoding="utf-8")
        for ref in ("Donahue, J. McAuley, M. Puckette", "Dhariwal, H. Jun, C. Payne", "Borsos, R. Marinier",
                    "H. Liu, Z. Chen, Y. Yuan", "Y. Wu, K. Chen", "B. Elizalde", "N. Zeghidour, A. Luebs",
                    "W.-N. Hsu", "J. Kong, J. Kim, J. Bae", "J. Ho, A. Jain, P. Abbeel", "J. Song, C. Meng, S. Ermon",
                    "J. Ho, T. Salimans", "A. van den Oord, O. Vinyals, K. Kavukcuoglu"):
            assert ref in text, f"{path.name} lacks the reference {ref}"


def test_export_builds_student_and_solution_versions(tmp_path):
    nb = _nb(["# Ex\n1. Do it."], ["x = 1"], solution="x = 2")
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    notebook_sync.export(tmp_path / "out", [path])
    student = json.loads((tmp_path / "out" / "student" / "nb.ipynb").read_text())
    solution = json.loads((tmp_path / "out" / "solutions" / "nb.ipynb").read_text())
    assert all("x = 2" not in "".join(c["source"]) for c in student["cells"])
    sol = [c for c in solution["cells"] if "solution" in c["metadata"].get("tags", [])]
    assert sol and "jupyter" not in sol[0]["metadata"]


# ----------------------------------------------------------------------------- the lint fails on each pattern

def _nb(markdown: list[str], code: list[str], solution: str | None = None) -> dict:
    cells = [{"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": s} for i, s in enumerate(markdown)]
    cells += [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": s, "outputs": [],
               "execution_count": None} for i, s in enumerate(code)]
    if solution:
        cells.append({"cell_type": "code", "id": "sol", "source": solution, "outputs": [], "execution_count": None,
                      "metadata": {"tags": ["solution"], "jupyter": {"source_hidden": True}}})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_lint_flags_untagged_uncollapsed_and_mislabelled_solutions():
    assert lint_solutions(_nb([], ["x = 1"], solution="# Solution 1\nx = 2")) == []
    untagged = _nb([], ["# Solution 1\nx = 2"])
    uncollapsed = _nb([], [], solution="# Solution 1\nx = 2")
    uncollapsed["cells"][-1]["metadata"].pop("jupyter")
    mislabelled = _nb([], [], solution="x = 2")
    for nb, why in ((untagged, "without"), (uncollapsed, "collapsed"), (mislabelled, "does not start")):
        assert any(why in p for p in lint_solutions(nb)), (why, lint_solutions(nb))


@pytest.mark.parametrize("code", [
    # NB00 c43: a ratio of constants, compared with its own formula and a literal
    "SR = 16000\nseconds = 10\nn_samples, n_tokens = seconds * SR, seconds * 400\n"
    "ratio = (n_samples / n_tokens) ** 2\nassert ratio == (n_samples / n_tokens) ** 2 == 1600",
    # NB00 c43 / NB03 c5: a product of constants compared with the literal it must equal
    "SR = 16_000\npcm_bps = SR * 16\nassert pcm_bps == 256_000",
    # NB02 c32: a set compared with itself
    "r = f(x)\nassert r.frechet_of(test, test) == r.frechet_of(test, test)",
    "a = g()\nassert a == a",
    # NB02 c23 / NB06 c15: an assertion that only reads the card
    "card = read_card('x')\nassert card['metrics']['minilm/zero_shot_top1'] >= 0.90",
    "speech_card = read_card('y')\nassert min(speech_card['metrics']['usage']) >= 0.9",
])
def test_lint_flags_assertions_that_cannot_fail(code):
    assert lint_notebook(_nb([], [code]), "synthetic"), code


@pytest.mark.parametrize("code", [
    "x = measure()\nassert x > 0.5",
    "SR = 16000\nalias_hz = estimate(SR)\nassert abs(alias_hz - 1000) < 5",
    "card = read_card('x')\nm = evaluate(model)\nassert m['top1'] >= card['metrics']['top1'] - 0.05",
    "same, other = [], []\nfor w in clips:\n    same.append(score(w))\n    other.append(0.5)\nassert min(same) > max(other)",
])
def test_lint_accepts_assertions_that_can_fail(code):
    assert not lint_notebook(_nb([], [code]), "synthetic")


@pytest.mark.parametrize("text", [
    "From one sample to one bar is a factor of about 30 000.",            # NB00 c39
    "1600x cheaper attention over codec tokens than over samples.",       # NB00 summary
    "we once measured 9.6 dB before and 12.1 dB after three minutes",      # NB03 c32
    "| zero-shot top-1 | **98.2 %** | 93.5 % |",                          # NB06 c35
    "`course-lib train wavegan --time-budget 5700`; it uses 26 % of them",  # NB02 c22, deck 02
])
def test_lint_flags_numbers_typed_into_prose(text):
    assert lint_notebook(_nb([text], ["SR = 16000"]), "synthetic"), text


@pytest.mark.parametrize("text", [
    "At 16 kHz that is 16 000 numbers per second; a 3 kHz tone; 100 ms chunks.",  # settings used by the code
    "Donahue et al. (ICLR 2019), notebook 03, section 4.2, exercise 6.",
    "The energy is $20 \\log_{10}(2) \\approx 6.02$ dB; `metrics.snr(x, 35)` measures it.",
])
def test_lint_accepts_settings_citations_and_math(text):
    code = ["SR = 16_000\nx = tone(3000)\nchunk = SR // 10  # 0.1 s"]
    assert not lint_notebook(_nb([text], code), "synthetic"), lint_notebook(_nb([text], code), "synthetic")


def test_lint_reads_german_numbers():
    de = "% lang: de\n\n## Folie\n\nEin Codec mit 4,16 dB und 16.000 Samples; gemessen 37,5 %.\n"
    problems = lint_deck(de, "synthetic")
    assert problems and "37,5" in problems[0] and "16.000" not in problems[0]
    assert lint_deck("% lang: en\n\nA codec at {{num:bitrate?frame_rate=50}} and 50 Hz.\n", "synthetic") == []
