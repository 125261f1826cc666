"""FSDD, offline: COURSE_DATA_DIR is never passed over, and download_fsdd (pooch) verifies every file it installs.

Downloads are served from archives built here, over ``file://`` or a local HTTP server on 127.0.0.1; the real
url is never contacted. Real recordings come from ``../shared/data/fsdd`` (four speakers) where present.
"""
from __future__ import annotations

import hashlib
import http.server
import importlib
import io
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from course_lib.data import download_fsdd, find_fsdd, fsdd, sources_found

F = importlib.import_module("course_lib.data.fsdd")   # the module (`course_lib.data.fsdd` is the function)

SHARED = find_fsdd()
needs_fsdd = pytest.mark.skipif(SHARED is None, reason="FSDD not found (../shared/data/fsdd or COURSE_DATA_DIR)")
SIX = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def _wav(seed: int = 0) -> bytes:
    import soundfile as sf
    buf = io.BytesIO()
    noise = np.random.default_rng(seed).integers(-3000, 3000, 800).astype(np.int16)
    sf.write(buf, noise, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _zip(path: Path, files: dict[str, bytes], prefix: str = "free-spoken-digit-dataset-1.0.10/recordings/") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _alice(n_takes: int = 5) -> dict[str, bytes]:
    return {f"{d}_alice_{k}.wav": _wav(10 * d + k) for d in range(10) for k in range(n_takes)}


def _left_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def server(tmp_path):
    """(base url, folder served, calls): a local HTTP server; ``/short/NAME`` sends NAME cut off mid-body."""
    root, calls = tmp_path / "www", []
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            calls.append(self.path)
            if self.path.startswith("/short/"):
                data = (root / self.path.removeprefix("/short/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, calls
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def spy_pooch(monkeypatch):
    """Records the arguments of every pooch.retrieve call (and lets it run)."""
    import pooch
    seen, real = [], pooch.retrieve

    def retrieve(url, known_hash=None, **kw):
        seen.append({"url": url, "known_hash": known_hash, **kw})
        return real(url, known_hash=known_hash, **kw)

    monkeypatch.setattr(pooch, "retrieve", retrieve)
    return seen


# ----------------------------------------------------------------------------- COURSE_DATA_DIR
@pytest.mark.parametrize("case", ["missing", "empty", "fsdd_itself"])
def test_fsdd_course_data_dir_without_data_raises_instead_of_falling_back(tmp_path, monkeypatch, case):
    data = tmp_path / "nonexistent"
    if case == "empty":
        data.mkdir()
    elif case == "fsdd_itself":                                   # a common slip: the fsdd folder, not its parent
        (data / "recordings").mkdir(parents=True)
        (data / "recordings" / "0_alice_0.wav").write_bytes(_wav())
    monkeypatch.setenv("COURSE_DATA_DIR", str(data))
    with pytest.raises(FileNotFoundError) as info:
        find_fsdd()
    msg = str(info.value)
    assert "COURSE_DATA_DIR" in msg and str(data) in msg and "unset" in msg and "fsdd/recordings" in msg
    assert ("does not exist" in msg) == (case == "missing") and ("parent" in msg) == (case == "fsdd_itself")
    with pytest.raises(FileNotFoundError, match="COURSE_DATA_DIR"):
        fsdd("test")                                              # the loader errors too
    assert F.search_paths() == [data / "fsdd"]
    with pytest.warns(UserWarning, match="COURSE_DATA_DIR"):
        assert sources_found()["fsdd"] is None                    # the set-up line reports, with the fix
    own = tmp_path / "own"
    (own / "recordings").mkdir(parents=True)
    (own / "recordings" / "0_alice_0.wav").write_bytes(_wav())
    assert find_fsdd(own) == own and len(fsdd("test", root=own)) == 1   # an explicit root still wins


def test_fsdd_course_data_dir_with_data_is_used(tmp_path, monkeypatch):
    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    (tmp_path / "fsdd" / "recordings" / "3_alice_1.wav").write_bytes(_wav())
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert find_fsdd() == tmp_path / "fsdd" and sources_found()["fsdd"] == str(tmp_path / "fsdd")
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert find_fsdd() != tmp_path / "fsdd"                       # unset: the default places again


# ----------------------------------------------------------------------------- the digests
def test_fsdd_digests_cover_the_archive_and_all_six_speakers():
    assert re.fullmatch(r"[0-9a-f]{64}", F.FSDD_SHA256), "the real archive's sha256 must be pinned"
    assert tuple(sorted(F.SPEAKER_DIGESTS)) == SIX == tuple(sorted(F.ACCENTS))
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in F.SPEAKER_DIGESTS.values())
    assert len(set(F.SPEAKER_DIGESTS.values())) == 6


@needs_fsdd
def test_fsdd_speaker_digests_match_the_shared_recordings():
    rec = SHARED / "recordings"
    counts = {s: len(list(rec.glob(f"*_{s}_*.wav"))) for s in SIX}
    got = F.speaker_digests(rec)
    complete = [s for s, n in counts.items() if n == 500]
    if not complete:
        pytest.skip("no speaker with all 500 files")
    assert {s: got[s] for s in complete} == {s: F.SPEAKER_DIGESTS[s] for s in complete}


# ----------------------------------------------------------------------------- download_fsdd
@needs_fsdd
def test_fsdd_download_over_http_with_pooch_installs_real_recordings(tmp_path, server, spy_pooch):
    base, www, _ = server
    rec = SHARED / "recordings"
    speakers = [s for s in SIX if len(list(rec.glob(f"*_{s}_*.wav"))) == 500][:2]   # two suffice; keeps it quick
    if not speakers:
        pytest.skip("needs all 500 files of a speaker of FSDD v1.0.10")
    real = {p.name: p.read_bytes() for s in speakers for p in sorted(rec.glob(f"*_{s}_*.wav"))}
    _zip(www / "fsdd.zip", {**real, "notes.txt": b"not a recording", "extra.wav": b"odd name"})
    dest = tmp_path / "data" / "fsdd"
    assert download_fsdd(root=dest, url=f"{base}/fsdd.zip") == dest
    assert len(spy_pooch) == 1 and spy_pooch[0]["known_hash"] is None          # no archive hash for this url ...
    assert Path(spy_pooch[0]["path"]).parent.parent == dest.parent             # ... cached beside the destination
    installed = {p.name: p.read_bytes() for p in (dest / "recordings").iterdir()}
    assert installed == real, "exactly the verified recordings, nothing else"  # ... so every file was checked
    assert _left_in(dest.parent) == ["fsdd"] and "CC BY-SA 4.0" in (dest / "README.md").read_text()
    assert len(fsdd("test", root=dest)) == 10 * 5 * len(speakers)

    victim = sorted(real)[7]                                                   # one speaker's files suffice now
    one = {k: v for k, v in real.items() if f"_{victim.split('_')[1]}_" in k}
    broken = dict(one, **{victim: real[victim][:-2] + bytes([real[victim][-2] ^ 1, real[victim][-1]])})
    missing = {k: v for k, v in one.items() if k != victim}
    for name, files in [("broken.zip", broken), ("missing.zip", missing)]:
        _zip(www / name, files)
        dest = tmp_path / name / "fsdd"
        with pytest.raises(ValueError, match=victim.split("_")[1]):
            download_fsdd(root=dest, url=f"{base}/{name}", sha256=_sha(www / name))   # even a vouched archive
        assert _left_in(dest.parent) == []


@pytest.mark.parametrize("speaker", SIX)
def test_fsdd_download_checks_every_speaker_of_fsdd(tmp_path, speaker):
    archive = _zip(tmp_path / "fake.zip", {f"{d}_{speaker}_{k}.wav": _wav(d + k) for d in range(10) for k in range(3)})
    for sha256 in (None, _sha(archive)):                          # the archive's own hash does not excuse them
        dest = tmp_path / "data" / "fsdd"
        with pytest.raises(ValueError, match=f"{speaker}.*differ from FSDD v1.0.10"):
            download_fsdd(root=dest, url=archive.as_uri(), sha256=sha256)
        assert _left_in(tmp_path / "data") == []


def test_fsdd_download_refuses_unverifiable_speakers(tmp_path):
    archive = _zip(tmp_path / "fsdd.zip", _alice())
    dest = tmp_path / "data" / "fsdd"
    with pytest.raises(ValueError, match=r"Cannot verify .*'alice'.*sha256=") as info:
        download_fsdd(root=dest, url=archive.as_uri())
    assert "Nothing was installed" in str(info.value) and _left_in(tmp_path / "data") == []
    assert download_fsdd(root=dest, url=archive.as_uri(), sha256=_sha(archive).upper()) == dest   # vouched for
    assert len(list((dest / "recordings").glob("*.wav"))) == 50 and _left_in(tmp_path / "data") == ["fsdd"]


def test_fsdd_real_url_is_checked_against_the_pinned_archive_hash(tmp_path, server, monkeypatch, spy_pooch):
    base, www, calls = server
    archive = _zip(www / "v1.0.10.zip", _alice())
    monkeypatch.setattr(F, "FSDD_URL", f"{base}/v1.0.10.zip")     # stands in for GitHub: never the real url
    dest = tmp_path / "data" / "fsdd"
    with pytest.raises(ValueError, match="Checksum mismatch") as info:
        download_fsdd(root=dest, url=F.FSDD_URL)
    assert F.FSDD_SHA256 in str(info.value) and _sha(archive) in str(info.value)
    assert spy_pooch[-1]["known_hash"] == f"sha256:{F.FSDD_SHA256}" and calls == ["/v1.0.10.zip"]
    assert _left_in(tmp_path / "data") == []
    monkeypatch.setattr(F, "FSDD_SHA256", _sha(archive))          # an archive whose hash is the pinned one
    assert download_fsdd(root=dest, url=F.FSDD_URL) == dest
    assert spy_pooch[-1]["known_hash"] == f"sha256:{_sha(archive)}" and _left_in(tmp_path / "data") == ["fsdd"]


def test_fsdd_interrupted_download_leaves_nothing(tmp_path, server):
    base, www, calls = server
    _zip(www / "fsdd.zip", _alice())
    dest = tmp_path / "data" / "fsdd"
    for url in (f"{base}/short/fsdd.zip", f"{base}/absent.zip"):  # cut off mid-body; HTTP 404
        with pytest.raises(ConnectionError, match="COURSE_DATA_DIR"):
            download_fsdd(root=dest, url=url, timeout=10)
        assert _left_in(tmp_path / "data") == []
    assert calls == ["/short/fsdd.zip", "/absent.zip"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/fsdd.zip", "https://fsdd.invalid/v1.0.10.zip",
                                 "file:///nonexistent/fsdd.zip"])
def test_fsdd_offline_download_names_the_fix(tmp_path, url):
    dest = tmp_path / "cache" / "fsdd"
    with pytest.raises(ConnectionError, match="offline") as info:
        download_fsdd(root=dest, url=url, timeout=5)
    msg = str(info.value)
    assert "COURSE_DATA_DIR" in msg and str(dest / "recordings") in msg and url in msg
    assert _left_in(tmp_path / "cache") == []


@pytest.mark.parametrize("kwargs, match", [({"url": "ftp://example.org/fsdd.zip"}, "Unsupported url"),
                                           ({"url": "file:///x.zip", "sha256": "abc"}, "64 hexadecimal")])
def test_fsdd_download_bad_arguments_fail_before_any_download(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        download_fsdd(root=tmp_path / "data" / "fsdd", **kwargs)
    assert _left_in(tmp_path / "data") == []
