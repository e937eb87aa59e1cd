"""The CPU kernels are part of the recipe: training gives the same bits on another CPU.

Another CPU is stood in for by capping what this one may use: MKL's instruction set
(``MKL_ENABLE_INSTRUCTIONS=AVX2``), ATen's vector capability and oneDNN's ISA, as on a CPU
without AVX-512. Each training runs in a fresh process, as the study's engines run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alignnb.core import numerics

CHILD = r"""
import hashlib, json, sys, tempfile
from dataclasses import replace
import alignnb  # sets the pinned kernels before torch starts
import torch
from alignnb.agents.recipes import AgentConfig, RecurrentConfig, TrainConfig
from alignnb.agents.train import train_agent
from alignnb.collect import demos
data = demos.load_demos(sys.argv[1])
ac = (AgentConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, cell_dim=8, channels=16, d_hidden=32, memory_layers=1)
      if sys.argv[2] == "transformer" else RecurrentConfig(d_model=32, cell_dim=8, channels=16, d_hidden=32))
tc = TrainConfig(steps=25, batch_episodes=16, warmup=5, val_every=25, check_every=0, goal_checks=0,
                 checkpoint_every=0, numerics=sys.argv[3])
with tempfile.TemporaryDirectory() as d:
    run = train_agent(data, ac, tc, 0, data_dir=d, final_eval_episodes=1, progress=False)
    h = hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(run.agent.state_dict().items())))
print(json.dumps({"weights": h.hexdigest(), "capability": torch.backends.cpu.get_cpu_capability(),
                  "recorded": run.meta["numerics"]}))
"""

#: A CPU without AVX-512, as far as MKL, ATen and oneDNN can tell.
AVX2_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
KERNEL_VARIABLES = (*numerics.PINNED, "MKL_ENABLE_INSTRUCTIONS", numerics.ENV)


def _train(demos_path: str, learner: str, numerics_kind: str, cpu: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    env.update(cpu, OMP_NUM_THREADS="1", **{numerics.ENV: numerics_kind})
    out = subprocess.run([sys.executable, "-c", CHILD, demos_path, learner, numerics_kind], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("learner", ["transformer", "gru-film-lstm"])
def test_pinned_training_gives_the_same_weights_on_a_cpu_without_avx512(small_demos, learner):
    here = _train(str(small_demos.path), learner, "avx2", {})
    other = _train(str(small_demos.path), learner, "avx2", AVX2_CPU)
    assert here["capability"] == other["capability"] == "AVX2" and here["recorded"] == "avx2"
    assert here["weights"] == other["weights"]
    if _native_capability() == "AVX512":  # the stand-in CPU really differs here: unpinned, the bits move
        native = _train(str(small_demos.path), learner, "native", {})
        capped = _train(str(small_demos.path), learner, "native", AVX2_CPU)
        assert native["recorded"] == "native" and native["weights"] != capped["weights"]


def _native_capability() -> str:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def test_a_process_whose_torch_started_unpinned_refuses_to_train():
    code = ("import torch; torch.ones(64) + 1\n"  # torch picks its kernels before alignnb can pin them
            "import alignnb\nfrom alignnb.core import numerics\n"
            "try:\n    numerics.check('avx2')\nexcept numerics.NumericsNotPinned as e:\n    print('refused:', e)\n")
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if _native_capability() == "AVX2":
        pytest.skip("this CPU's own choice is AVX2 already")
    assert "refused:" in out.stdout and "import alignnb before torch" in out.stdout, out.stdout + out.stderr


def test_the_pin_and_its_opt_out():
    env: dict[str, str] = {}
    assert numerics.pin(env) == "avx2" and env == numerics.PINNED
    native = {numerics.ENV: "native"}
    assert numerics.pin(native) == "native" and native == {numerics.ENV: "native"}
    with pytest.raises(ValueError, match="ALIGNNB_NUMERICS"):
        numerics.chosen({numerics.ENV: "fast"})
    assert numerics.active() == "avx2"  # the tests themselves run pinned (conftest imports alignnb first)


#: sha256 of the weights after the 25 pinned steps of ``CHILD`` on ``small_demos``, recorded on
#: 2026-12-03 on an AMD EPYC without AVX-512 (torch's own capability there: AVX2), torch 2.13.0.
#: Another CPU that gives other bits fails here: this compares real CPUs, not stand-ins. (The
#: study's own check of the same kind: the second learner's seed-0 run, trained on an AVX-512
#: machine, gave the same four test rates when trained again on this one; README, Speed.)
RECORDED_WEIGHTS = {
    "transformer": "115dce39582f780b37acb4c3b70ea273fcfa4b831decbe452e198363a18a5338",
    "gru-film-lstm": "d15fdf2859efd9149c196d73cf45db27bf44277db43a53cd43b668283fd79d65",
}


@pytest.mark.parametrize("learner", ["transformer", "gru-film-lstm"])
def test_pinned_training_gives_the_recorded_weights_on_any_x86_cpu(small_demos, learner):
    run = _train(str(small_demos.path), learner, "avx2", {})
    assert run["recorded"] == "avx2"
    assert run["weights"] == RECORDED_WEIGHTS[learner], (
        f"the pinned training gave other weights on this CPU ({run['capability']}); the recorded ones "
        f"come from a CPU without AVX-512 (or a pinned package version changed: torch, numpy, minigrid): got {run['weights']}")
