"""The FM's forward pass equals the textbook formula, and its serving form equals the FM."""

import itertools

import numpy as np
import torch

from fmstore.features import FeatureRows
from fmstore.model import FactorizationMachine


def random_fm(link="identity", seed=0):
    g = torch.Generator().manual_seed(seed)
    n_features, k = 12, 5
    # user rows: one feature each (+ trailing padding row); item rows: 3 weighted features each
    users = FeatureRows(
        np.array([[1], [2], [3], [0]]), np.array([[1.0], [1.0], [1.0], [0.0]], np.float32)
    )
    items = FeatureRows(
        np.array([[4, 7, 10], [5, 8, 0], [6, 7, 9], [0, 8, 11]]),
        np.array([[1.0, 0.5, 1.0], [1.0, 1.0, 0.0], [1.0, 0.25, 1.0], [0.0, 1.0, 1.0]], np.float32),
    )
    fm = FactorizationMachine(n_features, k, users, items, link=link)
    with torch.no_grad():
        fm.w0.fill_(0.3)
        fm.w.copy_(torch.randn(n_features, generator=g))
        fm.v.copy_(torch.randn(n_features, k, generator=g))
    return fm, users, items


def textbook(fm, x: np.ndarray) -> float:
    """y = w0 + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l, by a double loop."""
    w0, w, v = fm.w0.item(), fm.w.detach().numpy(), fm.v.detach().numpy()
    y = w0 + float(w @ x)
    for j, l in itertools.combinations(range(len(x)), 2):
        y += float(v[j] @ v[l]) * x[j] * x[l]
    return y


def dense_x(users, items, u, i, n_features):
    x = np.zeros(n_features)
    for rows, r in ((users, u), (items, i)):
        for idx, wt in zip(rows.index[r], rows.weight[r]):
            x[idx] += wt
    x[0] = 0.0  # padding
    return x


def test_forward_equals_double_loop():
    fm, users, items = random_fm()
    for u in range(4):  # including the padding row (an unseen user)
        for i in range(4):
            expected = textbook(fm, dense_x(users, items, u, i, 12))
            got = fm.raw_score(torch.tensor([u]), torch.tensor([i])).item()
            assert abs(got - expected) < 1e-4, (u, i, got, expected)


def test_serving_form_reproduces_forward_exactly():
    for link in ("identity", "sigmoid"):
        fm, _, _ = random_fm(link)
        form = fm.serving_form()
        assert form.user_vectors.shape == (3, 5) and form.item_vectors.shape == (4, 5)
        u, i = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
        via_form = (
            form.w0
            + form.user_bias[u]
            + form.item_bias[i]
            + np.einsum("uk,ik->ui", form.user_vectors, form.item_vectors)
        )
        direct = (
            fm.raw_score(torch.as_tensor(u.ravel()), torch.as_tensor(i.ravel()))
            .detach()
            .numpy()
            .reshape(3, 4)
        )
        np.testing.assert_allclose(via_form, direct, rtol=1e-5, atol=1e-5)


def test_links_and_clamping():
    fm, _, _ = random_fm("sigmoid")
    y = fm.raw_score(torch.arange(3), torch.arange(3))
    torch.testing.assert_close(fm(torch.arange(3), torch.arange(3)), torch.sigmoid(y) * 5.5)
    pred = fm.predict(torch.arange(3), torch.arange(3))
    assert float(pred.min()) >= 0.5 and float(pred.max()) <= 5.0
