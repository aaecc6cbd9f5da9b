"""Meta-Curvature (Park & Oliva, NeurIPS 2019): a meta-learned preconditioner of the inner gradient.

Inner loop, per task i:  theta_i = theta - alpha * M(grad_theta L_support_i(theta))
Outer loop:              (theta, M) <- Adam(grad_(theta, M) mean_i L_query_i(theta_i))
Two forms of M, per parameter tensor:

- ``kronecker`` (the paper's): for a weight G [out, in], M(G) = M_out G M_in; for a
  bias g [out], M(g) = M_out g; for a convolution kernel G [out, in, k] (spatial
  dimensions flattened) a third factor M_k acts on k. Factors start at the identity.
- ``lowrank`` (the seed's): on the flattened gradient, M(g) = (I + U V^T) g with
  U, V [numel, rank]; U starts small and random, V at zero, so M starts at I and
  both factors receive gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from metaopt.learners.base import HParam
from metaopt.learners.core import Params
from metaopt.learners.gradient import GRADIENT_HPARAMS, GradientLearner
from metaopt.learners.transforms import GradientTransform, Precondition, chain


class MetaCurvature(GradientLearner):
    """MAML with a learned gradient preconditioner."""

    name = "metacurvature"
    hyperparameters = {
        **GRADIENT_HPARAMS,
        "curvature": HParam(type=str, default="kronecker", choices=("kronecker", "lowrank"), help="form of M"),
        "rank": HParam(type=int, default=4, minimum=1, help="rank of U V^T (lowrank form)"),
    }

    def make_extras(self) -> dict[str, nn.Parameter]:
        """Identity Kronecker factors, or U (small random) and V (zero) per parameter."""
        extras = {}
        generator = torch.Generator().manual_seed(0)
        for name, p in self.params.items():
            if self.hparams["curvature"] == "kronecker":
                sizes = {"out": p.shape[0]}
                if p.dim() >= 2:
                    sizes["in"] = p.shape[1]
                if p.dim() > 2:
                    sizes["k"] = p[0, 0].numel()
                for factor, size in sizes.items():
                    extras[f"mc_{factor}:{name}"] = nn.Parameter(torch.eye(size, dtype=p.dtype, device=p.device))
            else:
                u = 0.01 * torch.randn(p.numel(), self.hparams["rank"], generator=generator, dtype=p.dtype)
                extras[f"mc_u:{name}"] = nn.Parameter(u.to(p.device))
                extras[f"mc_v:{name}"] = nn.Parameter(torch.zeros_like(u, device=p.device))
        return extras

    def inner_transform(self, meta: Params) -> GradientTransform:
        """M applied to each parameter's gradient, then the inner optimizer."""
        return chain(Precondition(self.preconditioner(meta)), super().inner_transform(meta))

    def preconditioner(self, meta: Params):  # noqa: ANN201 - Callable[[Params], Params]
        """M as a function of the gradients."""
        extras = meta
        if self.hparams["curvature"] == "kronecker":

            def kronecker(grads: Params) -> Params:
                out = {}
                for name, g in grads.items():
                    m_out = extras[f"mc_out:{name}"]
                    if g.dim() == 1:
                        out[name] = m_out @ g
                    elif g.dim() == 2:
                        out[name] = m_out @ g @ extras[f"mc_in:{name}"]
                    else:
                        g3 = g.reshape(g.shape[0], g.shape[1], -1)
                        m = torch.einsum("oa,aik,ij,kl->ojl", m_out, g3, extras[f"mc_in:{name}"], extras[f"mc_k:{name}"])
                        out[name] = m.reshape(g.shape)
                return out

            return kronecker

        def lowrank(grads: Params) -> Params:
            out = {}
            for name, g in grads.items():
                flat = g.reshape(-1)
                out[name] = (flat + extras[f"mc_u:{name}"] @ (extras[f"mc_v:{name}"].T @ flat)).reshape(g.shape)
            return out

        return lowrank
