"""What a user can search: the families and methods installed (plugins included), and starter jobs.

``metaopt families`` and ``metaopt methods`` print these descriptions; ``metaopt init``
writes a job and a search-space file for a family that ``metaopt search`` runs as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from metaopt.plugins import PluginError

# Starter methods and ranges, by what the family's tasks are; the ranges are those the shipped jobs search.
IMAGE_CLASSIFICATION = {
    "protonet": {"outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "meta_batch": 4},
    "maml": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "inner_steps": 1,
             "meta_batch": 4},
    "anil": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True},
             "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 4},
}
VECTOR_REGRESSION = {
    method: {"inner_lr": {"type": "float", "low": 0.003, "high": 0.3, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
             "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 10}
    for method in ("maml", "fomaml", "anil")
}
VECTOR_CLASSIFICATION = {
    method: {"inner_lr": {"type": "float", "low": 0.03, "high": 0.5, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
             "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 10}
    for method in ("maml", "fomaml", "anil")
}


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() or "null"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("Annotated[", "").split(", Gt")[0].split(", Ge")[0]


def describe_families() -> tuple[list[str], list[str]]:
    """A description of every family (name, origin, kind, metrics, options) and the lines of broken plugins."""
    from metaopt.tasks import FAMILIES

    lines, broken = [], []
    for name in FAMILIES:
        try:
            cls = FAMILIES[name]
        except PluginError as exc:
            broken.append(str(exc))
            continue
        sets = cls.metric_sets()
        metrics = " | ".join(", ".join(f"{m.name} ({m.label}, {m.direction})" for m in ms) for ms in sets)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}  [{FAMILIES.origin(name)}]  {doc}")
        lines.append(f"  metrics (the first primary): {metrics}")
        for option, field in cls.Options.model_fields.items():
            help_text = f"  # {field.description}" if field.description else ""
            lines.append(f"  {option}: {_type_name(field.annotation)} = {_default(field)}{help_text}")
    return lines, broken


def describe_methods() -> tuple[list[str], list[str]]:
    """A description of every method (name, origin, what it needs, hyperparameters) and broken plugins' lines."""
    from metaopt.learners import LEARNERS

    lines, broken = [], []
    for name in LEARNERS:
        try:
            cls = LEARNERS[name]
        except PluginError as exc:
            broken.append(str(exc))
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        needs = " and ".join(cls.task_kinds) + " tasks" + (f" of {', '.join(cls.families)}" if cls.families else "")
        lines.append(f"{name}  [{LEARNERS.origin(name)}]  {doc}")
        lines.append(f"  for: {needs}" + ("; a baseline, not a meta-learner" if cls.baseline else ""))
        for hp, spec in cls.hyperparameters.items():
            domain = f" in {{{', '.join(map(str, spec.choices))}}}" if spec.choices else ""
            help_text = f"  # {spec.help}" if spec.help else ""
            lines.append(f"  {hp}: {spec.type.__name__} = {spec.default}{domain}{help_text}")
    return lines, broken


def starter(family: str, options: dict[str, Any], name: str | None = None, *, trials: int = 12,
            meta_iterations: int = 1000) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job and a search space for ``family`` with ``options``: methods and ranges fit its tasks.

    The family is built (its data read) to see what its tasks are; ``ValueError`` says why it can't be.
    """
    from metaopt.search.config import FamilySpec
    from metaopt.tasks import FAMILIES

    if family in FAMILIES:  # file and folder options as absolute paths: the job may be written elsewhere
        fields = FAMILIES[family].Options.path_fields
        options = {k: str(Path(v).expanduser().resolve()) if k in fields and isinstance(v, str) else v
                   for k, v in options.items()}
    try:
        spec = FamilySpec.model_validate({"name": family, **options})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "family"
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    built = spec.build()
    images = len(built.input_shape) == 3
    if built.kind == "classification":
        space, backbone = (IMAGE_CLASSIFICATION, {"name": "conv4", "hidden": 32}) if images else \
            (VECTOR_CLASSIFICATION, {"name": "mlp", "hidden": [64, 64]})
    elif built.kind == "regression" and not images:
        space, backbone = VECTOR_REGRESSION, {"name": "mlp", "hidden": [40, 40]}
    else:
        raise ValueError(f"init writes starter jobs for regression on vectors and classification; {family} has "
                         f"{built.kind} tasks of shape {built.input_shape}: write the job by hand (see README)")
    job_name = name or spec.key.split("-")[0]
    job = {
        "name": job_name,
        "family": spec.model_dump(mode="json"),
        "methods": list(space),
        "search_space": f"{job_name}-space.yaml",
        "backbone": backbone,
        "budget": {"trials": trials, "meta_iterations": meta_iterations,
                   "eval_interval": max(1, meta_iterations // 5), "val_tasks": 100, "test_tasks": 500},
        "strategy": "tpe",
        "pruner": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 2 * max(1, meta_iterations // 5)},
        "resources": {"cpus_per_trial": 1},
        "seed": 0,
    }
    return job, dict(space)


def write_starter(family: str, options: dict[str, Any], folder: Path, name: str | None = None, *,
                  force: bool = False, trials: int = 12, meta_iterations: int = 1000) -> tuple[Path, Path]:
    """Write ``<name>.yaml`` and ``<name>-space.yaml`` into ``folder``; the two paths."""
    job, space = starter(family, options, name, trials=trials, meta_iterations=meta_iterations)
    folder.mkdir(parents=True, exist_ok=True)
    job_path, space_path = folder / f"{job['name']}.yaml", folder / job["search_space"]
    for path in (job_path, space_path):
        if path.exists() and not force:
            raise FileExistsError(f"{path} exists (pass --force to overwrite)")
    header = (f"# A starter search of {job['family']['name']} written by `metaopt init`; run it with\n"
              f"#   metaopt search {job_path}\n")
    job_path.write_text(header + yaml.safe_dump(job, sort_keys=False, default_flow_style=None))
    space_path.write_text("# Per-method ranges ({type: float|int|categorical, ...}) or fixed values.\n"
                          + yaml.safe_dump(space, sort_keys=False, default_flow_style=None))
    return job_path, space_path
