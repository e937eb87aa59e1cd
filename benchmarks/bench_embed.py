"""Sentence embedding: sentences/s per model and pooling, and first load vs cached load time.

For each offline language model, measured side by side in one run:
  first load   the model's first load in a fresh cache (GGUF: dequantization + save as safetensors)
  cached load  the second load (the dequantized safetensors)
  sentences/s  embedding the study's 560 sentences, all layers, per pooling
  cache hit    reading the finished embedding set back from disk

    .venv/bin/python benchmarks/bench_embed.py
"""

from __future__ import annotations

import tempfile
import time

from alignnb.collect import levels
from alignnb.extract import encoders
from alignnb.collect import instructions
from alignnb.extract import models


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sentences = instructions.build_sentence_set(levels.DEFAULT_LEVELS, 0, 2000, data_dir=None, progress=False)
        print(f"{len(sentences)} sentences; fresh cache in {tmp}")
        print(f"{'model':14s}{'first load s':>13s}{'cached load s':>14s}{'ratio':>7s} | {'pooling':>8s}{'sent/s':>8s}"
              f"{'cache hit s':>12s}")
        for key in ("minilm-l6", "smollm2-135m", "gemma3-270m"):
            spec = models.get_spec(key)
            try:
                t0 = time.perf_counter()
                encoders.load_hf(spec, "cpu", tmp)
                first = time.perf_counter() - t0
            except models.ModelUnavailable as exc:
                print(f"{key:14s} unavailable: {exc}")
                continue
            t0 = time.perf_counter()
            encoders.load_hf(spec, "cpu", tmp)
            cached = time.perf_counter() - t0
            for i, pooling in enumerate(("mean", "last")):
                t0 = time.perf_counter()
                encoders.embed(spec, sentences, pooling, "all", data_dir=tmp, progress=False)
                rate = len(sentences) / (time.perf_counter() - t0)  # includes one cached load
                t0 = time.perf_counter()
                encoders.embed(spec, sentences, pooling, "all", data_dir=tmp, progress=False)
                hit = time.perf_counter() - t0
                head = f"{key:14s}{first:13.1f}{cached:14.1f}{first / cached:7.1f}" if i == 0 else " " * 48
                print(f"{head} | {pooling:>8s}{rate:8.0f}{hit:12.3f}")


if __name__ == "__main__":
    main()
