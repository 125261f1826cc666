"""Build the instructor slides: Markdown decks in ``slides/decks/`` -> offline reveal.js HTML.

    python slides/build.py                    # every deck into slides/build/
    python slides/build.py overview.en 00_audio_as_data --out /tmp/slides

Source format (one ``.md`` file per deck; see ``slides/README.md``):

- ``% key: value`` lines at the top: ``title`` (required), ``lang`` (``en``/``de``),
  ``notebook`` (the notebook the deck belongs to, e.g. ``notebooks/00_audio_as_data.ipynb``).
- A line holding only ``---`` separates slides; ``Note:`` starts the speaker notes of a slide.
- ``![caption](fig:NAME?k=v&k2=v2)`` a figure drawn at build time by ``course_lib`` code,
  ``![caption](sound:NAME?k=v)`` a sound rendered at build time (an ``<audio>`` player),
  ``{{num:NAME?k=v}}`` a number computed at build time, put into the text,
  ``![caption](file:path)`` a file beside the deck (``.wav``/``.mp3``/``.ogg`` become players);
  the path, resolved (symlinks and ``..`` included), must lie in the deck's own folder, ``slides/``
  or ``assets/`` and name an image or sound, else the build stops before copying anything.
  The generators live in ``slides/generators.py``.

A deck that names a generator that does not exist, a file that is not there, or a generator
that fails, stops the build with a :class:`BuildError` naming the deck, the slide and what is
missing. Output: ``<out>/<deck>.html`` beside ``<out>/media/`` (figures, sounds) and
``<out>/reveal/`` (reveal.js copied from ``slides/node_modules``; no CDN), plus ``index.html``.
Every file is written atomically (temp file, then ``os.replace``). Generator outputs are kept in
``slides/build/.generated/`` and reused while course_lib, the generators and the checkpoints are unchanged
(``--no-cache`` runs every generator).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from course_lib.checkpoint import atomic_write

SLIDES_DIR = Path(__file__).resolve().parent
DECKS_DIR = SLIDES_DIR / "decks"
DEFAULT_OUT = SLIDES_DIR / "build"
MEDIA_ROOTS = (SLIDES_DIR, SLIDES_DIR.parent / "assets")   # file: references may point here or beside the deck
REVEAL_VERSION = "5.2.1"           # keep equal to slides/package.json
SOUND_SUFFIXES = {".wav", ".mp3", ".ogg", ".flac"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".gif"}
_NUM_RE = re.compile(r"\{\{\s*num:([^}\s]+)\s*\}\}")
_SEPARATOR = re.compile(r"^---\s*$")
_FIG_PARAGRAPH = re.compile(r"<p>((?:\s*<figure.*?</figure>)+)\s*</p>", re.S)
_NOTE = re.compile(r"^(Note|Notes|Notiz):\s*", re.IGNORECASE)


class BuildError(RuntimeError):
    """A deck cannot be built; the message names the deck, the slide and the problem."""


@dataclass
class Slide:
    """One slide: Markdown body, speaker notes and what the build put into it."""
    index: int                  # 1-based
    body: str
    notes: str
    figures: list[str] = field(default_factory=list)   # media file names
    sounds: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)   # the formatted values


@dataclass
class Deck:
    """A parsed deck source."""
    name: str                   # file stem, e.g. "overview.en"
    path: Path
    meta: dict[str, str]
    slides: list[Slide]

    @property
    def title(self) -> str:
        return self.meta["title"]

    @property
    def lang(self) -> str:
        return self.meta.get("lang", "en")


# ----------------------------------------------------------------------------- parsing

def parse_deck(path: Path) -> Deck:
    """Split a deck file into metadata and slides (no generator runs here)."""
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"Deck source {path} does not exist; decks live in {DECKS_DIR} as NAME.md.")
    lines = path.read_text(encoding="utf-8").splitlines()
    meta: dict[str, str] = {}
    while lines and (lines[0].startswith("%") or not lines[0].strip()):
        line = lines.pop(0)
        if line.startswith("%"):
            key, _, value = line[1:].partition(":")
            meta[key.strip().lower()] = value.strip()
    if "title" not in meta:
        raise BuildError(f"{path.name}: no '% title: ...' line at the top of the deck.")
    chunks: list[list[str]] = [[]]
    for line in lines:
        if _SEPARATOR.match(line):
            chunks.append([])
        else:
            chunks[-1].append(line)
    slides = []
    for chunk in chunks:
        text = "\n".join(chunk).strip("\n")
        if not text.strip():
            continue
        body_lines, note_lines, in_notes = [], [], False
        for line in text.splitlines():
            if not in_notes and _NOTE.match(line):
                in_notes = True
                line = _NOTE.sub("", line)
            (note_lines if in_notes else body_lines).append(line)
        slides.append(Slide(len(slides) + 1, "\n".join(body_lines).strip(), "\n".join(note_lines).strip()))
    if not slides:
        raise BuildError(f"{path.name}: the deck has no slides.")
    return Deck(path.stem, path, meta, slides)


def split_ref(ref: str) -> tuple[str, dict[str, str]]:
    """``"name?a=1&b=x"`` -> ``("name", {"a": "1", "b": "x"})``."""
    parts = urlsplit(ref)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


# ----------------------------------------------------------------------------- media

CACHE_DIR = DEFAULT_OUT / ".generated"     # generator outputs of earlier builds, keyed by what they depend on
_INPUTS = ((SLIDES_DIR.parent / "course_lib", "*.py"), (SLIDES_DIR, "generators*.py"),
           (SLIDES_DIR.parent / "assets" / "checkpoints", "*"))


def inputs_fingerprint() -> str:
    """A hash of everything a generator's output depends on: course_lib's code, the generators, the shipped
    checkpoints (contents), the profile and torch's version. Same fingerprint, same figures, sounds and numbers."""
    import torch
    h = hashlib.sha1(f"{os.environ.get('COURSE_PROFILE', '')}|{torch.__version__}".encode())
    for root, pattern in _INPUTS:
        for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class MediaStore:
    """Runs generators once per distinct reference and writes their output into ``media/``.

    With ``cache_dir``, outputs are kept under ``cache_dir/<inputs_fingerprint()>/`` and reused by later
    builds while nothing they depend on has changed (the tests build the decks again after ``make slides``).
    """

    def __init__(self, out: Path, decks_dir: Path, cache_dir: Path | None = None) -> None:
        self.out, self.decks_dir = out, decks_dir
        self.media = out / "media"
        self.media.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.disk = None
        if cache_dir is not None:
            self.disk = Path(cache_dir) / inputs_fingerprint()
            for stale in (p for p in Path(cache_dir).glob("*") if p.is_dir() and p != self.disk):
                shutil.rmtree(stale, ignore_errors=True)
            self.disk.mkdir(parents=True, exist_ok=True)

    def _from_disk(self, kind: str, name: str, args: dict[str, str]) -> str | None:
        """A generator's output of an earlier build with the same inputs, copied into ``media/``; else None."""
        if self.disk is None:
            return None
        file_name = self._file_name(kind, name, args, ".txt" if kind == "num" else "")
        hits = [p for p in self.disk.glob(f"{file_name}*") if p.is_file()]
        if not hits:
            return None
        if kind == "num":
            return hits[0].read_text(encoding="utf-8")
        atomic_write(self.media / hits[0].name, hits[0].read_bytes())
        return f"media/{hits[0].name}"

    def _to_disk(self, file_name: str, data: bytes) -> None:
        if self.disk is not None:
            atomic_write(self.disk / file_name, data)

    @staticmethod
    def _file_name(kind: str, name: str, args: dict[str, str], suffix: str) -> str:
        key = "&".join(f"{k}={v}" for k, v in sorted(args.items()))
        digest = hashlib.sha1(f"{kind}:{name}?{key}".encode()).hexdigest()[:8]
        return f"{kind}-{re.sub(r'[^A-Za-z0-9_]+', '_', name)}-{digest}{suffix}"

    def generated(self, kind: str, ref: str, where: str) -> str:
        """Run ``fig:``/``sound:``/``num:`` generator ``ref``; a media path (relative) or the number's text."""
        import generators as gen   # slides/generators.py; imports course_lib (slow), so only when needed

        cache_key = f"{kind}:{ref}"
        if cache_key in self._cache:
            return self._cache[cache_key]
        name, args = split_ref(ref)
        if (hit := self._from_disk(kind, name, args)) is not None:
            self._cache[cache_key] = hit
            return hit
        registry = {"fig": gen.FIGURES, "sound": gen.SOUNDS, "num": gen.NUMBERS}[kind]
        if name not in registry:
            raise BuildError(f"{where}: missing {kind} generator {name!r} (in '{kind}:{ref}'). "
                             f"Known {kind} generators: {', '.join(sorted(registry))}. "
                             f"Add it to slides/generators.py or fix the name.")
        t0 = time.perf_counter()
        try:
            result = registry[name](**args)
        except TypeError as err:
            raise BuildError(f"{where}: {kind}:{ref} has arguments {name!r} does not take ({err}).") from err
        except Exception as err:  # noqa: BLE001 - any generator failure is a build failure, named
            raise BuildError(f"{where}: {kind}:{ref} failed: {type(err).__name__}: {err}") from err
        if kind == "num":
            value = str(result)
            self._to_disk(self._file_name(kind, name, args, ".txt"), value.encode("utf-8"))
        else:
            data, suffix = (gen.figure_png(result), ".png") if kind == "fig" else (gen.sound_wav(*result), ".wav")
            file_name = self._file_name(kind, name, args, suffix)
            atomic_write(self.media / file_name, data)
            self._to_disk(file_name, data)
            value = f"media/{file_name}"
        self.timings[cache_key] = time.perf_counter() - t0
        self._cache[cache_key] = value
        return value

    def static(self, rel: str, deck: Deck, where: str) -> str:
        """Copy a file the deck references into ``media/``; outside :data:`MEDIA_ROOTS` and the deck's
        folder, not an image or sound, or missing -> BuildError, and nothing is copied."""
        src = (deck.path.parent / unquote(rel)).resolve()
        roots = (deck.path.parent.resolve(), *MEDIA_ROOTS)
        if not any(src.is_relative_to(root) for root in roots):
            raise BuildError(f"{where}: file reference {rel!r} resolves to {src}, outside the folders a deck may "
                             f"take files from ({', '.join(map(str, roots))}). Copy the file into one of them.")
        suffixes = {Path(unquote(rel)).suffix.lower(), src.suffix.lower()}
        if not suffixes <= IMAGE_SUFFIXES | SOUND_SUFFIXES:
            raise BuildError(f"{where}: file {rel!r} is neither an image nor a sound "
                             f"({sorted(IMAGE_SUFFIXES | SOUND_SUFFIXES)}).")
        if not src.is_file():
            raise BuildError(f"{where}: missing file {rel!r} (looked for {src}). Put it beside the deck "
                             f"or use a generated fig:/sound: reference.")
        digest = hashlib.sha1(src.read_bytes()).hexdigest()[:8]
        file_name = f"file-{src.stem}-{digest}{src.suffix.lower()}"
        if not (self.media / file_name).exists():
            atomic_write(self.media / file_name, src.read_bytes())
        return f"media/{file_name}"


# ----------------------------------------------------------------------------- rendering

def _markdown(store: MediaStore, deck: Deck):
    """A markdown-it renderer whose images understand fig:, sound: and file: references."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "typographer": True}).enable("table")

    def render_image(self, tokens, idx, options, env):
        token = tokens[idx]
        src = token.attrGet("src") or ""
        caption = self.renderInline(token.children or [], options, env)
        slide: Slide = env["slide"]
        where = f"{deck.path.name}, slide {slide.index}"
        scheme, _, ref = src.partition(":")
        if scheme == "fig":
            path, is_sound = store.generated("fig", ref, where), False
        elif scheme == "sound":
            path, is_sound = store.generated("sound", ref, where), True
        elif scheme == "file":
            path = store.static(ref, deck, where)      # checks the folder and the suffix before copying
            is_sound = Path(unquote(ref)).suffix.lower() in SOUND_SUFFIXES
        else:
            raise BuildError(f"{where}: image {src!r} must be fig:NAME, sound:NAME or file:PATH, so that "
                             f"the deck stays offline and true to course_lib.")
        if is_sound:
            slide.sounds.append(path)
            return (f'<figure class="sound"><audio controls preload="auto" src="{html.escape(path)}"></audio>'
                    f"<figcaption>{caption}</figcaption></figure>")
        slide.figures.append(path)
        alt = html.escape(token.content or caption)
        return (f'<figure class="fig"><img src="{html.escape(path)}" alt="{alt}">'
                f"<figcaption>{caption}</figcaption></figure>")

    md.add_render_rule("image", render_image)
    # markdown-it refuses file: links by default; ours are checked in render_image instead.
    md.validateLink = lambda url: not url.lower().startswith(("javascript:", "vbscript:"))
    return md


def _numbers(text: str, store: MediaStore, deck: Deck, slide: Slide) -> str:
    def repl(match: re.Match) -> str:
        value = store.generated("num", match.group(1), f"{deck.path.name}, slide {slide.index}")
        slide.numbers.append(value)
        if deck.lang == "de":                                   # 16,000.5 -> 16.000,5
            value = value.translate(str.maketrans(",.", ".,"))
        return f'<span class="num">{html.escape(value)}</span>'
    return _NUM_RE.sub(repl, text)


_CSS = """
.reveal { font-size: 30px; }
.reveal h1 { font-size: 1.9em; } .reveal h2 { font-size: 1.3em; } .reveal h3 { font-size: 1.05em; }
.reveal figure { margin: 0.2em auto; }
.reveal figure.fig img { max-height: 400px; max-width: 100%; margin: 0; }
.reveal figcaption { font-size: 0.55em; color: #555; }
.reveal figure.sound { display: inline-block; margin: 0.2em 0.6em; }
.reveal figure.sound audio { width: 340px; }
.reveal .num { font-weight: 700; color: #1b5e9f; }
.reveal .small { font-size: 0.6em; }
.reveal .cols { display: flex; gap: 1em; align-items: center; }
.reveal .cols > * { flex: 1; }
.reveal ul { font-size: 0.85em; }
.reveal .footer { position: fixed; bottom: 0.3em; left: 1em; font-size: 0.45em; color: #888; }
"""


def render_deck(deck: Deck, store: MediaStore) -> str:
    """The HTML page of one deck; runs every generator it references."""
    md = _markdown(store, deck)
    sections = []
    for slide in deck.slides:
        body = md.render(_numbers(slide.body, store, deck, slide), {"slide": slide})
        body = _FIG_PARAGRAPH.sub(r'<div class="media">\1</div>', body)   # <figure> may not sit in <p>
        notes = md.render(_numbers(slide.notes, store, deck, slide), {"slide": slide}) if slide.notes else ""
        aside = f'\n<aside class="notes">{notes}</aside>' if notes else ""
        sections.append(f'<section data-slide="{slide.index}">\n{body}{aside}\n</section>')
    nb = deck.meta.get("notebook", "")
    footer = f'<div class="footer">{html.escape(deck.title)}' + (f" · {html.escape(nb)}" if nb else "") + "</div>"
    return f"""<!doctype html>
<html lang="{html.escape(deck.lang)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(deck.title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="reveal/dist/reset.css">
<link rel="stylesheet" href="reveal/dist/reveal.css">
<link rel="stylesheet" href="reveal/dist/theme/white.css">
<style>{_CSS}</style>
</head>
<body>
<div class="reveal"><div class="slides">
{chr(10).join(sections)}
</div>{footer}</div>
<script src="reveal/dist/reveal.js"></script>
<script src="reveal/plugin/notes/notes.js"></script>
<script>
Reveal.initialize({{ hash: true, width: 1280, height: 760, margin: 0.04, plugins: [ RevealNotes ] }});
</script>
</body>
</html>
"""


# ----------------------------------------------------------------------------- reveal.js assets

def find_reveal() -> Path:
    """The reveal.js package folder: ``$REVEALJS_DIR``, else ``slides/node_modules/reveal.js``.

    When neither exists and npm is on PATH, runs ``npm install`` in ``slides/`` (the npm
    registry is the only download); otherwise fails with the fix.
    """
    candidates = [Path(os.environ["REVEALJS_DIR"])] if os.environ.get("REVEALJS_DIR") else []
    candidates.append(SLIDES_DIR / "node_modules" / "reveal.js")
    for cand in candidates:
        if (cand / "dist" / "reveal.js").is_file():
            return cand
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "reveal.js not found and npm is not installed. Fix: install Node.js/npm (Debian: apt-get install npm) "
            f"and run `npm install` in {SLIDES_DIR}, or point REVEALJS_DIR at an unpacked reveal.js {REVEAL_VERSION} "
            "(the folder holding dist/ and plugin/).")
    print(f"slides: reveal.js missing, running `npm install` in {SLIDES_DIR} ...", flush=True)
    proc = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=SLIDES_DIR,
                          capture_output=True, text=True)
    target = SLIDES_DIR / "node_modules" / "reveal.js"
    if proc.returncode != 0 or not (target / "dist" / "reveal.js").is_file():
        raise BuildError(f"`npm install` in {SLIDES_DIR} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}\n"
                         f"Fix: check that the npm registry is reachable, or set REVEALJS_DIR.")
    return target


def copy_reveal(out: Path) -> None:
    """Copy the parts of reveal.js the decks use into ``out/reveal`` (about 2 MB)."""
    src = find_reveal()
    dst = out / "reveal"
    wanted = ["LICENSE", "dist/reset.css", "dist/reveal.css", "dist/reveal.js", "dist/theme/white.css",
              "dist/theme/fonts/source-sans-pro", "plugin/notes/notes.js"]
    for rel in wanted:
        s, d = src / rel, dst / rel
        if not s.exists():
            raise BuildError(f"reveal.js at {src} has no {rel}; install reveal.js {REVEAL_VERSION} "
                             f"(`npm install` in {SLIDES_DIR}).")
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif not d.exists() or d.stat().st_size != s.stat().st_size:
            shutil.copy2(s, d)


# ----------------------------------------------------------------------------- driver

def deck_paths(names: list[str] | None = None, decks_dir: Path = DECKS_DIR) -> list[Path]:
    """The deck sources to build: all ``*.md`` in ``decks_dir``, or those named (stem or path)."""
    if not names:
        found = sorted(Path(decks_dir).glob("*.md"))
        if not found:
            raise BuildError(f"No deck sources (*.md) in {decks_dir}.")
        return found
    paths = []
    for name in names:
        p = Path(name)
        p = p if p.suffix == ".md" and p.exists() else decks_dir / f"{name.removesuffix('.md')}.md"
        if not p.is_file():
            known = ", ".join(x.stem for x in sorted(decks_dir.glob("*.md")))
            raise BuildError(f"No deck {name!r}; known decks: {known}.")
        paths.append(p)
    return paths


@dataclass
class BuildResult:
    out: Path
    decks: list[Deck]
    html_files: list[Path]
    seconds: float
    timings: dict[str, float]


def build(names: list[str] | None = None, out: Path = DEFAULT_OUT, decks_dir: Path = DECKS_DIR,
          cache_dir: Path | None = CACHE_DIR) -> BuildResult:
    """Build the named decks (all when None) into ``out``; raises BuildError naming what is missing.

    Every deck is rendered before any HTML is written, so a broken deck leaves no new page behind.
    Generator outputs are reused from ``cache_dir`` while their inputs are unchanged (None: run every generator).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if str(SLIDES_DIR) not in sys.path:
        sys.path.insert(0, str(SLIDES_DIR))
    import matplotlib
    matplotlib.use("Agg")     # headless; before pyplot is imported by course_lib.plots
    decks = [parse_deck(p) for p in deck_paths(names, decks_dir)]
    with _cache_lock(cache_dir):   # two builds at once (parallel test workers): the second reuses the first's outputs
        store = MediaStore(out, decks_dir, cache_dir)
        pages = [(deck, render_deck(deck, store)) for deck in decks]
    copy_reveal(out)
    files = []
    for deck, page in pages:
        files.append(out / f"{deck.name}.html")
        atomic_write(files[-1], page.encode("utf-8"))
    write_index(out)
    return BuildResult(out, decks, files, time.perf_counter() - t0, store.timings)


@contextlib.contextmanager
def _cache_lock(cache_dir: Path | None):
    """Hold an exclusive lock on ``cache_dir`` (POSIX ``flock``; nothing to hold without a cache)."""
    if cache_dir is None:
        yield
        return
    import fcntl
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_index(out: Path) -> None:
    """``index.html`` linking every deck page present in ``out``."""
    items = []
    for page in sorted(out.glob("*.html")):
        if page.name == "index.html":
            continue
        m = re.search(r"<title>(.*?)</title>", page.read_text(encoding="utf-8"), re.S)
        items.append(f'<li><a href="{page.name}">{m.group(1) if m else page.stem}</a> ({page.stem})</li>')
    atomic_write(out / "index.html", (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Course slides</title>"
        "<link rel='icon' href='data:,'></head><body style='font-family:sans-serif'>"
        "<h1>Audio Generation with Foundation Models: slides</h1><ul>" + "".join(items) +
        "</ul><p>Press <b>S</b> in a deck for the speaker view with notes.</p></body></html>").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the course slides (reveal.js, offline).")
    parser.add_argument("decks", nargs="*", help="deck names (file stems in slides/decks); all when omitted")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default slides/build)")
    parser.add_argument("--decks-dir", type=Path, default=DECKS_DIR, help="where the deck sources are")
    parser.add_argument("--no-cache", action="store_true",
                        help=f"run every generator (default: reuse outputs in {CACHE_DIR} while their inputs hold)")
    args = parser.parse_args(argv)
    try:
        result = build(args.decks or None, args.out, args.decks_dir, None if args.no_cache else CACHE_DIR)
    except BuildError as err:
        print(f"slides: build failed: {err}", file=sys.stderr)
        return 1
    slowest = sorted(result.timings.items(), key=lambda kv: -kv[1])[:3]
    print(f"slides: {len(result.html_files)} decks, {sum(len(d.slides) for d in result.decks)} slides "
          f"in {result.seconds:.1f} s -> {result.out}/index.html")
    print("slides: slowest generators: " + ", ".join(f"{k} {v:.2f}s" for k, v in slowest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
