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
from metaopt.tasks.base import TaskKind

# Starter methods and ranges, by what the family's tasks are; the ranges are those the shipped jobs search.
IMAGE_CLASSIFICATION = {
    "protonet": {"outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "meta_batch": 4},
    "maml": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "inner_steps": 1,
             "meta_batch": 4},
    "anil": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True},
             "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 4},
    "icl": {"outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "width": 64,
            "depth": {"type": "int", "low": 2, "high": 3}, "meta_batch": 4},
}
# The transformer that learns in context (no gradient step at test), searched beside the gradient learners.
IN_CONTEXT = {"icl": {"outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "width": 64,
                      "depth": {"type": "int", "low": 2, "high": 4}, "meta_batch": 16}}
VECTOR_REGRESSION = {
    **{method: {"inner_lr": {"type": "float", "low": 0.003, "high": 0.3, "log": True},
                "outer_lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
                "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 10}
       for method in ("maml", "fomaml", "anil")},
    **IN_CONTEXT,
}
VECTOR_CLASSIFICATION = {
    **{method: {"inner_lr": {"type": "float", "low": 0.03, "high": 0.5, "log": True},
                "outer_lr": {"type": "float", "low": 0.0003, "high": 0.01, "log": True},
                "inner_steps": {"type": "int", "low": 1, "high": 5}, "meta_batch": 10}
       for method in ("maml", "fomaml", "anil")},
    **IN_CONTEXT,
}

RATING = {  # MeLU's decision layers adapted, and MAML adapting every layer (jobs/movielens-new-users.yaml)
    "melu": {"inner_steps": {"type": "categorical", "choices": [1, 5]},
             "inner_lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "meta_batch": 32},
    "maml": {"inner_lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
             "outer_lr": {"type": "float", "low": 0.0003, "high": 0.003, "log": True}, "meta_batch": 32},
}
RL = {  # search_spaces/bandit.yaml; the classic policies' settings where a policy has one
    "rl2": {"hidden": {"type": "categorical", "choices": [32, 64, 128]},
            "outer_lr": {"type": "float", "low": 0.0005, "high": 0.005, "log": True},
            "entropy": {"type": "float", "low": 0.001, "high": 0.05, "log": True},
            "gae_lambda": {"type": "float", "low": 0.1, "high": 0.95},
            "gamma": {"type": "categorical", "choices": [0.9, 0.99, 1.0]}, "meta_batch": 128},
    "maml": {"inner_lr": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
             "outer_lr": {"type": "float", "low": 0.0001, "high": 0.003, "log": True}, "meta_batch": 128},
    "epsilon_greedy": {"epsilon": {"type": "float", "low": 0.001, "high": 0.2, "log": True}},
    "ucb1": {"c": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
}
# What a starter budget spends, by the kind of the family's tasks: meta-iterations and evaluation tasks.
BUDGETS: dict[TaskKind, tuple[int, int, int]] = {"rl": (400, 500, 1000), "rating": (1000, 100, 500), "regression": (1000, 100, 500),
           "classification": (1000, 100, 500)}


def _fits(method: str, family: str, kind: str, options: Any) -> bool:
    """Whether the installed ``method`` learns (or plays) ``family``'s tasks with ``options``."""
    from metaopt.learners import LEARNERS

    try:
        cls = LEARNERS[method]
    except (KeyError, PluginError, ValueError):
        return False
    # A selector needs a frozen model the starter job cannot know (README: "Choosing what an in-context model sees").
    return kind in cls.task_kinds and (cls.families is None or family in cls.families) and \
        cls.unfit_for(family, options) is None and not getattr(cls, "chooses_context", False)


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
        lines += _hparam_lines(cls.hyperparameters, "  ")
        variant = cls.for_task_kind("rl") if "rl" in cls.task_kinds else cls
        if variant is not cls and variant.hyperparameters != cls.hyperparameters:
            lines.append("  on rl tasks:")
            lines += _hparam_lines(variant.hyperparameters, "    ")
    return lines, broken


def _hparam_lines(hyperparameters: dict[str, Any], indent: str) -> list[str]:
    """One line per hyperparameter: name, type, default, allowed choices, help."""
    lines = []
    for hp, spec in hyperparameters.items():
        domain = f" in {{{', '.join(map(str, spec.choices))}}}" if spec.choices else ""
        help_text = f"  # {spec.help}" if spec.help else ""
        lines.append(f"{indent}{hp}: {spec.type.__name__} = {spec.default}{domain}{help_text}")
    return lines


def starter(family: str, options: dict[str, Any], name: str | None = None, *, trials: int | None = None,
            meta_iterations: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job and a search space for ``family`` with ``options``: methods and ranges fit its tasks.

    The family is built (its data read) to see what its tasks are; ``ValueError`` says why it can't be.
    """
    from metaopt.learners import LEARNERS
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
    kind, images = built.kind, len(built.input_shape) == 3
    if kind == "classification":
        space, backbone = (IMAGE_CLASSIFICATION, {"name": "conv4", "hidden": 32}) if images else \
            (VECTOR_CLASSIFICATION, {"name": "mlp", "hidden": [64, 64]})
    elif kind == "regression" and not images:
        space, backbone = VECTOR_REGRESSION, {"name": "mlp", "hidden": [40, 40]}
    elif kind == "rating":
        space, backbone = RATING, {"name": "melu"}
    elif kind == "rl":
        space, backbone = RL, {"name": "mlp", "hidden": [64, 64]}
    else:
        raise ValueError(f"init writes starter jobs for regression on vectors, classification, ratings and RL; "
                         f"{family} has {kind} tasks of shape {built.input_shape}: write the job by hand (see README)")
    methods = [m for m in space if _fits(m, family, kind, spec.options) and not LEARNERS[m].baseline]
    # Each baseline is one trial at its defaults, run first: scratch and pretrain, and the family's own.
    baselines = [m for m in LEARNERS if _fits(m, family, kind, spec.options) and LEARNERS[m].baseline]
    space = {m: ranges for m, ranges in space.items() if m in methods or m in baselines}
    iterations, val_tasks, test_tasks = BUDGETS[kind]
    iterations = meta_iterations if meta_iterations is not None else iterations
    # A family of so many tasks (users, a table's groups) is scored on each of them once, not on repeats.
    val_tasks, test_tasks = (min(n, built.distinct_tasks(split) or n)
                             for n, split in ((val_tasks, "val"), (test_tasks, "test")))
    job_name = name or family
    job = {
        "name": job_name,
        "family": spec.model_dump(mode="json"),
        "methods": methods,
        "baselines": baselines,
        "search_space": f"{job_name}-space.yaml",
        "backbone": backbone,
        "budget": {"trials": trials if trials is not None else 12 + len(baselines), "meta_iterations": iterations,
                   "eval_interval": max(1, iterations // 5), "val_tasks": val_tasks, "test_tasks": test_tasks},
        "strategy": "tpe",
        "pruner": {"type": "median", "n_startup_trials": 3 + len(baselines),
                   "n_warmup_steps": 2 * max(1, iterations // 5)},
        "resources": {"cpus_per_trial": 1},
        "seed": 0,
    }
    return job, dict(space)


def _relative_to(family: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The family's file and folder options relative to ``folder`` (where the job is written, and what a job's relative
    paths are read against): the two files and the data move together, to another folder or machine."""
    import os

    from metaopt.tasks import FAMILIES

    fields = FAMILIES[family["name"]].Options.path_fields if family["name"] in FAMILIES else ()
    return {k: os.path.relpath(v, folder.resolve()) if k in fields and isinstance(v, str) else v
            for k, v in family.items()}


def write_starter(family: str, options: dict[str, Any], folder: Path, name: str | None = None, *,
                  force: bool = False, trials: int | None = None, meta_iterations: int | None = None) -> tuple[Path, Path]:
    """Write ``<name>.yaml`` and ``<name>-space.yaml`` into ``folder``; the two paths."""
    job, space = starter(family, options, name, trials=trials, meta_iterations=meta_iterations)
    folder.mkdir(parents=True, exist_ok=True)
    job["family"] = _relative_to(job["family"], folder)
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
