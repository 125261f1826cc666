"""benchmarks/bench_vs_papers.py reads one real-time factor per model out of ``course-lib bench``'s JSON."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vs_papers.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_vs_papers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_time_factors_come_from_each_models_bench_figures():
    results = {"threads": 2,
               "wavegan": {"small_d16_T4096_ms_per_1s_audio_2thread": 5.0, "small_d16_T4096_ms_per_1s_audio_1thread": 4.0},
               "codec": {"small": {"encode_decode_rtf": 0.05}},
               "jukebox": {"total_rtf": 8.0}, "audiolm": {"total_rtf": 2.5}, "audioldm": {"total_rtf": 1.5},
               "clap": {"embed_audio_ms_per_1s_clip_batch64": 3.0}}
    rtf = _module().our_rtf(results)
    assert rtf == {"wavegan": 0.005, "codec": 0.05, "jukebox": 8.0, "audiolm": 2.5, "audioldm": 1.5, "clap": 0.003}
    assert _module().PUBLISHED["jukebox"]["rtf"] == 540                  # 9 hours per minute
