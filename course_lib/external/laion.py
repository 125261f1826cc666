"""The official LAION-CLAP model (Wu, Chen et al. 2023) behind the course's CLAP interface.

    model = load_laion_clap()                         # downloads 630k-audioset-best.pt once (online)
    a = model.embed_audio(wav_48k)                    # (B, 1, T) at 48 kHz -> (B, 512), unit norm
    t = model.embed_text(["a dog barks"])            # (1, 512), unit norm

The ``laion-clap`` package (1.1.7) has known problems, which this wrapper copes with:

- it imports ``torchvision`` without declaring it: a missing torchvision becomes an
  error that names the fix (``pip install "course_lib[laion]"``);
- old checkpoints hold ``text_branch.embeddings.position_ids``, which newer
  ``transformers`` no longer stores: the key is dropped when the model does not expect it;
- the model was trained on 48 kHz audio quantised to int16; ``embed_audio`` checks the
  rate and applies the same int16 round trip the official pipeline applies;
- building the RoBERTa text tower downloads ``roberta-base`` weights that the checkpoint
  overwrites anyway: the tower is built from its (fixed) configuration instead, so only the
  small tokenizer files are fetched (or pass your own ``tokenizer``);
- fusion and non-fusion checkpoints need different models: the variant is read from the
  checkpoint's keys, and a mismatch with ``enable_fusion`` is a clear error.

Downloads happen only in :func:`load_laion_clap` with ``checkpoint=None`` or an official
name, and fail with a clear message offline.
"""
from __future__ import annotations

import contextlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.audio import check_audio
from course_lib.clap import check_texts

__all__ = ["LaionClap", "LaionError", "load_laion_clap", "OFFICIAL_CHECKPOINTS", "build_laion_model", "is_online",
           "roberta_tokenizer"]

URL = "https://huggingface.co/lukewys/laion_clap/resolve/main/"
# name -> fusion?  (all four use the HTSAT-tiny audio tower and RoBERTa)
OFFICIAL_CHECKPOINTS = {"630k-best.pt": False, "630k-audioset-best.pt": False,
                        "630k-fusion-best.pt": True, "630k-audioset-fusion-best.pt": True}
SAMPLE_RATE = 48_000
CLIP_SAMPLES = 480_000          # 10 s: longer clips are cut, shorter ones repeat-padded (as upstream)
# roberta-base, as published on the Hugging Face hub (config.json), so no download is needed to build it.
ROBERTA_BASE = dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1,
                    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
INSTALL = 'pip install "laion-clap==1.1.7" "numpy<2" torchvision   (or: pip install "course_lib[laion]")'


class LaionError(RuntimeError):
    """LAION-CLAP cannot be loaded: package missing, offline, or a checkpoint of another variant."""


@contextlib.contextmanager
def _no_tokenizer_downloads():
    """laion_clap.training.data fetches three tokenizers from the hub *at import*; offline that hangs.

    During the import their ``from_pretrained`` returns None (the wrapper never uses those globals).
    """
    import transformers
    classes = {id(c): c for c in (transformers.BertTokenizer, transformers.RobertaTokenizer,
                                   transformers.BartTokenizer)}.values()   # may be aliases of one class
    saved = [(c, c.__dict__.get("from_pretrained")) for c in classes]
    for c, _ in saved:
        c.from_pretrained = classmethod(lambda cls, *a, **k: None)
    try:
        yield
    finally:
        for c, original in saved:
            if original is None:
                del c.from_pretrained
            else:
                c.from_pretrained = original


def _import_laion():
    try:
        import torchvision  # noqa: F401  (laion-clap imports it without declaring it)
        with _no_tokenizer_downloads():
            from laion_clap.clap_module import create_model
            from laion_clap.training.data import get_audio_features
    except ModuleNotFoundError as e:
        what = "torchvision, which laion-clap imports without declaring it" if e.name == "torchvision" \
            else f"the package laion-clap ({e.name} is missing)"
        raise LaionError(f"LAION-CLAP needs {what}. Install with: {INSTALL}") from e
    except (ImportError, AttributeError) as e:   # e.g. numpy 2 breaks laion-clap 1.1.7's dependencies
        raise LaionError(f"laion-clap failed to import ({e}); it needs numpy<2. Install with: {INSTALL}") from e
    return create_model, get_audio_features


def is_online(host: str = "huggingface.co", timeout: float = 5.0) -> bool:
    """Can we reach ``host``? (Offline networks here may hang instead of failing: check first, quickly.)"""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _roberta_without_download(overrides: dict | None = None):
    """Let laion-clap build ``RobertaModel`` from its configuration instead of downloading weights."""
    import laion_clap.clap_module.model as laion_model
    from transformers import RobertaConfig, RobertaModel

    class _Offline(RobertaModel):
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return RobertaModel(RobertaConfig(**{**ROBERTA_BASE, **(overrides or {})}))

    original = laion_model.RobertaModel
    laion_model.RobertaModel = _Offline
    try:
        yield
    finally:
        laion_model.RobertaModel = original


def build_laion_model(enable_fusion: bool = False, amodel: str = "HTSAT-tiny",
                      roberta_overrides: dict | None = None) -> nn.Module:
    """An untrained LAION-CLAP model (audio tower ``amodel``, RoBERTa text tower), built offline.

    ``roberta_overrides`` changes the text tower's size (tests use one layer to stay fast).
    """
    create_model, _ = _import_laion()
    with _roberta_without_download(roberta_overrides):
        model, _ = create_model(amodel, "roberta", precision="fp32", device=torch.device("cpu"),
                                enable_fusion=enable_fusion, fusion_type="aff_2d" if enable_fusion else "None")
    return model.eval()


def _cache_dir() -> Path:
    return Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "course_lib")) / "laion_clap"


def _download(name: str) -> Path:
    target = _cache_dir() / name
    if target.is_file():
        return target
    if not is_online():
        raise LaionError(
            f"Cannot download the official LAION-CLAP checkpoint {name} from {URL}: huggingface.co is unreachable "
            f"(offline?). Download it where there is internet and pass its path: load_laion_clap('/path/{name}'), "
            f"or place it at {target}.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.part{os.getpid()}")
    try:
        with urllib.request.urlopen(URL + name, timeout=30) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        tmp.unlink(missing_ok=True)
        raise LaionError(
            f"Cannot download the official LAION-CLAP checkpoint {name} from {URL} ({e}); this machine seems "
            f"offline. Download it where there is internet and pass its path: load_laion_clap('/path/{name}'), "
            f"or place it at {target}.") from e
    return target


def _read_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise LaionError(f"No LAION-CLAP checkpoint at {path}; pass an existing .pt file or an official name "
                         f"({', '.join(OFFICIAL_CHECKPOINTS)}).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)   # never unpickle foreign code
    except Exception as e:  # noqa: BLE001
        raise LaionError(f"{path} cannot be read as a weights-only PyTorch checkpoint ({type(e).__name__}: {e}). "
                         f"Re-download it (delete the file) or pass another one.") from e
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    if not isinstance(state, dict) or not state:
        raise LaionError(f"{path} holds no state dict; is it a LAION-CLAP checkpoint?")
    return {k.removeprefix("module."): v for k, v in state.items()}   # saved from DistributedDataParallel


def _is_fusion(state: dict[str, Tensor]) -> bool:
    return any(".fusion_model." in k or ".mel_conv2d." in k for k in state)


class LaionClap(nn.Module):
    """The official model with the course's interface: ``embed_audio``, ``embed_text``, ``sample_rate``."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], dict], enable_fusion: bool) -> None:
        super().__init__()
        self.model, self.tokenizer, self.enable_fusion = model.eval(), tokenizer, enable_fusion
        self._features = _import_laion()[1]

    @property
    def embed_dim(self) -> int:
        return int(self.model.joint_embed_shape)

    def embed_audio(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """``(B, 1, T)`` at 48 kHz -> ``(B, D)`` unit norm; clips over 10 s use their first 10 s.

        The audio goes through the int16 round trip of the official pipeline
        (``int16_to_float32(float32_to_int16(x))``), so results match ``CLAP_Module``.
        """
        wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=SAMPLE_RATE, ndim=3, channels=1,
                          min_samples=480, allow_silent=True, name="LAION-CLAP audio input")
        wav = wav[:, 0, :CLIP_SAMPLES].float().cpu()                                  # (B, T)
        wav = (wav.clamp(-1, 1) * 32767.0).to(torch.int16).float() / 32767.0          # upstream quantisation
        cfg = self.model.audio_cfg.__dict__ if hasattr(self.model.audio_cfg, "__dict__") else self.model.audio_cfg
        feats = [self._features({}, x, CLIP_SAMPLES, data_truncating="fusion" if self.enable_fusion else "rand_trunc",
                                data_filling="repeatpad", audio_cfg=cfg) for x in wav]
        with torch.no_grad():
            return F.normalize(self.model.get_audio_embedding(feats), dim=-1)

    def embed_text(self, texts: Sequence[str]) -> Tensor:
        """Captions -> ``(B, D)`` unit norm."""
        tokens = self.tokenizer(check_texts(texts))
        with torch.no_grad():
            return F.normalize(self.model.get_text_embedding(dict(tokens)), dim=-1)


def roberta_tokenizer() -> Callable[[list[str]], dict]:
    """The tokenizer LAION-CLAP was trained with (the ``roberta-base`` files are downloaded once, then cached)."""
    from transformers import RobertaTokenizer
    try:
        tok = RobertaTokenizer.from_pretrained("roberta-base", local_files_only=True)
    except OSError:
        if not is_online():
            raise LaionError("LAION-CLAP's text tower needs the roberta-base tokenizer, which is not cached and "
                             "huggingface.co is unreachable (offline?). Run once with internet (it is cached "
                             "afterwards), or pass tokenizer=... to load_laion_clap.") from None
        tok = RobertaTokenizer.from_pretrained("roberta-base")
    return lambda texts: tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")


def load_laion_clap(checkpoint: str | os.PathLike | None = None, enable_fusion: bool | None = None,
                    amodel: str = "HTSAT-tiny", tokenizer: Callable[[list[str]], dict] | None = None,
                    roberta_overrides: dict | None = None) -> LaionClap:
    """Load LAION-CLAP with the course's ``embed_audio`` / ``embed_text`` interface.

    Args:
        checkpoint: a ``.pt`` path, an official name (``630k-audioset-best.pt`` ...), or None for
            the official non-fusion (or, with ``enable_fusion=True``, fusion) 630k+AudioSet model.
            Official files are downloaded once into ``~/.cache/course_lib/laion_clap``.
        enable_fusion: the variant; None reads it from the checkpoint. A mismatch raises.
        amodel: audio tower (``HTSAT-tiny`` for the general checkpoints, ``HTSAT-base`` for the music ones).
        tokenizer: ``texts -> {"input_ids", "attention_mask"}``; default: roberta-base's (downloaded once).
        roberta_overrides: size changes of the RoBERTa tower (only for locally built test checkpoints).

    Raises:
        LaionError: package missing, offline when a download is needed, or a checkpoint of
            the other variant or architecture; the message names the fix.
    """
    _import_laion()
    if checkpoint is None:
        checkpoint = "630k-audioset-fusion-best.pt" if enable_fusion else "630k-audioset-best.pt"
    path = Path(checkpoint).expanduser()
    if not path.is_file() and str(checkpoint) in OFFICIAL_CHECKPOINTS:
        path = _download(str(checkpoint))
    state = _read_state(path)
    fusion = _is_fusion(state)
    if enable_fusion is not None and enable_fusion != fusion:
        kind = "a fusion" if fusion else "a non-fusion"
        raise LaionError(f"{path.name} is {kind} checkpoint but enable_fusion={enable_fusion} was asked for. Pass "
                         f"enable_fusion={fusion} (or None to detect it), or pick a "
                         f"{'non-fusion' if fusion else 'fusion'} checkpoint.")
    model = build_laion_model(fusion, amodel, roberta_overrides)
    expected = model.state_dict()
    if "text_branch.embeddings.position_ids" not in expected:   # newer transformers: no longer a stored buffer
        state.pop("text_branch.embeddings.position_ids", None)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise LaionError(f"{path.name} does not fit LAION-CLAP({amodel}, RoBERTa, fusion={fusion}): missing keys "
                         f"{missing[:3] or '-'}{' ...' if len(missing) > 3 else ''}, unexpected keys "
                         f"{unexpected[:3] or '-'}{' ...' if len(unexpected) > 3 else ''}. Music checkpoints need "
                         f"amodel='HTSAT-base'; otherwise the file is not a LAION-CLAP checkpoint.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LaionError(f"{path.name} has weights of other sizes than LAION-CLAP({amodel}): "
                         f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}. "
                         f"Try amodel='HTSAT-base' for the music checkpoints.") from e
    return LaionClap(model, tokenizer or roberta_tokenizer(), fusion)
