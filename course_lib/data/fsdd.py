"""The Free Spoken Digit Dataset (FSDD): finding it on disk, loading it, downloading it on request.

FSDD (Z. Jackson et al., GitHub Jakobovski, DOI 10.5281/zenodo.1342401) is licensed CC BY-SA 4.0:
attribute it wherever it is used and never copy it into this repository.
Files are ``recordings/{digit}_{speaker}_{take}.wav``, mono 8 kHz. Splits (by take, for every digit and speaker):

    test      takes 0-4    (the dataset's official test set, exactly)
    val       takes 5-9    (carved out of the official training set)
    train     takes 10-49
    trainval  takes 5-49   (the official training set)
    all       takes 0-49

Nothing downloads by default. Where the data are looked for: the ``root`` argument, if given; else
``$COURSE_DATA_DIR/fsdd`` if that is set (only there: if it has no data, that is an error, not a fallback);
else, first hit wins, ``shared/data/fsdd`` beside the repository (found from the package's location, and
from the working directory's parents) and ``~/.cache/course_lib/fsdd``. ``download_fsdd()`` is the
explicit online step (pooch); it verifies every file it installs (see its docstring).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from course_lib.audio import load
from course_lib.data import captions
from course_lib.data.base import Example

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
# sha256 of that archive (16,419,872 bytes; tag v1.0.10 = commit d6938f9bf154): equal to an independent record of
# a GitHub download, and rebuilt byte for byte by `TZ=America/Los_Angeles git archive --format=zip` of the tag.
FSDD_SHA256 = "c680098f5d2355ba7cc4bd8b0ca9e0a24c00ebe3b4c552208889a4d28d4fbc2b"
# sha256 over the sorted lines "{file name} {file sha256}\n" of each speaker's 500 files at tag v1.0.10 (its blobs).
SPEAKER_DIGESTS = {
    "george": "0db97b15572abb53e8cb765cf24959396bfce97a1464c94824f33ff62718d7e5",
    "jackson": "ace668615a78bb263366215046ed4b1bd7ad53c00d6c70ef79418b77ab5dbf71",
    "lucas": "a2ffbee7bc99d7131e14ec66bf7381addcbfafe6fe318defbfb3f71cc8957c5e",
    "nicolas": "e6998380bfa73d9406e56040a7c998a562cd68f25bf30d2f68aa6d71e1d65569",
    "theo": "9b2bc76acf1be2171742b5e032bca3b3a83593bd3bd14ff7ad006fda1f761785",
    "yweweler": "9cda256ddb2ef7c07930744727778cec4a4bff420b793dc721e0678447afde97",
}
RECORDING_NAME = re.compile(r"(\d)_([^_]+)_(\d+)\.wav")   # {digit}_{speaker}_{take}.wav
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
    """Every place FSDD is looked for, in order (the ``root`` argument comes first, when given); while
    ``COURSE_DATA_DIR`` is set, only ``$COURSE_DATA_DIR/fsdd``."""
    if os.environ.get("COURSE_DATA_DIR"):
        return [default_root()]
    paths = [Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd"]   # beside the repository
    paths += [p / "shared" / "data" / "fsdd" for p in list(Path.cwd().parents)[:2]]
    paths.append(Path.home() / ".cache" / "course_lib" / "fsdd")
    return list(dict.fromkeys(paths))


def find_fsdd(root: str | os.PathLike | None = None) -> Path | None:
    """The first folder with ``recordings/*.wav``: ``root`` if given (and nothing else), else ``search_paths()``.
    Raises FileNotFoundError (naming the variable, the path and the fix) where ``root`` is not given and
    ``COURSE_DATA_DIR`` is set but holds no ``fsdd/recordings/*.wav``: it is never passed over silently."""
    found = next((p for p in ([Path(root).expanduser()] if root is not None else search_paths()) if _qualifies(p)),
                 None)
    env = os.environ.get("COURSE_DATA_DIR")
    if found is None and root is None and env:
        data = default_root().parent
        problem = "does not exist" if not data.is_dir() else "has no fsdd/recordings/*.wav" + (
            " (it is the fsdd folder itself: use its parent)" if _qualifies(data) else "")
        raise FileNotFoundError(
            f"COURSE_DATA_DIR is set to {env!r}, but {data} {problem}; while it is set, FSDD is looked for only in "
            f"{data / 'fsdd' / 'recordings'}. Fix: point COURSE_DATA_DIR at a folder that contains fsdd/recordings/"
            f"*.wav, or unset it (`unset COURSE_DATA_DIR`, in Python `os.environ.pop('COURSE_DATA_DIR')`) to use the "
            f"default places, or download FSDD into it once when online: course_lib.data.download_fsdd().")
    return found


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
    """Per-speaker digest of the ``{digit}_{speaker}_{take}.wav`` files in ``recordings`` (as ``SPEAKER_DIGESTS``)."""
    lines: dict[str, list[str]] = defaultdict(list)
    for path in recordings.glob("*.wav"):
        if m := RECORDING_NAME.fullmatch(path.name):
            lines[m[2]].append(f"{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n")
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


def _copy_file(url: str, output_file: str, pooch: Any = None) -> None:       # a pooch downloader for file://
    shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), output_file)


def _fetch(url: str, known: str | None, into: Path, timeout: float, dest: Path) -> Path:
    """Download ``url`` with pooch into the folder ``into`` (checksummed when ``known``; atomic)."""
    import pooch  # imported here: keeps `import course_lib` light
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"Unsupported url {url!r}: use an http(s):// or file:// url.")
    downloader = _copy_file if scheme == "file" else pooch.HTTPDownloader(progressbar=True, timeout=timeout,
                                                                             chunk_size=1 << 16)
    try:
        return Path(pooch.retrieve(url, known_hash=known and f"sha256:{known}", fname="archive", path=into,
                                   downloader=downloader))
    except ValueError as e:                                    # pooch: the hash differs; it deleted the file
        raise ValueError(f"Checksum mismatch for {url}: {e} The download is corrupted or not FSDD v1.0.10; "
                         f"nothing was installed.") from e
    except OSError as e:                              # requests' errors are OSErrors; a full disk is not "offline"
        if "requests" not in type(e).__module__ and not isinstance(e, (ConnectionError, TimeoutError,
                                                                       FileNotFoundError)):
            raise
        raise ConnectionError(
            f"Could not download FSDD from {url}: {e}. This machine seems to be offline (or the url is "
            f"unreachable). To use FSDD offline, copy its recordings/ folder to {dest / 'recordings'} on this "
            f"machine, or set COURSE_DATA_DIR to a folder that contains fsdd/recordings/; SynthWorld needs no "
            f"download at all.") from e


def _verified(recordings: Path, url: str, archive_checked: bool) -> list[Path]:
    """The recordings to install, each checked against its speaker's digest or covered by the archive's sha256."""
    files = [p for p in sorted(recordings.glob("*.wav")) if RECORDING_NAME.fullmatch(p.name)]
    if not files or any(p.is_symlink() for p in recordings.iterdir()):
        raise ValueError(f"The archive from {url} has links or no files named {{digit}}_{{speaker}}_{{take}}.wav "
                         f"among its recordings; refusing to install it.")
    got = speaker_digests(recordings)
    bad = sorted(s for s, d in got.items() if s in SPEAKER_DIGESTS and d != SPEAKER_DIGESTS[s])
    if bad:
        raise ValueError(f"Files of speakers {bad} differ from FSDD v1.0.10 (per-speaker sha256 manifest); "
                         f"the archive is corrupted or another release. Nothing was installed.")
    unknown = sorted(set(got) - set(SPEAKER_DIGESTS))
    if unknown and not archive_checked:
        raise ValueError(
            f"Cannot verify the recordings of speakers {unknown} from {url}: FSDD v1.0.10 has no such speakers, "
            f"so no digest is known for their files, and no sha256 of the archive was given. Nothing was installed. "
            f"Fix: use the official archive, or pass sha256= of this archive if you trust it.")
    return files


def download_fsdd(root: str | os.PathLike | None = None, url: str = FSDD_URL, sha256: str | None = None,
                  timeout: float = 60.0) -> Path:
    """Download FSDD v1.0.10 once with pooch, verify every file and install it atomically; returns its folder.

    pooch fetches the archive (checksummed) into a temporary folder beside ``root`` and it is extracted there;
    the verified recordings are renamed into place in one step. Nothing half-written is left behind.

    Args:
        root: destination (default ``$COURSE_DATA_DIR/fsdd`` or ``~/.cache/course_lib/fsdd``); if it holds
            the data already, nothing is downloaded.
        url: archive to fetch (zip or tar; http(s):// or file://, for mirrors and tests).
        sha256: the archive's digest; default ``FSDD_SHA256`` for ``FSDD_URL``, none for other urls. Recordings
            of the six FSDD speakers must match ``SPEAKER_DIGESTS`` in every case, those of other speakers need
            ``sha256``; files not named ``{digit}_{speaker}_{take}.wav`` are not installed.
    Raises:
        ConnectionError: offline or the url is unreachable (the message says how to supply the data).
        ValueError: a checksum does not match, or recordings cannot be verified (nothing is installed).
    """
    dest = Path(root).expanduser() if root is not None else default_root()
    if _qualifies(dest):
        return dest
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty but holds no recordings/*.wav; "
                              f"empty it or choose another root.")
    known = sha256 if sha256 is not None else FSDD_SHA256 if url == FSDD_URL else None
    if known is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", known):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {known!r}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fsdd-download-", dir=dest.parent))  # same filesystem: rename is atomic
    try:
        archive = _fetch(url, known and known.lower(), work / "cache", timeout, dest)
        _extract(archive, work / "x")
        recordings = next((p for p in sorted((work / "x").rglob("recordings")) if _qualifies(p.parent)), None)
        if recordings is None:
            raise ValueError(f"The archive from {url} has no recordings/*.wav folder; is it FSDD?")
        stage = work / "fsdd"
        (stage / "recordings").mkdir(parents=True)
        for path in _verified(recordings, url, archive_checked=known is not None):
            os.replace(path, stage / "recordings" / path.name)
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
    try:
        fsdd_path = find_fsdd()
    except FileNotFoundError as e:              # a misset COURSE_DATA_DIR: warn with the fix; loading FSDD raises
        warnings.warn(str(e), stacklevel=2)
        fsdd_path = None
    try:
        espeak = "espeakng_loader" if importlib.util.find_spec("espeakng_loader") else None
    except (ImportError, ValueError):
        espeak = None
    return {"synthworld": "built-in", "fsdd": str(fsdd_path) if fsdd_path else None, "sonic_pi": sonic,
            "espeak": espeak}
