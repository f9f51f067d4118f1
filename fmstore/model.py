"""The multi-field Factorization Machine and its exact serving form.

    y = w0 + sum_j w_j x_j + 1/2 sum_f [(sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2]

Each rating's features are its user's feature row plus its movie's feature row (features.py), so
the model keeps those rows as buffers and a batch is just (user row, item row) indices. Because
every feature is user-side or item-side, the score splits exactly (DESIGN.md):

    y = w0 + b_u + b_i + <p_u, q_i>,   p_u = sum_{j in U} v_j x_j,  q_i = sum_{j in I} v_j x_j

and b_u, b_i hold the linear terms plus the pairwise terms inside each side. With the `rated`
field (features.rated_rows: SVD++'s implicit feedback) a user's side also holds z_u = sum_j x_j y_j
over the movies they rated, so p_u = v_user + z_u and b_u gains its linear and pairwise terms; that
part is a sparse matrix product over all user rows (`rated_terms`). `side()` computes
(p, b) for a batch of rows; `forward` and `serving_form` both use it, so they agree by construction
and a test checks both against the textbook double loop.

The formulas themselves are the module's functions, one each, which the training engines and
the validation loop call too: `score` (w0 + b_u + b_i + <p, q>), `side_bias` (a side's linear
plus pairwise terms), `join_sides` (a side of two groups of features), `apply_link`,
`link_slope` and `predict` (the output link, its derivative, the clamped rating). They are the
torch twins of serving.py's NumPy `apply_link` and `predict`; numba_kernels.py has its own
inlined twins (`_score`, `_link`, `_pairwise`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fmstore.features import FeatureRows, RatedRows
from fmstore.serving import SIGMOID_SCALE  # the notebook's link, sigmoid(y) * 5.5; re-exported

# ---- the formulas ------------------------------------------------------------------------------


def score(w0, b_u: torch.Tensor, b_i: torch.Tensor, p: torch.Tensor, q: torch.Tensor):
    """The FM's raw score from its two sides: w0 + b_u + b_i + <p_u, q_i>, row by row."""
    return w0 + b_u + b_i + (p * q).sum(-1)


def side_bias(linear: torch.Tensor, vector: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """A side's bias: its linear terms sum_j w_j x_j plus its pairwise terms
    1/2 (|sum_j x_j v_j|^2 - sum_j x_j^2 |v_j|^2), given `vector` = sum_j x_j v_j and `squares` =
    sum_j x_j^2 |v_j|^2."""
    return linear + 0.5 * (vector.square().sum(-1) - squares)


def join_sides(first, second) -> tuple[torch.Tensor, torch.Tensor]:
    """One side made of two groups of features, each given as (vector, bias): the vectors add,
    and the bias gains the pairwise terms between the groups, <p_first, p_second> (the user id
    and the `rated` field)."""
    (p, b), (z, bz) = first, second
    return p + z, b + bz + (p * z).sum(-1)


def apply_link(y: torch.Tensor, link: str) -> torch.Tensor:
    """Raw score -> rating before clamping: identity, or the notebook's sigmoid(y) * 5.5
    (serving.apply_link)."""
    if link == "sigmoid":
        return torch.sigmoid(y) * SIGMOID_SCALE
    return y


def link_slope(pred: torch.Tensor, link: str):
    """d pred / dy at pred = apply_link(y): 1, or for the sigmoid pred (1 - pred / 5.5)."""
    if link == "sigmoid":
        return pred * (1 - pred / SIGMOID_SCALE)
    return 1.0


def predict(y: torch.Tensor, link: str, rating_range: tuple[float, float]) -> torch.Tensor:
    """Raw score -> rating: the link, then clamped to the rating scale (serving.predict)."""
    return apply_link(y, link).clamp(*rating_range)


# ---- the model ---------------------------------------------------------------------------------


@dataclass
class ServingForm:
    """Biased matrix factorisation equal to the FM: rating = link(w0 + b_u + b_i + <p_u, q_i>)."""

    item_vectors: np.ndarray  # float32 [n_items, k]  (q_i, movies.csv order)
    item_bias: np.ndarray  # float32 [n_items]     (b_i)
    user_vectors: np.ndarray  # float32 [n_users, k]  (p_u, vocabulary order)
    user_bias: np.ndarray  # float32 [n_users]     (b_u)
    w0: float
    # With the `rated` field: each movie's implicit vector y_j and weight w_j (movies.csv order;
    # zero for a movie without training ratings), from which a new user's side is built.
    rated_vectors: np.ndarray | None = None  # float32 [n_items, k]
    rated_bias: np.ndarray | None = None  # float32 [n_items]


class FactorizationMachine(nn.Module):
    """The multi-field FM (w0, w, v) over fixed user and item feature rows; a batch is (user row,
    item row) indices. `serving_form()` gives its exact biased-MF form (module docstring)."""

    def __init__(
        self,
        n_features: int,
        factors: int,
        users: FeatureRows,
        items: FeatureRows,
        *,
        link: str = "identity",
        rating_range: tuple[float, float] = (0.5, 5.0),
        init_std: float = 0.01,
        rated: RatedRows | None = None,
    ):
        """`rated`: the users' `rated` field (features.rated_rows), or None without it."""
        super().__init__()
        if link not in ("identity", "sigmoid"):
            raise ValueError(f"unknown link {link!r}")
        self.link, self.rating_range = link, rating_range
        self.w0 = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.zeros(n_features))
        self.v = nn.Parameter(torch.randn(n_features, factors) * init_std)
        self.register_buffer("user_index", torch.as_tensor(users.index))
        self.register_buffer("user_weight", torch.as_tensor(users.weight))
        self.register_buffer("item_index", torch.as_tensor(items.index))
        self.register_buffer("item_weight", torch.as_tensor(items.weight))
        self.has_rated = rated is not None
        if rated is not None:
            self.register_buffer("rated_indptr", torch.as_tensor(rated.indptr))
            self.register_buffer("rated_index", torch.as_tensor(rated.index))
            self.register_buffer("rated_weight", torch.as_tensor(rated.weight))
            self.register_buffer("rated_block", torch.as_tensor(rated.block))
            # (first feature, number of features) as ints: read every step without a device sync
            self.rated_span = tuple(int(x) for x in rated.block)
            self.register_buffer("rated_of_item", torch.as_tensor(rated.of_item))
        self._rated_cache: tuple | None = None
        # {field: (first feature, number of features)}, set by whoever knows the vocabulary
        # (train.loop.new_model): where a per-field regularisation applies (train.feature_reg)
        self.field_spans: dict[str, tuple[int, int]] = {}

    @property
    def factors(self) -> int:
        """k, the width of the factor vectors."""
        return self.v.shape[1]

    def side(self, index: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_j v_j x_j, sum_j w_j x_j + pairwise terms among these features) for each row."""
        vector, bias, _ = self.side_terms(index, weight)
        return vector, bias

    def side_terms(self, index: torch.Tensor, weight: torch.Tensor):
        """`side` plus the rows' squared weights sum_j (|x_j v_j|^2 + (x_j w_j)^2), which training
        uses as its L2 penalty so that the gathered rows are not gathered a second time."""
        vx = F.embedding(index, self.v) * weight.unsqueeze(-1)  # [n, F, k]
        wx = F.embedding(index, self.w.unsqueeze(-1)).squeeze(-1) * weight  # [n, F]
        vector = vx.sum(1)
        vx_sq = vx.square().sum((1, 2))
        if index.shape[1] == 1:  # one feature: no pairs (the common user side)
            bias = wx.sum(1)
        else:
            bias = side_bias(wx.sum(1), vector, vx_sq)
        return vector, bias, vx_sq + wx.square().sum(1)

    # ---- the `rated` field -------------------------------------------------------------------

    def rated_matrices(self):
        """(A, A*A, A^T, (A*A)^T) as sparse CSR tensors on the model's device: A is user rows x
        `rated` features with their weights x_j. Cached until the model moves."""
        device = self.v.device
        if self._rated_cache is None or self._rated_cache[0] != device:
            first, size = self.rated_span
            n_rows = len(self.rated_indptr) - 1
            rows = torch.repeat_interleave(
                torch.arange(n_rows, device=device), self.rated_indptr.diff()
            )
            cols, x = self.rated_index - first, self.rated_weight.to(self.v.dtype)
            by_user, by_feature = torch.stack([rows, cols]), torch.stack([cols, rows])

            def csr(at, values, shape):
                coo = torch.sparse_coo_tensor(at, values, shape, check_invariants=False)
                # torch warns that sparse CSR support is in beta; what is used here is tested
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    return coo.coalesce().to_sparse_csr()

            matrices = (
                csr(by_user, x, (n_rows, size)),
                csr(by_user, x * x, (n_rows, size)),
                csr(by_feature, x, (size, n_rows)),
                csr(by_feature, x * x, (size, n_rows)),
            )
            self._rated_cache = (device, matrices)
        return self._rated_cache[1]

    def rated_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For every user row: z = sum_j x_j y_j over the `rated` features and their own bias
        sum_j x_j w_j + 1/2 (|z|^2 - sum_j x_j^2 |y_j|^2)."""
        a, a2, _, _ = self.rated_matrices()
        first, size = self.rated_span
        y, w = self.v[first : first + size], self.w[first : first + size]
        z = a @ y
        sq = (a2 @ y.square().sum(1, keepdim=True)).squeeze(1)
        return z, side_bias((a @ w.unsqueeze(1)).squeeze(1), z, sq)

    def user_side(self, rows: torch.Tensor, rated=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_u, b_u) of user rows: their fixed features plus, with the `rated` field, its terms
        (`rated`: `rated_terms()` when the caller already has them)."""
        p, b = self.side(self.user_index[rows], self.user_weight[rows])
        if not self.has_rated:
            return p, b
        z, bz = self.rated_terms() if rated is None else rated
        return join_sides((p, b), (z[rows], bz[rows]))

    def raw_score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """w0 + b_u + b_i + <p_u, q_i>, before the output link."""
        p, b_u = self.user_side(users)
        q, b_i = self.side(self.item_index[items], self.item_weight[items])
        return score(self.w0, b_u, b_i, p, q)

    def apply_link(self, y: torch.Tensor) -> torch.Tensor:
        """Raw score -> rating before clamping, by this model's link (module's `apply_link`)."""
        return apply_link(y, self.link)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Training output: the linked score, not clamped (clamping would stop the gradient)."""
        return self.apply_link(self.raw_score(users, items))

    @torch.no_grad()
    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Rating prediction: linked score clamped to the rating scale."""
        return predict(self.raw_score(users, items), self.link, self.rating_range)

    @torch.no_grad()
    def sides(self, which: str, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """(vector, bias) of every user row ("user", the unseen-user padding row included, last)
        or every movie ("item"), computed a chunk of rows at a time."""
        n_rows = len(self.user_index if which == "user" else self.item_index)
        vectors = torch.empty(n_rows, self.factors, dtype=self.v.dtype, device=self.v.device)
        biases = torch.empty(n_rows, dtype=self.v.dtype, device=self.v.device)
        rated = self.rated_terms() if which == "user" and self.has_rated else None
        for s in range(0, n_rows, chunk):
            rows = torch.arange(s, min(s + chunk, n_rows), device=self.v.device)
            if which == "user":
                vectors[rows], biases[rows] = self.user_side(rows, rated)
            else:
                vectors[rows], biases[rows] = self.side(
                    self.item_index[rows], self.item_weight[rows]
                )
        return vectors, biases

    @torch.no_grad()
    def serving_form(self, chunk: int = 8192) -> ServingForm:
        """(q_i, b_i) for every movie and (p_u, b_u) for every known user (padding row dropped)."""
        q, b_i = self.sides("item", chunk)
        p, b_u = self.sides("user", chunk)

        def host(t: torch.Tensor) -> np.ndarray:
            return t.float().cpu().numpy()

        form = ServingForm(
            host(q), host(b_i), host(p[:-1]), host(b_u[:-1]), float(self.w0.detach())
        )
        if self.has_rated:
            known = self.rated_of_item >= 0
            feature = self.rated_of_item.clamp(min=0)
            form.rated_vectors = host(self.v[feature] * known[:, None])
            form.rated_bias = host(self.w[feature] * known)
        return form
