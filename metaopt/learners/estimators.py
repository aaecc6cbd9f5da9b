"""Classic estimators fit to each task's support set: the untrained methods of a regression leaderboard.

Nothing is meta-trained (``trains = False``): each task's queries are predicted by an
estimator fit to that task's support set alone, so the leaderboard shows what learning
across tasks gained over the statistics a single task offers (Garg et al. 2022 compare a
transformer that learns in context with exactly these). Inputs are flattened to vectors. The
linear estimators have no intercept (the ``functions`` family's functions have none) and run on
that family only; nearest neighbours, the support network and boosted trees also on ``tabular``
regression.

- ``least_squares``: minimum-norm least squares (the pseudo-inverse);
- ``posterior_mean``: the posterior mean of a linear model with a ``N(0, prior_std^2 I)``
  prior and Gaussian noise of ``noise``: ridge with ``lambda = noise^2 / prior_std^2``, the exact
  Bayes-optimal predictor of the ``functions`` family's linear class (its limit);
- ``ridge``: ridge regression with a searched ``alpha``;
- ``lasso``: l1-regularised least squares (``alpha``), by accelerated proximal gradient (FISTA);
- ``knn``: the mean of the ``neighbors`` nearest support points (Euclidean);
- ``averaging``: ``w = mean_i y_i x_i`` (the paper's "averaging" estimator);
- ``support_net``: a two-layer ReLU network trained on the support set by Adam, from scratch per task;
- ``boosted_trees``: scikit-learn's gradient-boosted regression trees on the support set.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner, Predictor, placeholder_network
from metaopt.tasks.base import TaskBatch, TaskKind

META_BATCH = {"meta_batch": HParam(type=int, default=1, minimum=1, help="tasks drawn per (empty) meta-step")}


class Estimator(MetaLearner):
    """An estimator fit to each task's support set; ``meta_step`` learns nothing, ``fit_predict`` says how."""

    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression",)
    families: ClassVar[tuple[str, ...] | None] = ("functions",)  # the linear ones assume no intercept
    trains: ClassVar[bool] = False
    baseline: ClassVar[bool] = True
    hyperparameters: ClassVar[dict[str, HParam]] = META_BATCH

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """Nothing to learn: one frozen placeholder parameter (it says where the estimator runs)."""
        return placeholder_network()

    def meta_parameters(self) -> dict[str, Tensor]:
        """The placeholder (an estimator has no meta-parameters)."""
        return dict(self.backbone.named_parameters())

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Nothing to learn."""
        self.outer.advance()
        return {"loss": torch.zeros(())}

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """Query predictions ``[tasks, queries, d]`` of estimators fit to supports ``x [tasks, n, f]``, ``y [tasks, n, d]``."""
        raise NotImplementedError

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Each task's queries predicted by the estimator fit to its support set."""
        return self._predict(batch.support_x, batch.support_y, batch.query_x)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Predictor:
        """A predictor for one task: the estimator fit to its support set."""
        return lambda query_x: self._predict(support_x[None], support_y[None], query_x[None])[0]

    def _predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        y = support_y if support_y.dim() == 3 else support_y[..., None]
        with torch.no_grad():
            out = self.fit_predict(support_x.flatten(2).double(), y.double(), query_x.flatten(2).double())
        return out.to(support_x.dtype).reshape(*query_x.shape[:2], *support_y.shape[2:])


def ridge(x: Tensor, y: Tensor, lam: float) -> Tensor:
    """Weights ``[tasks, f, d]`` minimising ``|y - x w|^2 + lam |w|^2`` (minimum-norm least squares at ``lam = 0``).

    Solved in the dual, ``w = x^T (x x^T + lam I)^+ y``: exact whether the support has fewer or more points than features.
    """
    gram = x @ x.transpose(1, 2) + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return x.transpose(1, 2) @ (torch.linalg.pinv(gram, hermitian=True) @ y)


class LeastSquares(Estimator):
    """Minimum-norm least squares."""

    name: ClassVar[str] = "least_squares"

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """``query @ pinv(x) y``."""
        return query @ ridge(x, y, 0.0)


class PosteriorMean(Estimator):
    """The posterior mean of a Gaussian linear model: Bayes-optimal for ``functions`` linear with the family's noise."""

    name: ClassVar[str] = "posterior_mean"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH,
        "noise": HParam(type=float, default=0.0, minimum=0.0, help="the targets' noise standard deviation"),
        "prior_std": HParam(default=1.0, **POSITIVE_FLOAT, help="the weights' prior standard deviation"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """Ridge with ``lambda = (noise / prior_std)^2``."""
        return query @ ridge(x, y, (self.hparams["noise"] / self.hparams["prior_std"]) ** 2)


class Ridge(Estimator):
    """Ridge regression with a searched penalty."""

    name: ClassVar[str] = "ridge"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH, "alpha": HParam(type=float, default=0.1, minimum=0.0, help="the l2 penalty"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """``query @ w`` of ridge with ``alpha``."""
        return query @ ridge(x, y, self.hparams["alpha"])


class Lasso(Estimator):
    """l1-regularised least squares, ``|y - x w|^2 / (2 n) + alpha |w|_1``, by FISTA."""

    name: ClassVar[str] = "lasso"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH,
        "alpha": HParam(default=0.01, **POSITIVE_FLOAT, help="the l1 penalty"),
        "iterations": HParam(type=int, default=500, minimum=1, help="proximal gradient iterations"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """``query @ w`` of the Lasso fit."""
        n = x.shape[1]
        step = 1 / (torch.linalg.matrix_norm(x, ord=2) ** 2 / n).clamp(min=1e-12)[:, None, None]
        threshold = step * self.hparams["alpha"]
        w = momentum = torch.zeros(x.shape[0], x.shape[2], y.shape[2], dtype=x.dtype, device=x.device)
        t = 1.0
        for _ in range(self.hparams["iterations"]):
            grad = x.transpose(1, 2) @ (x @ momentum - y) / n
            shifted = momentum - step * grad
            new = shifted.sign() * (shifted.abs() - threshold).clamp(min=0)
            t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
            momentum, w, t = new + (t - 1) / t_next * (new - w), new, t_next
        return query @ w


class NearestNeighbours(Estimator):
    """The mean target of the nearest support points."""

    name: ClassVar[str] = "knn"
    families: ClassVar[tuple[str, ...] | None] = ("functions", "tabular")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH, "neighbors": HParam(type=int, default=3, minimum=1, help="support points averaged"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """Each query's neighbours' mean target (all of them when the support has fewer)."""
        k = min(self.hparams["neighbors"], x.shape[1])
        nearest = torch.cdist(query, x).topk(k, largest=False).indices  # [tasks, queries, k]
        picked = y.gather(1, nearest.flatten(1)[..., None].expand(-1, -1, y.shape[2]))
        return picked.reshape(*nearest.shape, y.shape[2]).mean(2)


class Averaging(Estimator):
    """``w = mean_i y_i x_i``: unbiased for isotropic inputs, the simplest linear estimator."""

    name: ClassVar[str] = "averaging"

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """``query @ x^T y / n``."""
        return query @ (x.transpose(1, 2) @ y / x.shape[1])


class SupportNet(Estimator):
    """A two-layer ReLU network trained by Adam on the support set alone, every task from a fresh initialisation."""

    name: ClassVar[str] = "support_net"
    families: ClassVar[tuple[str, ...] | None] = ("functions", "tabular")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH,
        "hidden": HParam(type=int, default=100, minimum=1, help="hidden units"),
        "steps": HParam(type=int, default=500, minimum=1, help="Adam steps on the support set"),
        "lr": HParam(default=0.01, **POSITIVE_FLOAT, help="Adam's learning rate"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """Every task's network trained at once (batched weights), then applied to its queries."""
        tasks, features, hidden = x.shape[0], x.shape[2], self.hparams["hidden"]
        generator = torch.Generator().manual_seed(0)  # every task starts from the same weights, whatever the batch
        shapes = [(features, hidden), (1, hidden), (hidden, y.shape[2]), (1, y.shape[2])]
        fans = [features, features, hidden, hidden]
        weights = [((torch.rand(s, generator=generator, dtype=x.dtype) * 2 - 1) / fan**0.5).to(x.device)
                   .expand(tasks, *s).clone().requires_grad_() for s, fan in zip(shapes, fans)]

        def net(inputs: Tensor) -> Tensor:
            return torch.relu(inputs @ weights[0] + weights[1]) @ weights[2] + weights[3]

        optimizer = torch.optim.Adam(weights, lr=self.hparams["lr"])
        with torch.enable_grad():
            for _ in range(self.hparams["steps"]):
                optimizer.zero_grad()
                ((net(x) - y) ** 2).mean(1).sum().backward()  # each task's own mean loss
                optimizer.step()
        return net(query).detach()


class BoostedTrees(Estimator):
    """Gradient-boosted regression trees (scikit-learn) fit to each task's support set."""

    name: ClassVar[str] = "boosted_trees"
    families: ClassVar[tuple[str, ...] | None] = ("functions", "tabular")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **META_BATCH,
        "trees": HParam(type=int, default=100, minimum=1, help="boosting rounds"),
        "depth": HParam(type=int, default=3, minimum=1, help="each tree's depth"),
        "lr": HParam(default=0.1, **POSITIVE_FLOAT, help="shrinkage"),
    }

    def fit_predict(self, x: Tensor, y: Tensor, query: Tensor) -> Tensor:
        """One scikit-learn model per task and target value."""
        from sklearn.ensemble import GradientBoostingRegressor

        out = torch.empty(*query.shape[:2], y.shape[2], dtype=x.dtype)
        for task in range(x.shape[0]):
            for value in range(y.shape[2]):
                model = GradientBoostingRegressor(n_estimators=self.hparams["trees"], max_depth=self.hparams["depth"],
                                                  learning_rate=self.hparams["lr"], random_state=0)
                model.fit(x[task].cpu().numpy(), y[task, :, value].cpu().numpy())
                out[task, :, value] = torch.from_numpy(model.predict(query[task].cpu().numpy()))
        return out.to(query.device)


ESTIMATORS: tuple[type[Estimator], ...] = (LeastSquares, PosteriorMean, Ridge, Lasso, NearestNeighbours, Averaging,
                                          SupportNet, BoostedTrees)
