"""The study's stages as functions of its settings: what notebooks, the CLI and the tests call.

    collect(cfg)        stage 1: the bot demonstrations and the sentence set
    train_agents(cfg)   stage 2: every agent of the study (missing ones on the given engine)
    load_study(cfg)     stages 3-5: the agent run, the sentences and every space's embeddings
    load_variants(cfg)  stage 3-4: every agent's extraction points and the bot's behaviour
    load_snapshots(cfg) stage 3-4: the same at every checkpoint of training (E3)

Each is cached below (a rerun with the same settings loads instead of computing).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alignnb.agents import checkpoints, evaluation, jobs
from alignnb.collect import demos
from alignnb.collect.instructions import SentenceSet, build_sentence_set
from alignnb.core import paths
from alignnb.core.engines import Engine
from alignnb.core.progress import tqdm
from alignnb.extract import models, points
from alignnb.extract.embeddings import Embeddings
from alignnb.extract.spaces import study_embeddings
from alignnb.measure import trajectory
from alignnb.measure.checks import check_k
from alignnb.run.settings import StudyConfig


def collect(cfg: StudyConfig, data_dir: str | os.PathLike | None = None,
            progress: bool = True) -> tuple[demos.Demos, SentenceSet]:
    """Stage 1: the bot demonstrations and the sentence set (each cached)."""
    data = demos.collect_demos(list(cfg.levels), cfg.effective("episodes_per_level"), cfg.seed, cfg.workers,
                               data_dir, progress=progress)
    sentences = build_sentence_set(list(cfg.levels), cfg.seed, cfg.effective("sentence_patience"),
                                   data_dir=data_dir, progress=progress)
    check_k(cfg.k, len(sentences))
    return data, sentences


def load_demos(cfg: StudyConfig, data_dir: str | os.PathLike | None = None) -> demos.Demos:
    """The stage-1 data set of ``cfg``, or an error saying which notebook makes it."""
    path = paths.data_dir(data_dir) / "demos" / cfg.demos_key
    if not (path / "meta.json").exists():
        raise FileNotFoundError(f"no demonstrations for this study at {path}: run notebooks/01_collect_demos.ipynb "
                                "(or alignnb.run.stages.collect(cfg)) with the same study parameters first")
    return demos.load_demos(path)


def train_agents(cfg: StudyConfig, data_dir: str | os.PathLike | None = None, engine: Engine | None = None,
                 progress: bool = True) -> dict[tuple[str, int], checkpoints.TrainedAgent]:
    """Stage 2: every agent of the study, {(learner, seed): run}, the study's agent first (each cached).

    ``cfg.agent_seeds`` transformer agents (the second is the replicate) and
    ``cfg.recurrent_seeds`` agents of the second learner. Missing runs are tasks of ``engine``
    (default: side by side, one single-thread worker process each; :func:`alignnb.agents.jobs.train_all`);
    the result does not depend on the engine.
    """
    data = load_demos(cfg, data_dir)
    todo = [jobs.TrainJob(str(data.path), *cfg.learner_recipe(learner), seed, cfg.effective("eval_episodes"))
            for learner, seed in cfg.agent_seed_list]
    done = jobs.train_all(todo, data_dir, engine=engine, progress=progress)
    return dict(zip(cfg.agent_seed_list, done))


def load_agents(cfg: StudyConfig, data_dir: str | os.PathLike | None = None) -> dict[tuple[str, int], checkpoints.TrainedAgent]:
    """The finished runs of :func:`train_agents`, {(learner, seed): run}; a missing one is an error."""
    return {(learner, seed): evaluation.evaluated(
                checkpoints.load_run(checkpoints.run_dir(cfg.run_key_of(learner, seed), data_dir)),
                cfg.effective("eval_episodes"), data_dir, must_exist=True)
            for learner, seed in cfg.agent_seed_list}


@dataclass
class Study:
    """What stages 3-5 work on: the agent run, the sentences and every space's embeddings."""

    cfg: StudyConfig
    run: checkpoints.TrainedAgent
    sentences: SentenceSet
    spaces: dict[str, Embeddings]  # each model's default embedding
    all_layers: dict[tuple[str, str], Embeddings]  # {(model, pooling): every layer}
    skipped: dict[str, str]  # {model: why it is missing}

    @property
    def n(self) -> int:
        return len(self.sentences)

    @property
    def attributes(self) -> pd.DataFrame:
        return self.sentences.attributes

    @property
    def language_models(self) -> list[str]:
        return models.language_models(list(self.spaces))


def load_study(cfg: StudyConfig, data_dir: str | os.PathLike | None = None, compute: bool = False,
               progress: bool = False, engine: Engine | None = None) -> Study:
    """The agent run, the sentence set and the embeddings of ``cfg``, in one call.

    With ``compute`` (notebook 03) missing embeddings are extracted (on ``engine``: a remote
    one embeds each language model as a task first); otherwise each must be cached already,
    and a missing one is an error naming the notebook that makes it.
    """
    run = evaluation.evaluated(checkpoints.load_run(checkpoints.run_dir(cfg.agent_key(), data_dir)),
                               cfg.effective("eval_episodes"), data_dir, must_exist=True)
    if run.meta["metrics"].get("stopped_early"):  # runs of an earlier format, finished at a time limit
        raise ValueError(f"the agent at {run.path} was cut short by a time limit and is not the configured recipe: "
                         "rerun notebooks/02_train_agent.ipynb without max_minutes")
    path = cfg.sentences_path(data_dir)
    if not path.exists():
        raise FileNotFoundError(f"no sentence set for this study at {path}: run notebooks/01_collect_demos.ipynb "
                                "with the same study parameters first")
    sentences = SentenceSet.load(path)
    check_k(cfg.k, len(sentences))
    spaces, all_layers, skipped = study_embeddings(
        cfg.model_keys, sentences, agent_checkpoints=cfg.agent_checkpoints(data_dir), pooling=cfg.pooling or None,
        layer=cfg.layer if cfg.layer != "" else None, batch_size=cfg.batch_size, data_dir=data_dir,
        progress=progress, must_exist=not compute, engine=engine)
    return Study(cfg, run, sentences, spaces, all_layers, skipped)


def probe_set(cfg: StudyConfig) -> points.ProbeSet:
    """The probe states of the behavioural and memory extraction points (seeded by ``cfg.seed``)."""
    return points.probe_states(list(cfg.levels), cfg.effective("probes_per_level"), cfg.seed)


def load_variants(cfg: StudyConfig, sentences: SentenceSet, data_dir: str | os.PathLike | None = None,
                  compute: bool = False, progress: bool = False,
                  ) -> tuple[dict[tuple[str, int, str], Embeddings], Embeddings, dict[tuple[str, int, str], str]]:
    """Every extraction point of every agent of the study, and the bot's behavioural embedding.

    Returns ({(learner, seed, extraction): Embeddings}, bot, skipped {(learner, seed,
    extraction): why}). Every seed's own untrained twin (its ``untrained.pt``, the seed's
    initial weights) is included as learner ``"<learner>-untrained"``, the matched floor of
    what training changed. A set with a zero vector has no cosine geometry and is skipped.
    With ``compute`` (notebook 03) missing sets are extracted; otherwise each must be cached.
    """
    probes = probe_set(cfg)
    out: dict = {}
    for (learner, seed), run in tqdm(list(load_agents(cfg, data_dir).items()), desc="agent variants",
                                     disable=not progress):
        files = [("agent.pt", learner, True), ("untrained.pt", f"{learner}-untrained", False)]
        for filename, label, trained in files:
            sets = _variants_of(run.path / filename, sentences, probes, {"learner": label, "seed": seed,
                                                                         "trained": trained}, data_dir, compute,
                                progress)
            out.update({(label, seed, name): emb for name, emb in sets.items()})
    skipped = {}
    for variant, emb in list(out.items()):
        zero = _zero_rows(emb)
        if zero:
            skipped[variant] = f"{zero} of {len(emb.sentences)} vectors are zero: no cosine geometry"
            del out[variant]
    bot = _bot_of(sentences, probes, data_dir, compute, progress)
    return out, bot, skipped


def load_snapshots(cfg: StudyConfig, sentences: SentenceSet, data_dir: str | os.PathLike | None = None,
                   compute: bool = False, progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """Every agent's extraction points at every moment of its training kept on disk (E3).

    Returns ({(learner, seed, snapshot, extraction): Embeddings}, steps) where a snapshot is
    ``"untrained"`` (the seed's twin, step 0), ``"step N"`` (the weights kept at the success
    check of step N) or ``"final"`` (the finished agent); ``steps`` has one row per snapshot:
    learner, seed, snapshot, step, success (the mean over levels of the check's rates, or of the
    final test's; NaN for the twin, which is not played) and success_source. The twin's and the
    final agent's sets are those of :func:`load_variants` (a set with a zero vector is left out, as
    there); only the checks that the run's own history logged are read. With ``compute``
    (notebook 03) missing sets are extracted; otherwise each must be cached.
    """
    probes = probe_set(cfg)
    out: dict = {}
    rows: list[dict] = []
    runs = list(load_agents(cfg, data_dir).items())
    for (learner, seed), run in tqdm(runs, desc="agents along training", disable=not progress):
        sets, steps = snapshots_of(run, learner, seed, sentences, probes, cfg.effective("eval_episodes"), data_dir,
                                   compute, progress)
        out.update(sets)
        rows += steps
    return out, pd.DataFrame(rows)


def snapshots_of(run: checkpoints.TrainedAgent, learner: str, seed: int, sentences: SentenceSet,
                 probes: points.ProbeSet, eval_episodes: int, data_dir: str | os.PathLike | None = None,
                 compute: bool = False, progress: bool = False) -> tuple[dict, list[dict]]:
    """:func:`load_snapshots` of one finished run (evaluated on ``eval_episodes`` per level)."""
    history = run.history
    levels = list(run.meta["params"]["levels"])
    check_episodes = run.meta["params"]["train"].get("check_episodes")
    rate = f"success/{levels[0]}"
    checks = history.dropna(subset=[rate]).iloc[:-1] if rate in history else history.iloc[:0]  # the last: the test
    rates = {int(r["step"]): float(np.mean([r[f"success/{lv}"] for lv in levels])) for _, r in checks.iterrows()}
    files = [(trajectory.UNTRAINED, 0, run.path / "untrained.pt", float("nan"), "")]
    final_step = int(run.meta["metrics"]["steps"])
    for step, path in checkpoints.training_checkpoints(run.path).items():
        if step and step <= final_step and step in rates:  # a check this run logged (never a leftover file)
            files.append((trajectory.snapshot_name(step), step, path, rates.get(step, float("nan")),
                          f"check ({check_episodes} validation episodes per level)"))
    files.append((trajectory.FINAL, final_step, run.path / "agent.pt",
                  float(run.success_table()["success_rate"].mean()), f"test ({eval_episodes} episodes per level)"))
    out: dict = {}
    rows = []
    for name, step, path, success, source in files:
        sets = _variants_of(path, sentences, probes, {"learner": learner, "seed": seed, "snapshot": name,
                                                      "trained": name != trajectory.UNTRAINED},
                            data_dir, compute, progress)
        # as in load_variants: a set with a zero vector has no cosine geometry and is left out
        out.update({(learner, seed, name, x): emb for x, emb in sets.items() if not _zero_rows(emb)})
        rows.append({"learner": learner, "seed": seed, "snapshot": name, "step": step, "success": success,
                     "success_source": source})
    return out, rows


def _zero_rows(emb: Embeddings) -> int:
    """How many of a set's vectors are zero (a set with any has no cosine geometry and is left out)."""
    return int((~np.any(emb.vectors != 0, axis=-1)).sum())


def _variants_of(checkpoint: Path, sentences: SentenceSet, probes: points.ProbeSet, label: dict,
                 data_dir: str | os.PathLike | None, compute: bool, progress: bool) -> dict[str, Embeddings]:
    if not compute and not points.is_cached(checkpoint, sentences.sentences, probes, data_dir):
        raise FileNotFoundError(f"the agent variants of {checkpoint} are not extracted yet: run "
                                "notebooks/03_extract_embeddings.ipynb with the same study parameters")
    return points.agent_variants(checkpoint, sentences.sentences, probes, label, data_dir, progress=progress)


def _bot_of(sentences: SentenceSet, probes: points.ProbeSet, data_dir: str | os.PathLike | None, compute: bool,
            progress: bool) -> Embeddings:
    if not compute and not points.bot_is_cached(sentences.sentences, probes, data_dir):
        raise FileNotFoundError("the bot's behavioural embedding is not computed yet: run "
                                "notebooks/03_extract_embeddings.ipynb with the same study parameters")
    return points.bot_behaviour(sentences.sentences, probes, data_dir, progress=progress)


#: Untrained networks drawn per learner for the floor's own spread (E1), from init seeds
#: :data:`INIT_SEED_BASE` on (far above any agent seed); a quick run draws :data:`QUICK_INITS`.
RANDOM_INITS, QUICK_INITS, INIT_SEED_BASE = 20, 2, 1_000_000_000


def init_seeds(cfg: StudyConfig) -> list[int]:
    """The init seeds of the random-initialisation distribution of ``cfg``."""
    count = QUICK_INITS if cfg.quick else RANDOM_INITS
    return list(range(INIT_SEED_BASE, INIT_SEED_BASE + count))


def load_random_inits(cfg: StudyConfig, sentences: SentenceSet, data_dir: str | os.PathLike | None = None,
                      compute: bool = False, progress: bool = False) -> dict[tuple[str, int, str], Embeddings]:
    """Every extraction point of :func:`init_seeds` untrained networks of each learner:
    {("<learner>-init", init seed, extraction): Embeddings}.

    Each is its first agent's architecture and vocabulary with weights drawn from the init seed
    (:func:`alignnb.agents.checkpoints.random_init`), saved under ``<data>/inits/<run key>/``. Untrained
    networks are free to draw: they place the trained agents and the seeds' own twins within
    the spread of the floor. With ``compute`` (notebook 03) missing sets are extracted.
    """
    probes = probe_set(cfg)
    firsts: dict[str, checkpoints.TrainedAgent] = {}
    for (learner, _), run in load_agents(cfg, data_dir).items():
        firsts.setdefault(learner, run)
    out: dict = {}
    todo = [(learner, run, s) for learner, run in firsts.items() for s in init_seeds(cfg)]
    for learner, run, s in tqdm(todo, desc="random initialisations", disable=not progress):
        folder = paths.data_dir(data_dir) / "inits" / run.path.name
        path = folder / f"init_{s}.pt"
        if compute:
            folder.mkdir(parents=True, exist_ok=True)
            checkpoints.random_init(run.path / "untrained.pt", s, path)
        elif not path.exists():
            raise FileNotFoundError(f"the random initialisations are not drawn yet ({path}): run "
                                    "notebooks/03_extract_embeddings.ipynb with the same study parameters")
        sets = _variants_of(path, sentences, probes, {"learner": f"{learner}-init", "seed": s, "trained": False},
                            data_dir, compute, False)
        out.update({(f"{learner}-init", s, name): emb for name, emb in sets.items() if not _zero_rows(emb)})
    return out
