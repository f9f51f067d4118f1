"""Row-wise Adam with catch-up: dense Adam's result, computed only on the rows a batch touches.

Dense Adam (torch.optim.Adam, no weight decay) moves every parameter at every step: a row with
zero gradient still takes  -lr_t c_t m / sqrt(s)  with m, s decaying by b1, b2, where
c_t = sqrt(1 - b2^t) / (1 - b1^t). Plain lazy Adam skips those steps and so learns something
else. `LazyAdam` instead lets a row remember the step it was last updated (`last`); when it is
next touched (or at `catch_up_all`), the missed steps are applied at once:

    v -= drift[t - last] * m / (sqrt(s) + eps),  m *= b1^(t - last),  s *= b2^(t - last)

drift[d] = sum_{j=1..d} lr c r^j over the missed steps (r = b1 / sqrt(b2)), kept for every lag d
up to CATCH_UP_EVERY. It ignores eps inside the missed steps (exact when sqrt(s) >> eps), so what
the model learns is dense Adam's up to that.

Both training engines keep their Adam state here: the torch engine through `dense_update` (every
row each step, so no catch-up is needed), the numba engine by reading and writing these tensors'
memory in place, catching rows up as above.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fmstore.model import FactorizationMachine

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# Every this many steps all rows are caught up (a dense pass), which bounds the lag a row can
# have and so the length of the catch-up table.
CATCH_UP_EVERY = 256


class LazyAdam:
    """Adam state for v (rows), w and w0, updated only where a batch has gradients."""

    def __init__(
        self, model: FactorizationMachine, lr: float, betas=ADAM_BETAS, eps: float = ADAM_EPS
    ):
        self.model, self.lr, self.eps = model, lr, eps
        self.b1, self.b2 = betas
        v, w = model.v.data, model.w.data
        self.mv, self.sv = torch.zeros_like(v), torch.zeros_like(v)
        self.mw, self.sw = torch.zeros_like(w), torch.zeros_like(w)
        self.m0, self.s0 = torch.zeros_like(model.w0.data), torch.zeros_like(model.w0.data)
        self.last = torch.zeros(v.shape[0], dtype=torch.int32, device=v.device)
        self.t = 0  # steps done
        # drift[d]: catch-up factor for a row last updated d steps ago (as of the end of step t)
        self.drift = np.zeros(CATCH_UP_EVERY + 1, np.float64)
        self._drift_tensor = None
        self._r = self.b1 / math.sqrt(self.b2)
        self._powers = self._r ** np.arange(CATCH_UP_EVERY + 1, dtype=np.float64)

    # -- per step bookkeeping ---------------------------------------------------------------
    def begin_step(self) -> tuple[int, float, float]:
        """Start step t+1; returns (t, step size lr/bc1, sqrt(bc2)) of that step."""
        self.t += 1
        t = self.t
        bc1, bc2 = 1 - self.b1**t, 1 - self.b2**t
        return t, self.lr / bc1, math.sqrt(bc2)

    def end_step(self) -> None:
        """Step t is done: a row not updated in it has missed one more step."""
        t = self.t
        c = math.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        d = self.drift
        d[1:] = d[:-1] + self.lr * c * self._powers[1:]
        d[0] = 0.0
        self._drift_tensor = None

    def drift_tensor(self) -> torch.Tensor:
        """The catch-up table `drift` as a float32 tensor on the model's device (cached per step)."""
        if self._drift_tensor is None:
            drift = torch.as_tensor(self.drift, dtype=torch.float32)
            self._drift_tensor = drift.to(self.last.device)
        return self._drift_tensor

    # -- dense catch-up -----------------------------------------------------------------------
    @torch.no_grad()
    def catch_up_all(self, chunk: int = 1 << 16) -> None:
        """Bring every row up to the end of step t (before evaluating, saving, or every
        CATCH_UP_EVERY steps so that no lag exceeds the drift table)."""
        v, w = self.model.v.data, self.model.w.data
        for s in range(0, v.shape[0], chunk):
            rows = slice(s, s + chunk)
            lag = (self.t - self.last[rows]).long()
            if lag.numel() == 0 or int(lag.max()) == 0:
                continue
            if int(lag.max()) > CATCH_UP_EVERY:
                raise AssertionError("a row lagged more steps than the catch-up table holds")
            self._catch_up(
                lag, v[rows], self.mv[rows], self.sv[rows], w[rows], self.mw[rows], self.sw[rows]
            )
        self.last.fill_(self.t)

    def _catch_up(self, lag, v, mv, sv, w, mw, sw) -> None:
        """In place on the given (gathered or sliced) rows; lag = steps missed per row."""
        drift = self.drift_tensor()[lag]
        v.sub_(drift[:, None] * mv / (sv.sqrt() + self.eps))
        w.sub_(drift * mw / (sw.sqrt() + self.eps))
        lagf = lag.to(v.dtype)
        d1, d2 = torch.pow(self.b1, lagf), torch.pow(self.b2, lagf)
        mv.mul_(d1[:, None])
        sv.mul_(d2[:, None])
        mw.mul_(d1)
        sw.mul_(d2)

    # -- every row at once (torch engine) ----------------------------------------------------------
    @torch.no_grad()
    def dense_update(self, grad_v, grad_w, grad_w0, step_size: float, bc2_sqrt: float) -> None:
        """One Adam step of every row (plain dense Adam), in place. Every row must be caught up
        to the previous step (catch_up_all, or only dense steps since). No host synchronisation."""
        b1, b2, eps = self.b1, self.b2, self.eps
        model = self.model
        steps = (
            (model.v.data, self.mv, self.sv, grad_v),
            (model.w.data, self.mw, self.sw, grad_w),
            (model.w0.data, self.m0, self.s0, grad_w0),
        )
        for p, m, s, g in steps:
            m.mul_(b1).add_(g, alpha=1 - b1)
            s.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, s.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
        self.last.fill_(self.t)
