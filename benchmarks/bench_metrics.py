"""precision@k: time and peak memory of alignnb's chunked exact kNN, beside (a) a dense-mask
implementation of the same definition and (b) the floor: the two n x n similarity products alone.

Each measurement runs in a fresh process that first runs the method on a tiny input (so the
pages of torch's code are not counted); memory is the process's peak RSS minus its RSS after
the inputs were created (so it counts what the method adds beyond its inputs). The dense method
is skipped where its n x n arrays would not fit in this machine's memory.

The study's precision@k counts a tie for the k-th place fractionally (``ties="fractional"``);
the integer top-k path (``ties="index"``) is timed beside it, to show what that costs.

Goals: within 1.3x of the floor's time; at least 10x less memory than (a) beyond the
inputs; n = 50k at d = 4096 runs on a 24 GiB machine.

    .venv/bin/python benchmarks/bench_metrics.py                   # n = 1k, 10k, 50k; d = 1024, 4096
    .venv/bin/python benchmarks/bench_metrics.py 1000,10000 1024   # a subset
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time

GIB = 1024**3


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _run(method: str, A, B, k: int) -> float:
    import torch

    from alignnb.measure import metrics

    n = len(A)
    if method == "alignnb":
        return metrics.precision_at_k(A, B, k)
    if method == "alignnb-index":
        return metrics.precision_at_k(A, B, k, ties="index")
    if method == "floor":
        for X in (torch.from_numpy(A), torch.from_numpy(B)):
            Y = X @ X.T
            del Y
        return float("nan")
    # dense masks, the definition written out (platonic-rep's mutual_knn)
    def knn(X):
        U = torch.nn.functional.normalize(torch.from_numpy(X), dim=1)
        S = U @ U.T
        S.fill_diagonal_(-1e8)
        return S.argsort(dim=1, descending=True)[:, :k]

    ka, kb = knn(A), knn(B)
    rows = torch.arange(n)[:, None]
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, ka] = 1
    mb[rows, kb] = 1
    return float(((ma * mb).sum(1).double() / k).mean())  # float64 mean, as alignnb


def _work(method: str, n: int, d: int, k: int, out) -> None:
    import numpy as np

    warm = np.random.default_rng(1).standard_normal((64, 8), dtype=np.float32)
    _run(method, warm, warm, 5)  # page in torch's kernels, so their code is not counted as memory
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, d), dtype=np.float32)
    B = rng.standard_normal((n, d), dtype=np.float32)
    B += A  # in place: no temporary that would raise the peak before the measurement starts
    base = _rss()
    t0 = time.perf_counter()
    value = _run(method, A, B, k)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.put((seconds, max(0, peak - base), value))


def measure(method: str, n: int, d: int, k: int = 15):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_work, args=(method, n, d, k, q))
    p.start()
    p.join()
    return q.get() if p.exitcode == 0 else None


def main(ns=(1000, 10_000, 50_000), ds=(1024, 4096), k: int = 15) -> None:
    total = 24 * GIB
    print(f"precision@{k}; time in s, memory beyond the inputs in MiB (peak RSS)")
    print(f"{'n':>7s}{'d':>6s} | {'floor s':>8s} {'alignnb s':>9s} {'ratio':>6s} | {'index s':>8s} "
          f"{'frac/idx':>8s} | {'dense s':>8s} {'dense MiB':>10s} {'alignnb MiB':>11s} {'mem ratio':>9s}")
    for n in ns:
        for d in ds:
            floor = measure("floor", n, d, k)
            ours = measure("alignnb", n, d, k)
            index = measure("alignnb-index", n, d, k)
            dense_need = 4 * n * n * 4  # similarity + argsort + two masks, float32/int64-ish
            dense = measure("dense", n, d, k) if dense_need < 0.6 * total else None
            def f(v, w=8, p=2):
                return f"{v:{w}.{p}f}" if v is not None else f"{'n/a':>{w}s}"

            ratio = ours[0] / floor[0] if (ours and floor) else None
            frac_idx = ours[0] / index[0] if (ours and index) else None
            if ours and index:  # random data have no exact ties, but a few rows have two similarities
                # within float32 rounding (TIE_TOLERANCE) at the k-th place, which count fractionally
                assert abs(ours[2] - index[2]) < 1e-3, "fractional and index ties differ by more than near-ties can"
            mem_ratio = dense[1] / max(ours[1], 1) if (dense and ours) else None
            if dense and index:
                assert abs(dense[2] - index[2]) < 1e-9, "dense and chunked precision differ"
            print(f"{n:7d}{d:6d} | {f(floor and floor[0])} {f(ours and ours[0], 9)} {f(ratio, 6)} | "
                  f"{f(index and index[0])} {f(frac_idx)} | {f(dense and dense[0])} {f(dense and dense[1] / 2**20, 10, 0)} {f(ours and ours[1] / 2**20, 11, 0)} "
                  f"{f(mem_ratio, 9, 1)}", flush=True)


if __name__ == "__main__":
    ns = tuple(int(x) for x in sys.argv[1].split(",")) if len(sys.argv) > 1 else (1000, 10_000, 50_000)
    ds = tuple(int(x) for x in sys.argv[2].split(",")) if len(sys.argv) > 2 else (1024, 4096)
    main(ns, ds)
