"""Every embedding set that stages 4-5 need, for a list of models: the study's spaces.

:func:`study_embeddings` embeds each model's default layer and pooling, the all-layer sets of
the layer and pooling sweeps, and reports a model whose weights cannot be had instead of
replacing it. With a remote engine (``--engine ray``) each language model is one task first
(:func:`embed_as_tasks`, a GPU for a large model when the cluster has one); the pass that
follows finds their results in the shared cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignnb.core.engines import Engine, Report
from alignnb.core.progress import tqdm
from alignnb.extract.embeddings import Embeddings
from alignnb.extract.encoders import embed
from alignnb.extract.models import ModelSpec, ModelUnavailable, get_spec

#: A language model at least this large (billions of parameters) asks for a GPU when there is one.
LARGE_MODEL_BILLIONS = 1.0


def wants_gpu(spec: ModelSpec, engine_gpus: float) -> bool:
    """Whether an embedding task for ``spec`` asks for a GPU: a large model, and a GPU to have."""
    return engine_gpus >= 1 and getattr(spec, "billions", 0.0) >= LARGE_MODEL_BILLIONS


@dataclass(frozen=True)
class _EmbedTask:
    """One model's embedding sets as an engine task (picklable; the model key is the task)."""

    sentences: Any
    pooling: str | None
    layer: Any
    sweep_poolings: tuple
    data_dir: str | None
    kwargs: dict = field(default_factory=dict)

    def __call__(self, task: tuple[str, str | None], report: Report = None) -> str:
        key, device = task
        _, _, skipped = study_embeddings([key], self.sentences, pooling=self.pooling, layer=self.layer,
                                         sweep_poolings=self.sweep_poolings, data_dir=self.data_dir, progress=False,
                                         **{**self.kwargs, "device": device})
        return skipped.get(key, "")


def embed_as_tasks(keys: Sequence[str], sentences: Any, pooling: str | None, layer: Any,
                   sweep_poolings: Sequence[str], data_dir: str | os.PathLike | None, engine: Engine,
                   progress: bool = True, **kwargs: Any) -> dict[str, str | None]:
    """Embed each language model of ``keys`` as one task of ``engine``; {key: the device its task
    used} ("cuda" when it asked for a GPU, else the caller's device). The device is part of the
    cache key, so the caller's own pass must ask for the same one: it then finds every set in
    the shared cache. A model whose weights cannot be had is reported by that pass."""
    gpus = engine.gpus()
    asked = {key: wants_gpu(get_spec(key), gpus) for key in keys}
    devices = {key: "cuda" if asked[key] else kwargs.get("device") for key in keys}
    task = _EmbedTask(sentences, pooling, layer, tuple(sweep_poolings), None if data_dir is None else str(data_dir),
                      dict(kwargs))
    engine.map(task, [(key, devices[key]) for key in keys], cpus=[1] * len(keys),
               gpus=[1 if asked[key] else 0 for key in keys], labels=[f"embed {key}" for key in keys],
               desc="embeddings", progress=progress)
    return devices


def study_embeddings(models: Sequence[str], sentences: Any, agent_checkpoints: Mapping[str, Any] | None = None,
                     pooling: str | None = None, layer: int | str | None = None,
                     sweep_poolings: Sequence[str] = ("mean", "last"), data_dir: str | os.PathLike | None = None,
                     progress: bool = True, must_exist: bool = False, engine: Engine | None = None,
                     **kwargs: Any,
                     ) -> tuple[dict[str, Embeddings], dict[tuple[str, str], Embeddings], dict[str, str]]:
    """What stage 4 needs: each model's default embedding, all-layer sets for the sweeps, skips.

    Returns (defaults {model: Embeddings}; all_layers {(model, pooling): Embeddings of every
    layer} for the language models and the agent; skipped {model: reason}). ``pooling`` and
    ``layer`` override the specs' defaults for language models. A model whose weights cannot be
    had is reported in ``skipped`` and left out, never replaced by another. With a remote
    ``engine`` (Ray), each language model is first embedded as one task of its own.
    """
    defaults, all_layers, skipped = {}, {}, {}
    devices: dict[str, str | None] = {}  # per model, the device its task used (the cache key has it)
    if engine is not None and engine.remote and not must_exist:
        lms = [key for key in models if get_spec(key).is_language_model]
        if lms:  # one task per language model (a GPU for a large one); the pass below reads their caches
            devices = embed_as_tasks(lms, sentences, pooling, layer, sweep_poolings, data_dir, engine, progress,
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
