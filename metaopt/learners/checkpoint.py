"""Self-describing checkpoints: enough plain data to rebuild a learner, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metaopt.tasks.base import TaskKind
from metaopt.learners.base import MetaLearner
from metaopt.text import short

FORMAT_VERSION = 1


def build_learner(
    method: str,
    hparams: dict[str, Any],
    *,
    backbone: dict[str, Any],
    task_kind: TaskKind,
    input_shape: tuple[int, ...],
    output_size: int,
    n_way: int | None = None,
    device: str | torch.device = "cpu",
    max_iterations: int | None = None,
) -> MetaLearner:
    """A fresh learner of ``method`` on a new backbone built from ``backbone``.

    Learners that classify with a head get ``output_size`` outputs; metric learners get an embedding network.
    """
    from metaopt.learners import LEARNERS

    if method not in LEARNERS:
        raise ValueError(f"unknown method {method!r} (allowed: {', '.join(LEARNERS)})")
    cls = LEARNERS[method].for_task_kind(task_kind)
    net = cls.build_network(backbone, input_shape=tuple(input_shape), output_size=output_size,
                            hparams=cls.resolve_hparams(hparams)).to(device)
    return cls(net, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)


def make_checkpoint(
    learner: MetaLearner, *, backbone: dict[str, Any], input_shape: tuple[int, ...], output_size: int
) -> dict:
    """Everything needed to rebuild ``learner``: method, hyperparameters, backbone spec and state."""
    return {
        "format": FORMAT_VERSION,
        "method": learner.name,
        "hparams": dict(learner.hparams),
        "backbone": dict(backbone),
        "task_kind": learner.task_kind,
        "input_shape": list(input_shape),
        "output_size": output_size,
        "n_way": learner.n_way,
        "state": learner.state_dict(),
    }


def save_checkpoint(checkpoint: dict, path: str | Path) -> Path:
    """Write ``checkpoint`` atomically (a crash mid-write never leaves a torn file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The plain data of a checkpoint file; ``ValueError`` in one line for pickled objects or a damaged file."""
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise ValueError(f"{path}: refused: the file holds pickled Python objects, which metaopt never loads "
                             "(it could run any code); a metaopt checkpoint holds tensors and plain values only") from None
        raise ValueError(f"{path}: not a readable checkpoint ({_first_sentence(exc)})") from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - a text file, a foreign format: torch's unpickler raises many kinds
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_sentence(exc)[:200]})"
                         ) from None


def _first_sentence(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> MetaLearner:
    """Rebuild the learner saved at ``path`` (tensors only: ``weights_only=True``).

    A file holding pickled Python objects is refused (``ValueError``, one line): loading it
    could run any code. A truncated or damaged file is a ``ValueError`` too.
    """
    return learner_from_checkpoint(read_checkpoint(path, device), str(path), device)


def learner_from_checkpoint(ckpt: Any, source: str, device: str | torch.device = "cpu") -> MetaLearner:
    """The learner a checkpoint's plain data describes (``source`` names it in errors: a file, or where it is kept)."""
    path = source
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a metaopt checkpoint (it holds a {type(ckpt).__name__}, not a checkpoint's "
                         "mapping)")
    if ckpt.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {short(ckpt.get('format'))} (expected {FORMAT_VERSION})")
    missing = [k for k in ("method", "hparams", "backbone", "task_kind", "input_shape", "output_size", "state")
               if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a complete metaopt checkpoint (no {', '.join(missing)})")
    from metaopt.learners import LEARNERS

    hparams = dict(ckpt["hparams"])
    declared = (LEARNERS[ckpt["method"]].for_task_kind(ckpt["task_kind"]).hyperparameters if ckpt["method"] in LEARNERS
                else {})
    for name, hp in declared.items():
        if name not in hparams and hp.legacy is not None:  # saved before the learner had this hyperparameter
            hparams[name] = hp.legacy
    learner = build_learner(
        ckpt["method"],
        hparams,
        backbone=ckpt["backbone"],
        task_kind=ckpt["task_kind"],
        input_shape=tuple(ckpt["input_shape"]),
        output_size=ckpt["output_size"],
        n_way=ckpt.get("n_way"),
        device=device,
    )
    learner.load_state_dict(ckpt["state"])
    return learner
