"""The pretrained HuBERT-base (Hsu et al. 2021) behind the course's semantic-token interface.

    model = load_hubert_base(fit_audio=clips, num_clusters=500)   # downloads 360 MB once (online)
    tokens = model.semantic_tokens(wav)                            # (B, 1, T) at 16 kHz -> (B, N) at 25 Hz

The weights are fairseq's ``hubert_base_ls960`` (12 layers, 768 wide, LibriSpeech 960 h) as converted by
torchaudio or Hugging Face; fairseq itself is never imported. Two sources:

- ``source="torchaudio"`` (default): ``torchaudio.pipelines.HUBERT_BASE`` from download.pytorch.org,
  cached by ``torch.hub`` (``~/.cache/torch/hub/checkpoints``); or a local state-dict file.
- ``source="transformers"``: ``HubertModel.from_pretrained("facebook/hubert-base-ls960")`` from
  huggingface.co; or a local folder written by ``save_pretrained``.

Connectivity is checked before any download (an offline network here may hang instead of failing); offline,
:class:`HubertError` names the fix. Local files and folders load offline: that path is the one the tests
take, with tiny models of the same architecture.

Frames and tokens match :mod:`course_lib.hubert`: the raw waveform (not normalised, as fairseq's base
config and torchaudio's bundle) is padded by 40 samples on each side, so T samples give ``T // 320`` frames
at 50 Hz; ``semantic_rate=25`` (default, AudioLM's rate) averages pairs of frames, 50 keeps HuBERT's rate.
The output of transformer layer ``layer`` (6 of 12 by default, the layer HuBERT's own second iteration
clusters) is quantized by a :class:`course_lib.hubert.KMeans`: given centroids in raw feature space, or
fitted on ``fit_audio`` with :func:`course_lib.hubert.fit_kmeans` (z-scored features).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from course_lib.audio import check_audio
from course_lib.external.laion import is_online
from course_lib.hubert import KMeans, fit_kmeans, pool_pairs

__all__ = ["PretrainedHubert", "HubertError", "load_hubert_base", "read_centroids", "TORCHAUDIO_FILE", "HF_NAME"]

TORCHAUDIO_FILE = "hubert_fairseq_base_ls960.pth"     # torchaudio.pipelines.HUBERT_BASE's weights (a test checks)
HF_NAME = "facebook/hubert-base-ls960"
HOP, PAD = 320, (40, 40)                               # 50 Hz frames, aligned as course_lib.hubert's


class HubertError(RuntimeError):
    """The pretrained HuBERT cannot be loaded: offline, a missing or unfit file, a missing package."""


class PretrainedHubert(nn.Module):
    """A torchaudio ``Wav2Vec2Model`` or a transformers ``HubertModel`` with ``semantic_tokens(wav)``.

    Args:
        backbone: the pretrained network (kept in eval mode).
        layer: transformer layer (1-based) whose output is quantized.
        quantizer: a fitted :class:`~course_lib.hubert.KMeans` over that layer's width, or None (fit it later
            with :meth:`fit_quantizer`).
        semantic_rate: 25 (pairs of frames averaged, AudioLM's rate) or 50 (HuBERT's frames).
    """

    sample_rate = 16_000
    frame_rate = 50.0

    def __init__(self, backbone: nn.Module, layer: int = 6, quantizer: KMeans | None = None,
                 semantic_rate: float = 25.0) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.torchaudio = isinstance(backbone, torchaudio.models.Wav2Vec2Model)
        num_layers = len(backbone.encoder.transformer.layers) if self.torchaudio else backbone.config.num_hidden_layers
        if not 1 <= layer <= num_layers:
            raise ValueError(f"layer must be in 1..{num_layers} (the model's transformer layers), got {layer}.")
        if semantic_rate not in (25, 50):
            raise ValueError(f"semantic_rate must be 25 (pairs of frames averaged) or 50 Hz, got {semantic_rate}.")
        self.layer, self.semantic_rate, self.quantizer = layer, float(semantic_rate), quantizer
        if quantizer is not None:
            _check_width(quantizer.centroids, self.dim, "quantizer")

    @property
    def dim(self) -> int:
        """D, the width of a layer's output (768 for HuBERT-base)."""
        if self.torchaudio:
            return self.backbone.encoder.feature_projection.projection.out_features
        return self.backbone.config.hidden_size

    @torch.no_grad()
    def layer_features(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) at 16 kHz -> (B, T // 320, D): the output of transformer layer ``layer`` at 50 Hz."""
        wav = check_audio(wav, sample_rate=sample_rate, expected_sample_rate=self.sample_rate, ndim=3, channels=1,
                          min_samples=HOP * round(self.frame_rate / self.semantic_rate), name="HuBERT-base input")
        x = F.pad(wav[:, 0], PAD)                                                # (B, T + 80)
        if self.torchaudio:
            return self.backbone.extract_features(x, num_layers=self.layer)[0][-1]   # outputs of layers 1..layer
        return self.backbone(x, output_hidden_states=True).hidden_states[self.layer]  # [0] is the layers' input

    @torch.no_grad()
    def semantic_features(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) -> (B, N, D) at ``semantic_rate``."""
        f = self.layer_features(wav, sample_rate)
        return pool_pairs(f) if self.semantic_rate == 25 else f

    @torch.no_grad()
    def semantic_tokens(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, 1, T) at 16 kHz -> (B, N) int64 cluster ids, N = T // 640 at 25 Hz (T // 320 at 50 Hz)."""
        if self.quantizer is None:
            raise HubertError("This HuBERT has no k-means yet: pass kmeans_centroids= or fit_audio= to "
                              "load_hubert_base, or call model.fit_quantizer(clips).")
        return self.quantizer.predict(self.semantic_features(wav, sample_rate))

    @torch.no_grad()
    def fit_quantizer(self, clips: list[Tensor], num_clusters: int = 500, generator: torch.Generator | None = None,
                      max_frames: int | None = 200_000) -> KMeans:
        """Fit the k-means on the ``semantic_rate`` features of ``clips`` (1, T_i) (z-scored; see fit_kmeans)."""
        if not clips:
            raise ValueError("fit_quantizer needs clips: a list of (1, T) tensors at 16 kHz.")
        device = next(self.backbone.parameters()).device
        feats = torch.cat([self.semantic_features(c[None].to(device))[0].cpu() for c in clips])  # (sum N_i, D)
        self.quantizer = fit_kmeans(feats, num_clusters, generator, max_frames=max_frames).to(device)
        return self.quantizer


def _check_width(centroids: Tensor, dim: int, what: str) -> None:
    if centroids.ndim != 2 or centroids.shape[1] != dim:
        raise HubertError(f"{what} has shape {tuple(centroids.shape)}, but the model's layers are {dim} wide: the "
                          f"centroids must be (K, {dim}), fitted on features of the same model.")


def read_centroids(centroids: Tensor | KMeans | str | os.PathLike) -> KMeans:
    """A :class:`KMeans` from a fitted one, a (K, D) tensor in raw feature space, or a file holding one.

    Files: ``.npy`` (a (K, D) array, as fairseq's ``km.cluster_centers_``), ``.pt`` (a tensor, or a
    ``KMeans.state_dict()``; read with ``weights_only``), ``.safetensors`` (a ``KMeans.state_dict()``).
    Nothing is unpickled, so sklearn/joblib k-means files are refused: save their ``cluster_centers_`` as .npy.
    """
    if isinstance(centroids, KMeans):
        return centroids
    state: dict[str, Tensor] = {}
    if not torch.is_tensor(centroids):
        path = Path(centroids).expanduser()
        if not path.is_file():
            raise HubertError(f"No k-means file at {path}; pass a .npy, .pt or .safetensors file of (K, D) centroids.")
        try:
            if path.suffix == ".npy":
                centroids = torch.from_numpy(np.load(path, allow_pickle=False))
            elif path.suffix == ".safetensors":
                state = safetensors.torch.load_file(path)
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
                state, centroids = (obj, None) if isinstance(obj, dict) else ({}, obj)
        except Exception as e:  # noqa: BLE001 - every unreadable file gets the same advice
            raise HubertError(f"{path} cannot be read as k-means centroids ({type(e).__name__}: {e}); save the "
                              f"(K, D) centroids with numpy.save(path.npy, centers).") from e
        centroids = state.get("centroids", centroids)
    if not torch.is_tensor(centroids) or centroids.ndim != 2 or not centroids.is_floating_point():
        raise HubertError("k-means centroids must be a float (K, D) tensor (or a file holding one).")
    km = KMeans(*centroids.shape)
    for name in ("mean", "std"):                           # a KMeans state dict also holds its z-scoring
        if name in state:
            _check_width(state[name][None], centroids.shape[1], f"the file's {name}")
            getattr(km, name).copy_(state[name])
    km.centroids.copy_(centroids)
    km.fitted.fill_(True)
    return km


def _torchaudio_backbone(path: str | os.PathLike | None, params: dict | None) -> nn.Module:
    if path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHAUDIO_FILE
        if not cached.is_file() and not is_online("download.pytorch.org"):
            raise HubertError(
                f"Cannot download HuBERT-base ({TORCHAUDIO_FILE}, 360 MB) from download.pytorch.org: it is "
                f"unreachable (offline?). Run load_hubert_base() once with internet (it is cached at {cached}), copy "
                f"the file there, or pass a local file: load_hubert_base(name_or_path='/path/{TORCHAUDIO_FILE}').")
        return torchaudio.pipelines.HUBERT_BASE.get_model()
    path = Path(path).expanduser()
    if not path.is_file():
        raise HubertError(f"No HuBERT state-dict file at {path}; pass torchaudio's {TORCHAUDIO_FILE} (or a "
                          f"torch.save(model.state_dict()) of a torchaudio Wav2Vec2Model), or None to download it.")
    model = torchaudio.models.wav2vec2_model(**params) if params else torchaudio.models.hubert_base()
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001
        raise HubertError(f"{path} does not fit torchaudio's HuBERT-base{' with params' if params else ''} "
                          f"({str(e).splitlines()[0]}); pass a state dict of that architecture, or the "
                          f"wav2vec2_model params it was built with.") from e
    return model


def _transformers_backbone(name_or_path: str | os.PathLike) -> nn.Module:
    try:
        from transformers import HubertModel
    except ImportError as e:
        raise HubertError("source='transformers' needs the transformers package: pip install transformers.") from e
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return HubertModel.from_pretrained(local)
    try:                                                   # the Hugging Face cache, without the network
        return HubertModel.from_pretrained(str(name_or_path), local_files_only=True)
    except OSError:
        if not is_online("huggingface.co"):
            raise HubertError(
                f"Cannot download {name_or_path} from huggingface.co: it is unreachable (offline?) and the model "
                f"is not in the Hugging Face cache. Run once with internet (it is cached then), or pass a local "
                f"folder written by HubertModel.save_pretrained: load_hubert_base(source='transformers', "
                f"name_or_path='/path/to/folder').") from None
    return HubertModel.from_pretrained(str(name_or_path))


def load_hubert_base(kmeans_centroids: Tensor | KMeans | str | os.PathLike | None = None, layer: int = 6, *,
                     source: str = "torchaudio", name_or_path: str | os.PathLike | None = None,
                     fit_audio: list[Tensor] | None = None, num_clusters: int = 500,
                     generator: torch.Generator | None = None, semantic_rate: float = 25.0,
                     params: dict | None = None) -> PretrainedHubert:
    """Pretrained HuBERT-base with ``semantic_tokens(wav)`` (see the module docstring).

    Args:
        kmeans_centroids: a fitted KMeans, (K, D) centroids in raw feature space, or a file of them
            (:func:`read_centroids`). None: fit on ``fit_audio``, or leave unfitted (:meth:`fit_quantizer`).
        layer: transformer layer (1..12) whose output is quantized.
        source: ``"torchaudio"`` or ``"transformers"``.
        name_or_path: torchaudio: a local state-dict file (None downloads the bundle); transformers: a
            local ``save_pretrained`` folder or a hub name (default ``facebook/hubert-base-ls960``).
        fit_audio: clips (1, T_i) at 16 kHz to fit ``num_clusters`` centroids on, with ``generator``.
        params: torchaudio ``wav2vec2_model`` arguments of a local file of another size (tests).

    Raises:
        HubertError: offline when a download is needed, a missing or unfit file, or centroids of another width.
    """
    if source == "torchaudio":
        backbone = _torchaudio_backbone(name_or_path, params)
    elif source == "transformers":
        backbone = _transformers_backbone(name_or_path or HF_NAME)
    else:
        raise ValueError(f"source must be 'torchaudio' or 'transformers', got {source!r}.")
    model = PretrainedHubert(backbone, layer, None, semantic_rate)
    if kmeans_centroids is not None:
        km = read_centroids(kmeans_centroids)
        _check_width(km.centroids, model.dim, "kmeans_centroids")
        model.quantizer = km
    elif fit_audio is not None:
        model.fit_quantizer(fit_audio, num_clusters, generator)
    return model
