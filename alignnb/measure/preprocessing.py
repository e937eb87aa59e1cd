"""Feature hygiene and deconfounded similarity.

Hygiene        Feature preprocessing before any metric: raw, column-centred, per-dimension
               z-scored, or the Platonic Representation Hypothesis code's outlier clipping at
               the 0.95 quantile of |x| followed by L2 row normalisation (Huh et al. 2024,
               github.com/minyoungg/platonic-rep, ``metrics.remove_outliers`` and
               ``measure_alignment.prepare_features`` / ``compute_score``).
Deconfounding  Cui, Kumar, Marttinen & Kaski, "Deconfounded representation similarity for
               comparison of neural networks" (arXiv 2202.00095; NeurIPS 2022): each space's
               similarity matrix is regressed, entry by entry, on the similarity matrix of a
               confounder (here the sentences' lexical bag-of-words vectors); RSA / CKA are then
               computed on the residual matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from alignnb.measure import nulls
from alignnb.measure.checks import as_matrix, check_pair


# --------------------------------------------------------------------------------------
# feature hygiene
# --------------------------------------------------------------------------------------

#: Feature preprocessing variants of :func:`preprocess`.
HYGIENES = ("raw", "centred", "zscore", "clip95")


def preprocess(X: Any, hygiene: str = "raw", q: float = 0.95, exact: bool = False) -> np.ndarray:
    """Preprocess an embedding matrix [n, d] before a metric.

    - ``"raw"``: X unchanged (the same array object when X is a numpy array).
    - ``"centred"``: X minus its column means.
    - ``"zscore"``: per dimension (x - mean) / std (population std); a constant dimension becomes 0.
    - ``"clip95"``: the Platonic Representation Hypothesis code's preprocessing (minyoungg/
      platonic-rep: ``metrics.remove_outliers`` called by ``measure_alignment.prepare_features``
      with q = 0.95, then ``F.normalize(x, p=2, dim=-1)`` in ``compute_score``):

        1. one threshold c for the whole matrix. With ``exact=False`` (the default of
           ``measure_alignment.py``, whose ``--precise`` flag is off by default):
           c = mean over rows of the q-quantile (linear interpolation, ``torch.quantile``) of
           that row's |x|. With ``exact=True`` (``--precise``, and ``platonic.Alignment.score``):
           c = sort(|X|.ravel())[int(q * X.size)].
        2. every entry clamped to [-c, c];
        3. every row divided by max(||row||_2, 1e-12).

      (Their feature files hold [n, layers, d]; the row quantile there runs over all layers of a
      sample. Here X is one layer [n, d].)
    """
    if hygiene not in HYGIENES:
        raise ValueError(f"hygiene must be one of {HYGIENES}, got {hygiene!r}")
    if hygiene == "raw":
        as_matrix(X)
        return X if isinstance(X, np.ndarray) else np.asarray(X)
    Xf = as_matrix(X).astype(np.float64)
    if hygiene == "centred":
        out = Xf - Xf.mean(0)
    elif hygiene == "zscore":
        centred = Xf - Xf.mean(0)
        std = Xf.std(0)
        out = np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    else:
        if not 0.0 < q <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q}")
        if q == 1.0:  # remove_outliers returns the features unchanged
            clipped = Xf
        else:
            absX = np.abs(Xf)
            c = np.sort(absX.ravel())[int(q * absX.size)] if exact else np.quantile(absX, q, axis=1).mean()
            clipped = np.clip(Xf, -c, c)
        norms = np.maximum(np.linalg.norm(clipped, axis=1, keepdims=True), 1e-12)
        out = clipped / norms
    return out.astype(np.float64 if np.asarray(X).dtype == np.float64 else np.float32)


# --------------------------------------------------------------------------------------
# deconfounded RSA and CKA (Cui et al. 2022)
# --------------------------------------------------------------------------------------


def _check_triple(A, B, C) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A, B = check_pair(A, B)
    C = as_matrix(C, "C")
    if len(C) != len(A):
        raise ValueError(f"the confounder C has {len(C)} rows but A and B have {len(A)}: all three must embed "
                         f"the same sentences in the same order")
    return A.astype(np.float64), B.astype(np.float64), C.astype(np.float64)


def _cosine_similarity(X: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} zero vector(s): cosine similarity is undefined")
    U = X / norms
    return U @ U.T


def _residualise(y: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
    """Residuals of the least-squares fit y ~ b0 + b1 x."""
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        raise ValueError(f"the confounder's similarities are all equal: nothing to regress {name} on")
    yc = y - y.mean()
    return yc - (float(xc @ yc) / sxx) * xc


def rsa_residual_ranks(A: Any, B: Any, C: Any) -> tuple[np.ndarray, np.ndarray]:
    """The average ranks of :func:`deconfounded_rsa`'s two residual vectors, as symmetric [n, n]
    matrices (upper-triangle entries ranked, mirrored, diagonal 0). Their Pearson correlation over
    the upper triangle is deconfounded RSA; relabelling B's matrix by a permutation only moves the
    same ranks, so a permutation null needs no re-ranking."""
    A, B, C = _check_triple(A, B, C)
    n = len(A)
    iu = np.triu_indices(n, 1)
    sc = _cosine_similarity(C, "C")[iu]
    out = []
    for X, name in ((A, "A"), (B, "B")):
        r = _residualise(_cosine_similarity(X, name)[iu], sc, name)
        if np.ptp(r) == 0:
            raise ValueError("a space's similarities are fully explained by the confounder's: deconfounded RSA is "
                             "undefined")
        M = np.zeros((n, n))
        M[iu] = rankdata(r)
        out.append(M + M.T)
    return out[0], out[1]


def deconfounded_rsa(A: Any, B: Any, C: Any) -> float:
    """RSA of A and B after regressing the confounder C's similarity structure out of each.

    Following Cui et al. (2022): with S_X the cosine-similarity matrix of X, the upper-triangle
    (off-diagonal) entries of S_A and of S_B are each regressed by least squares, with an
    intercept, on those of S_C; the result is the Spearman correlation of the two residual
    vectors (RSA as in :func:`alignnb.measure.metrics.rsa`, which correlates the same entries). The
    diagonal is left out because it is constant (1) for cosine similarity and RSA never uses it.
    Memory O(n^2).
    """
    A, B, C = _check_triple(A, B, C)
    iu = np.triu_indices(len(A), 1)
    sc = _cosine_similarity(C, "C")[iu]
    ra = _residualise(_cosine_similarity(A, "A")[iu], sc, "A")
    rb = _residualise(_cosine_similarity(B, "B")[iu], sc, "B")
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        raise ValueError("a space's similarities are fully explained by the confounder's: deconfounded RSA is "
                         "undefined")
    return float(spearmanr(ra, rb).statistic)


def _centred_gram(X: np.ndarray) -> np.ndarray:
    X = X - X.mean(0)
    norm = np.linalg.norm(X)
    if norm == 0:
        raise ValueError("all rows are identical: a Gram matrix of centred features is zero")
    X = X / norm
    return X @ X.T


def _double_centre(K: np.ndarray) -> np.ndarray:
    return K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()


def deconfounded_cka(A: Any, B: Any, C: Any, psd: bool = False, diagonal: bool = True) -> float:
    """Deconfounded linear CKA (dCKA) of A and B with confounder space C (Cui et al. 2022).

    Follows the reference implementation by the paper's second author (``DeltaCKA`` in
    github.com/ykumards/simtorch, ``simtorch/similarity/delta_cka.py``), as the paper's text
    could not be consulted here beyond its abstract:

    1. each of A, B, C is column-centred and scaled to unit Frobenius norm; K_X = X X^T;
    2. the entries of K_A (and of K_B) are regressed by least squares, with an intercept, on
       the entries of K_C (all n^2 entries; ``diagonal=False`` fits on the off-diagonal ones
       only and then removes the same fit from every entry); R_X = K_X - b0 - b1 K_C;
    3. optionally (``psd=True``, simtorch's ``remove_negative_eig``) the negative eigenvalues
       of each residual matrix are set to 0;
    4. dCKA = <H R_A H, H R_B H>_F / (||H R_A H||_F ||H R_B H||_F), H = I - 11^T / n.

    Without the regression (b0 = b1 = 0) this is linear CKA. Memory O(n^2).
    """
    RA, RB = cka_residuals(A, B, C, psd, diagonal)
    return float((RA * RB).sum() / (np.linalg.norm(RA) * np.linalg.norm(RB)))


def cka_residuals(A: Any, B: Any, C: Any, psd: bool = False, diagonal: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The double-centred residual Gram matrices H R_A H and H R_B H of :func:`deconfounded_cka`
    (steps 1-3 there); dCKA is their normalised inner product. A permutation null relabels
    R_B's rows and columns together, which keeps it double-centred and its norm fixed."""
    A, B, C = _check_triple(A, B, C)
    KC = _centred_gram(C)
    n = len(KC)
    mask = np.ones((n, n), dtype=bool) if diagonal else ~np.eye(n, dtype=bool)
    x = KC[mask]
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        raise ValueError("the confounder's Gram entries are all equal: nothing to regress on")
    residuals = []
    for K in (_centred_gram(A), _centred_gram(B)):
        y = K[mask]
        slope = float(xc @ (y - y.mean())) / sxx
        intercept = y.mean() - slope * x.mean()
        R = K - intercept - slope * KC
        if psd:
            vals, vecs = np.linalg.eigh((R + R.T) / 2)
            R = (vecs * np.clip(vals, 0, None)) @ vecs.T
        residuals.append(_double_centre(R))
    RA, RB = residuals
    na, nb = np.linalg.norm(RA), np.linalg.norm(RB)
    if na == 0 or nb == 0:
        raise ValueError("a space's Gram matrix is fully explained by the confounder's: dCKA is undefined")
    return RA, RB


def deconfounded_nulls(A: np.ndarray, B: np.ndarray, C: np.ndarray, n_perm: int = 200,
                       seed: int = 0) -> dict[str, float]:
    """Permutation nulls of deconfounded CKA and RSA (A and B with the confounder C regressed out):
    B's residual matrix relabelled by each permutation (rows and columns together), so the
    confounder's fit is not redone and the same residuals are compared under broken sentence
    correspondence. Returns, for cka_deconfounded and rsa_deconfounded, the one-sided p (``_p``) and
    the null's 2.5 / 97.5 percentiles (``_null_low``, ``_null_high``); NaN where the score is undefined."""
    out = {}
    iu = np.triu_indices(len(A), 1)
    try:
        RA, RB = cka_residuals(A, B, C)
        norm = float(np.linalg.norm(RA) * np.linalg.norm(RB))
        res = nulls.permutation_test(lambda p: float((RA * RB[np.ix_(p, p)]).sum()) / norm,
                                     float((RA * RB).sum()) / norm, len(A), n_perm, seed)
        out.update(cka_deconfounded_p=float(res.p_value), cka_deconfounded_null_low=float(res.null_low),
                   cka_deconfounded_null_high=float(res.null_high))
    except ValueError:
        out.update(cka_deconfounded_p=np.nan, cka_deconfounded_null_low=np.nan, cka_deconfounded_null_high=np.nan)
    try:
        ranks_a, ranks_b = rsa_residual_ranks(A, B, C)
        a = ranks_a[iu] - ranks_a[iu].mean()
        a /= np.linalg.norm(a)

        def corr(p: np.ndarray) -> float:
            b = ranks_b[np.ix_(p, p)][iu]
            b = b - b.mean()
            return float(a @ b / np.linalg.norm(b))

        res = nulls.permutation_test(corr, corr(np.arange(len(A))), len(A), n_perm, seed)
        out.update(rsa_deconfounded_p=float(res.p_value), rsa_deconfounded_null_low=float(res.null_low),
                   rsa_deconfounded_null_high=float(res.null_high))
    except ValueError:
        out.update(rsa_deconfounded_p=np.nan, rsa_deconfounded_null_low=np.nan, rsa_deconfounded_null_high=np.nan)
    return out
