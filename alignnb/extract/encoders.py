"""Stage 3: sentence embeddings from the agent, the language models and the controls.

Models are named in :mod:`alignnb.extract.models`, their weights found and identified in
:mod:`alignnb.extract.weights`; an embedding set follows the contract of
:mod:`alignnb.extract.embeddings`. Embeddings are cached (:func:`alignnb.core.cache.cached`) in
``<data>/embeddings/`` under a key that hashes the model spec, its weight identity, the
pooling, the layer and the ordered sentence list (:func:`embedding_inputs`).

Pooling (``attention mask`` = real tokens; sentences are right-padded):
    mean   mean of the layer's token states over real tokens (decoders skip BOS, whose
           state is a large, sentence-independent "attention sink")
    last   the state of the last real token (the usual sentence vector of a decoder)
    cls    the state of the first token ([CLS] of BERT-style encoders)
    proj   the model's own projected sentence vector: CLIP's text projection of the EOS
           state, BLIP's text_proj of [CLS] (last layer only)

The agent's spaces are read from its checkpoints (:mod:`alignnb.agents.checkpoints`) by
:func:`alignnb.extract.points.instruction_embedding`, the one computation of the agent's
instruction embedding (its extraction points use it too): ``layer="last"`` is the embedding
that conditions the policy, an integer ``k`` the mean over words of encoder layer k (0 = word
+ position embeddings).

``transformers`` is imported inside the loading functions: its import takes seconds, and only
the language models of this stage need it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignnb.agents import checkpoints
from alignnb.agents.checkpoints import load_agent
from alignnb.collect.instructions import SentenceSet, attribute_onehot
from alignnb.core import cache, paths
from alignnb.core.progress import tqdm
from alignnb.extract import points, weights
from alignnb.extract.controls import bag_of_words, tfidf
from alignnb.extract.embeddings import Embeddings
from alignnb.extract.models import LAYER_NAMES, ModelSpec, ModelUnavailable, check_layer, get_spec  # noqa: F401
from alignnb.extract.weights import weights_identity  # re-exported: part of every embedding key

FORMAT_VERSION = 1
#: The symbolic and lexical control spaces, by the ``location`` of their spec.
CONTROLS = {
    "attributes": lambda s: attribute_onehot(s)[0],
    "bag-of-words": lambda s: bag_of_words(s.sentences)[0],
    "tf-idf": lambda s: tfidf(s.sentences)[0],
}
#: The layers of :func:`embed`: ``"last"``, ``"all"`` or an integer index.


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
        folder = str(weights.dequantized_folder(spec, data_dir))
    else:
        folder = weights.resolve_hf_location(spec.location)
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
        weights.quantize_weights_q4_0(model)
    model.eval().to(device)
    return model, tokenizer


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


def embed_agent(checkpoint: str | os.PathLike, sentences: Sequence[str], layer: int | str = "last") -> np.ndarray:
    """Instruction embeddings of the agent saved in ``checkpoint`` (one layer, or all stacked)."""
    return points.instruction_embedding(load_agent(checkpoint), sentences, layer)


def embedding_inputs(spec: ModelSpec, weights_id: str, pooling: str, layer: int | str, sentences: Sequence[str],
                     device: str | None = None) -> dict[str, Any]:
    """Everything that determines an embedding set: what :func:`embed` hashes into its key.

    The spec (a field that does not change the vectors stays out: ``billions`` always,
    ``quantize`` when unset, so adding such a field keeps earlier caches valid), the weights'
    identity, pooling, layer, the ordered sentences and the numerics (device, dtype, versions).
    """
    described = {k: v for k, v in asdict(spec).items() if k != "billions" and (k != "quantize" or v)}
    return {"format": FORMAT_VERSION, "model": described, "weights": weights_id, "pooling": pooling,
            "layer": layer, "sentences": cache.cache_key({"s": list(sentences)}), **network_numerics(spec, device)}


def embedding_path(spec: ModelSpec, key: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of the embedding set of ``spec`` with key ``key``."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.key).strip("_")[-60:]  # ad-hoc keys hold '/' and ':'
    return paths.data_dir(data_dir) / "embeddings" / f"{safe_name}-{key}.npz"


def _prepare(model: str | ModelSpec, sentences: Any, pooling: str | None, layer: int | str | None,
             agent_checkpoints: Mapping[str, str | os.PathLike] | None, data_dir: str | os.PathLike | None) -> tuple:
    """(spec, pooling, layer, sentence set or None, sentence list, checkpoint, weights identity) of an embed call."""
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
        identity = f"agent:{cache.file_hash(checkpoint)}"
    elif spec.source == "control":
        if spec.location not in CONTROLS:
            raise ValueError(f"{spec.key}: unknown control {spec.location!r}; controls are {sorted(CONTROLS)}")
        identity = "attributes-v1" if spec.location == "attributes" else f"{spec.location}-v1"
    else:
        identity = weights_identity(spec, data_dir)
    return spec, pooling, layer, sset, sentence_list, checkpoint, identity


def embedding_file(model: str | ModelSpec, sentences: Any, pooling: str | None = None, layer: int | str | None = None,
                   agent_checkpoints: Mapping[str, str | os.PathLike] | None = None, device: str | None = None,
                   data_dir: str | os.PathLike | None = None) -> Path:
    """The cache file that :func:`embed` with these arguments reads or writes (nothing is computed;
    a language model's weight files are hashed, once)."""
    spec, pooling, layer, _, sentence_list, _, identity = _prepare(model, sentences, pooling, layer,
                                                                   agent_checkpoints, data_dir)
    key = cache.key_of(None, embedding_inputs(spec, identity, pooling, layer, sentence_list, device))
    return embedding_path(spec, key, data_dir)


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
    spec, pooling, layer, sset, sentence_list, checkpoint, identity = _prepare(
        model, sentences, pooling, layer, agent_checkpoints, data_dir)

    def build(inputs: Mapping[str, Any]) -> Embeddings:
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
        return Embeddings(spec.key, sentence_list, vectors, {
            "family": spec.family, "paper_family": spec.paper_family, "source": spec.source,
            "location": spec.location, "pooling": pooling, "layer": layer, "weights": inputs["weights"],
            "seconds": round(time.perf_counter() - t0, 2), "versions": paths.versions()})

    return cache.cached(
        None, embedding_inputs(spec, identity, pooling, layer, sentence_list, device), build=build,
        load=Embeddings.load, write=lambda made, path: made.save(path),
        path=lambda key: embedding_path(spec, key, data_dir), force=force, what="cached embeddings",
        must_exist=(f"no cached embeddings of {spec.key} (pooling={pooling}, layer={layer}) for these sentences: "
                    "run notebooks/03_extract_embeddings.ipynb with the same parameters") if must_exist else "")


def network_numerics(spec: ModelSpec, device: str | None) -> dict[str, str]:
    """What changes a network's numbers besides its weights: device type, dtype and library versions."""
    if spec.source == "control":
        return {}
    if spec.source == "agent":
        return {"torch": paths.package_version("torch")}
    kind = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type
    return {"device": kind, "dtype": "float16" if kind == "cuda" else "float32",
            "torch": paths.package_version("torch"), "transformers": paths.package_version("transformers")}


def _agent_checkpoint(spec: ModelSpec, files: Mapping[str, str | os.PathLike] | None) -> Path:
    """The checkpoint file of an agent spec; a missing replicate is :class:`ModelUnavailable` (then skipped)."""
    if files is None:
        raise ValueError(f"{spec.key} needs agent_checkpoints= ({{'trained': path, ...}}; see alignnb.run.settings.StudyConfig.agent_checkpoints)")
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
