"""Read a job file and its search-space file into a validated ``Job`` and ``SearchSpace``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from metaopt.search.config import ConfigError, Job, MethodSpace, format_validation_error, read_yaml
from metaopt.search.space import SearchSpace
from metaopt.search.strategies import strategy

_SPACE_FILE = TypeAdapter(dict[str, MethodSpace])


@dataclass(frozen=True)
class LoadedJob:
    """A validated job, where it came from, and its resolved search space."""

    job: Job
    path: Path
    space: SearchSpace


def load_job(path: str | Path) -> LoadedJob:
    """Validate the job at ``path`` and its search space; any problem raises a one-line ``ConfigError``."""
    path = Path(path)
    return load_job_data(read_yaml(path), path)


def load_job_data(data: object, path: Path) -> LoadedJob:
    """Validate a job's content (as read from ``path``: relative paths in it are relative to its folder)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of job fields, got {type(data).__name__}")
    try:
        job = Job.model_validate(_family_paths_resolved(data, path.parent))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None

    spaces: dict[str, MethodSpace] = {}
    space_path: Path | None = None
    if job.search_space is not None:
        space_path = (path.parent / job.search_space).resolve()
        if not space_path.is_file():
            raise ConfigError(f"{path}: search_space: file not found: {space_path}")
        raw = read_yaml(space_path) or {}
        try:
            spaces = _SPACE_FILE.validate_python(raw)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(space_path, exc)) from None
    if space_path is not None:
        _validated(SearchSpace(job.methods, spaces, job.family.build_kind()), str(space_path), prefix="")
    for method, overrides in job.space.items():
        if method not in job.methods:
            raise ConfigError(f"{path}: space.{method}: method is not in methods ({', '.join(job.methods)})")
        spaces[method] = {**spaces.get(method, {}), **overrides}
    space = _validated(SearchSpace(job.methods, spaces, job.family.build_kind()), str(path), prefix="space.")
    try:
        strategy(job.strategy).check(job, space)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for i, config in enumerate(job.enqueue):
        try:
            space.enqueue_params(config)
        except ValueError as exc:
            raise ConfigError(f"{path}: enqueue.{i}.{exc}") from None
    return LoadedJob(job=job, path=path, space=space)


def _family_paths_resolved(data: dict, folder: Path) -> dict:
    """``data`` with the family's relative file and folder options made relative to the job's ``folder``."""
    from metaopt.plugins import PluginError
    from metaopt.tasks import FAMILIES

    family = data.get("family")
    if not isinstance(family, dict) or not isinstance(family.get("name"), str) or family["name"] not in FAMILIES:
        return data
    try:
        fields = FAMILIES[family["name"]].Options.path_fields
    except PluginError:
        return data  # validation says why, in one line
    resolved = {k: str((folder / Path(v).expanduser()).resolve()) if k in fields and isinstance(v, str)
                and not Path(v).expanduser().is_absolute() else v for k, v in family.items()}
    return {**data, "family": resolved}


def loaded_from_data(job_data: dict, space_data: dict, origin: Path) -> LoadedJob:
    """A ``LoadedJob`` from what a study recorded (``Job.model_dump()`` and ``SearchSpace.to_data()``)."""
    job = Job.model_validate(job_data)
    return LoadedJob(job=job, path=origin, space=SearchSpace(job.methods, _SPACE_FILE.validate_python(space_data),
                                                                job.family.build_kind()))


def _validated(space: SearchSpace, where: str, *, prefix: str) -> SearchSpace:
    try:
        space.validate()
    except ValueError as exc:
        raise ConfigError(f"{where}: {prefix}{exc}") from None
    return space
