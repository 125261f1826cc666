"""The course's generation speed beside the speeds the papers publish.

Runs ``course-lib bench`` (every model's figures in one JSON, on this machine) and sets each model's
real-time factor (seconds of compute per second of audio) beside the paper's own statement where
there is one. The papers measured much larger models on accelerators; the point is the ratio
between families, which survives the change of scale: one-pass generators are fast, token-by-token
ones are slow.

    .venv/bin/python benchmarks/bench_vs_papers.py            # all models (a minute or two on a laptop)
    .venv/bin/python benchmarks/bench_vs_papers.py --json     # the table as JSON
"""
from __future__ import annotations

import argparse
import json

import torch

from course_lib.cli import bench

# What each paper says about its own speed (quoted; None: the paper gives no figure).
PUBLISHED = {
    "wavegan": None,
    "codec": {"rtf": None, "note": "SoundStream runs in real time on a smartphone CPU (Zeghidour et al. 2021, abstract)"},
    "jukebox": {"rtf": 9 * 3600 / 60, "note": "about 9 hours to render one minute of audio on a V100 "
                                              "(Dhariwal et al. 2020)"},
    "audiolm": None,
    "audioldm": None,
    "clap": None,
}


def our_rtf(results: dict) -> dict[str, float]:
    """One real-time factor per model, from the ``course-lib bench`` JSON."""
    out = {}
    if "wavegan" in results:
        key = next(k for k in results["wavegan"] if k.startswith("small_") and k.endswith(f"_{results['threads']}thread"))
        out["wavegan"] = results["wavegan"][key] / 1000           # ms per second of audio -> RTF
    if "codec" in results:
        out["codec"] = results["codec"]["small"]["encode_decode_rtf"]
    for name in ("jukebox", "audiolm", "audioldm"):
        if name in results:
            out[name] = results[name]["total_rtf"]
    if "clap" in results:
        out["clap"] = results["clap"]["embed_audio_ms_per_1s_clip_batch64"] / 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args()
    results = bench(["wavegan", "codec", "clap", "jukebox", "audiolm", "audioldm"])
    ours = our_rtf(results)
    rows = {name: {"ours_rtf": round(rtf, 4), "published": PUBLISHED.get(name)} for name, rtf in ours.items()}
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "models": rows}, indent=2))
        return
    print(f"real-time factor on this CPU ({torch.get_num_threads()} threads) beside the papers' statements")
    for name, row in sorted(rows.items(), key=lambda kv: kv[1]["ours_rtf"]):
        pub = row["published"]
        said = "no speed figure published" if pub is None else (
            f"RTF {pub['rtf']:.0f}: {pub['note']}" if pub["rtf"] is not None else pub["note"])
        print(f"  {name:9s} ours {row['ours_rtf']:9.4f}   paper: {said}")


if __name__ == "__main__":
    main()
