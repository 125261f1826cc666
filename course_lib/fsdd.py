"""The Free Spoken Digit Dataset (FSDD): finding it on disk, loading it, downloading it on request.

FSDD (Z. Jackson et al., GitHub Jakobovski, DOI 10.5281/zenodo.1342401) is licensed CC BY-SA 4.0:
attribute it wherever it is used and never copy it into this repository.
Files are ``recordings/{digit}_{speaker}_{take}.wav``, mono 8 kHz. Splits (by take, for every digit and speaker):

    test      takes 0-4    (the dataset's official test set, exactly)
    val       takes 5-9    (carved out of the official training set)
    train     takes 10-49
    trainval  takes 5-49   (the official training set)
    all       takes 0-49

Nothing downloads by default. Where the data are looked for (first hit wins): the ``root``
argument; ``$COURSE_DATA_DIR/fsdd``; ``shared/data/fsdd`` beside the repository (found from the
package's location, and from the working directory's parents); ``~/.cache/course_lib/fsdd``.
``download_fsdd()`` is the explicit online step.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

import course_lib
from course_lib import captions

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
# The archive's own digest could not be computed when this was written (no network); pass
# ``sha256=`` to pin it. The per-speaker digests below are always checked after extraction.
FSDD_SHA256: str | None = None
# sha256 over the sorted lines "{file name} {file sha256}\n" of each speaker's 500 files (v1.0.10).
SPEAKER_DIGESTS = {
    "george": "0db97b15572abb53e8cb765cf24959396bfce97a1464c94824f33ff62718d7e5",
    "jackson": "ace668615a78bb263366215046ed4b1bd7ad53c00d6c70ef79418b77ab5dbf71",
    "nicolas": "e6998380bfa73d9406e56040a7c998a562cd68f25bf30d2f68aa6d71e1d65569",
    "yweweler": "9cda256ddb2ef7c07930744727778cec4a4bff420b793dc721e0678447afde97",
}
# from the dataset's metadata: all six speakers are men
ACCENTS = {"george": "Greek", "jackson": "American", "lucas": "German", "nicolas": "Belgian French",
           "theo": "American", "yweweler": "German"}
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLIT_TAKES = {"test": range(0, 5), "val": range(5, 10), "train": range(10, 50), "trainval": range(5, 50),
               "all": range(0, 50)}
SONIC_PI_DIRS = ("/usr/share/sonic-pi/samples", "/usr/lib/sonic-pi/etc/samples", "/usr/lib/sonic-pi/samples",
                 "/usr/share/sonic-pi-samples", "/opt/sonic-pi/etc/samples")


def _qualifies(path: Path) -> bool:
    rec = path / "recordings"
    return rec.is_dir() and next(rec.glob("*.wav"), None) is not None


def default_root() -> Path:
    """Where ``download_fsdd`` puts the data: ``$COURSE_DATA_DIR/fsdd``, else ``~/.cache/course_lib/fsdd``."""
    env = os.environ.get("COURSE_DATA_DIR")
    return Path(env).expanduser() / "fsdd" if env else Path.home() / ".cache" / "course_lib" / "fsdd"


def search_paths() -> list[Path]:
    """Every place FSDD is looked for, in order (the ``root`` argument comes first, when given)."""
    paths = []
    if os.environ.get("COURSE_DATA_DIR"):
        paths.append(Path(os.environ["COURSE_DATA_DIR"]).expanduser() / "fsdd")
    paths.append(Path(course_lib.__file__).resolve().parents[2] / "shared" / "data" / "fsdd")
    paths += [p / "shared" / "data" / "fsdd" for p in list(Path.cwd().parents)[:2]]
    paths.append(Path.home() / ".cache" / "course_lib" / "fsdd")
    return list(dict.fromkeys(paths))


def find_fsdd(root: str | os.PathLike | None = None) -> Path | None:
    """The first folder with ``recordings/*.wav``: ``root`` if given (and nothing else), else ``search_paths()``."""
    for path in [Path(root).expanduser()] if root is not None else search_paths():
        if _qualifies(path):
            return path
    return None


class FSDD(Dataset):
    """Spoken digits as :class:`course_lib.data.Example` (audio (1, T), label = digit, caption, attributes).

    Args:
        split: "train" | "val" | "test" | "trainval" | "all" (see the module docstring).
        root: dataset folder (with ``recordings/``); default: searched, see :func:`find_fsdd`.
        sample_rate: resample the 8 kHz recordings to this rate.
        duration: seconds; pad (zeros, centred) or crop (centred) every clip to it. None keeps lengths.
        caption_set: "train" or "heldout" caption templates.
    """

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None, sample_rate: int = 16000,
                 duration: float | None = None, caption_set: str = "train"):
        if split not in SPLIT_TAKES:
            raise ValueError(f"Unknown FSDD split {split!r}; use one of {list(SPLIT_TAKES)}.")
        if caption_set not in captions.TEMPLATE_SETS:
            raise ValueError(f"caption_set must be one of {captions.TEMPLATE_SETS}, got {caption_set!r}.")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be positive seconds or None, got {duration!r}.")
        found = find_fsdd(root)
        if found is None:
            searched = [Path(root)] if root is not None else search_paths()
            raise FileNotFoundError(
                "Free Spoken Digit Dataset not found (a folder with recordings/*.wav). Searched:\n  "
                + "\n  ".join(map(str, searched))
                + "\nFix: set COURSE_DATA_DIR to a folder containing fsdd/recordings/, pass root=..., "
                  "or download it once (online) with course_lib.data.download_fsdd().")
        self.root, self.split, self.caption_set = found, split, caption_set
        self.sample_rate, self.duration = int(sample_rate), duration
        self.files: list[Path] = []
        for path in sorted((found / "recordings").glob("*.wav")):
            parts = path.stem.split("_")
            if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit() and int(parts[2]) in SPLIT_TAKES[split]:
                self.files.append(path)
        self.files.sort(key=lambda p: (p.stem.split("_")[1], int(p.stem.split("_")[0]), int(p.stem.split("_")[2])))
        self.speakers = sorted({p.stem.split("_")[1] for p in self.files})
        self.classes = list(DIGITS)
        self.families = ["digits"]

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"FSDD(split={self.split!r}, clips={len(self)}, speakers={self.speakers}, root='{self.root}')"

    def class_family(self, label: int) -> str:
        return "digits"

    def __getitem__(self, i: int):
        from course_lib.audio import load
        from course_lib.data import Example                         # late import: data imports this module

        path = self.files[i]
        digit, speaker, take = path.stem.split("_")
        wav, _ = load(path, self.sample_rate)                       # (C, T), resampled
        wav = wav[:1].to(torch.float32)                             # (1, T)
        if self.duration is not None:
            n, T = int(round(self.duration * self.sample_rate)), wav.shape[-1]
            if T < n:                                               # centre the word in silence
                wav = torch.nn.functional.pad(wav, ((n - T) // 2, n - T - (n - T) // 2))
            else:
                wav = wav[:, (T - n) // 2:(T - n) // 2 + n]
        accent = ACCENTS.get(speaker)
        attrs: dict[str, Any] = {
            "family": "digits", "class": DIGITS[int(digit)], "digit": int(digit), "speaker": speaker,
            "index": int(take), "source": "fsdd", "file": path.name,
            "speaker_desc": f"a man with {'an' if accent and accent[0] in 'AEIOU' else 'a'} {accent} accent"
            if accent else "a speaker"}
        rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # the same caption on every machine
        return Example(wav, int(digit), captions.caption(attrs, rng, self.caption_set), attrs)


def fsdd(split: str = "train", root: str | os.PathLike | None = None, sample_rate: int = 16000,
         duration: float | None = None, caption_set: str = "train") -> FSDD:
    """The Free Spoken Digit Dataset as a Dataset of Examples; see :class:`FSDD`."""
    return FSDD(split, root, sample_rate, duration, caption_set)


def speaker_digests(recordings: Path) -> dict[str, str]:
    """Per-speaker digest of the files in ``recordings`` (the format of ``SPEAKER_DIGESTS``)."""
    lines: dict[str, list[str]] = defaultdict(list)
    for path in recordings.glob("*.wav"):
        lines[path.stem.split("_")[1]].append(f"{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n")
    return {spk: hashlib.sha256("".join(sorted(v)).encode()).hexdigest() for spk, v in lines.items()}


def _extract(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive, refusing members that would land outside ``into``."""
    into = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if any(not (into / n).resolve().is_relative_to(into) for n in names):
                raise ValueError(f"{archive} has members outside its folder; refusing to extract it.")
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):                     # Python >= 3.10.12 / 3.11.4
                tf.extractall(into, filter="data")
            elif any(not (into / m.name).resolve().is_relative_to(into) or m.issym() or m.islnk() for m in tf):
                raise ValueError(f"{archive} has unsafe members; refusing to extract it.")
            else:
                tf.extractall(into)
    else:
        raise ValueError(f"{archive} is neither a zip nor a tar archive; check the url.")


def download_fsdd(root: str | os.PathLike | None = None, url: str = FSDD_URL, sha256: str | None = FSDD_SHA256,
                  timeout: float = 60.0) -> Path:
    """Download FSDD (release v1.0.10) once, verify it, and install it atomically; returns its folder.

    Args:
        root: destination (default ``$COURSE_DATA_DIR/fsdd`` or ``~/.cache/course_lib/fsdd``). If it
            already holds the data, nothing is downloaded.
        url: archive to fetch (zip or tar; ``file://`` works, for mirrors and tests).
        sha256: expected digest of the archive, checked when given.
    Raises:
        ConnectionError: offline or the url is unreachable (the message says how to supply the data).
        ValueError: a checksum does not match (the archive is corrupted or not FSDD v1.0.10).
    """
    dest = Path(root).expanduser() if root is not None else default_root()
    if _qualifies(dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty but holds no recordings/*.wav; "
                              f"empty it or choose another root.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fsdd-download-", dir=dest.parent))  # same filesystem: rename is atomic
    try:
        archive, digest = work / "archive", hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(
                f"Could not download FSDD from {url}: {getattr(e, 'reason', e)}. This machine seems to be offline "
                f"(or the url is unreachable). To use FSDD offline, copy its recordings/ folder to "
                f"{dest / 'recordings'} on this machine, or set COURSE_DATA_DIR to a folder that contains "
                f"fsdd/recordings/; SynthWorld needs no download at all.") from e
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ValueError(f"Checksum mismatch for {url}: got sha256 {digest.hexdigest()}, expected {sha256}. "
                             f"The download is corrupted or not FSDD v1.0.10; nothing was installed.")
        _extract(archive, work / "x")
        recordings = next((p for p in sorted((work / "x").rglob("recordings")) if _qualifies(p.parent)), None)
        if recordings is None:
            raise ValueError(f"The archive from {url} has no recordings/*.wav folder; is it FSDD?")
        got = speaker_digests(recordings)
        bad = [s for s, d in got.items() if s in SPEAKER_DIGESTS and d != SPEAKER_DIGESTS[s]]
        if bad:
            raise ValueError(f"Files of speakers {bad} differ from FSDD v1.0.10 (per-speaker sha256 manifest); "
                             f"the archive is corrupted or another release. Nothing was installed.")
        stage = work / "fsdd"
        stage.mkdir()
        shutil.move(str(recordings), stage / "recordings")
        (stage / "README.md").write_text(
            f"Free Spoken Digit Dataset v1.0.10 (CC BY-SA 4.0), downloaded from {url}.\n"
            "Z. Jackson et al. (GitHub: Jakobovski), DOI 10.5281/zenodo.1342401. Attribute it wherever it is used.\n")
        if dest.exists():
            dest.rmdir()                                            # empty (checked above)
        os.replace(stage, dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sources_found() -> dict[str, str | None]:
    """Data sources on this machine: SynthWorld (always), FSDD, Sonic Pi samples, espeak-ng (None: absent)."""
    sonic = next((d for d in SONIC_PI_DIRS if Path(d).is_dir()), None)
    fsdd_path = find_fsdd()
    try:
        espeak = "espeakng_loader" if importlib.util.find_spec("espeakng_loader") else None
    except (ImportError, ValueError):
        espeak = None
    return {"synthworld": "built-in", "fsdd": str(fsdd_path) if fsdd_path else None, "sonic_pi": sonic,
            "espeak": espeak}
