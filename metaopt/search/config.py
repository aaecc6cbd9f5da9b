"""Job and search-space files: pydantic models, validated into one-line errors.

Files are data: read with ``yaml.safe_load``; nothing in them is imported or evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from metaopt.learners import LEARNERS, is_baseline
from metaopt.search.ranges import Categorical, FloatRange, IntRange, MethodSpace, ParamSpec, Range
from metaopt.search.strategies import STRATEGIES
from metaopt.tasks import FAMILIES, FamilyOptions, Metric, TaskFamily
from metaopt.tasks.base import SUPERVISED, TaskKind
from metaopt.text import short

__all__ = ["Categorical", "ConfigError", "FamilySpec", "FloatRange", "IntRange", "Job", "MethodSpace", "ParamSpec",
           "Range"]


class ConfigError(ValueError):
    """A job or search-space file is invalid; ``str()`` is the one-line message for the user."""


Width = Annotated[int, Field(gt=0, le=65_536)]  # a layer's units or channels


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FamilyName(_Strict):
    name: str

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in FAMILIES:
            raise ValueError(f"unknown family {short(name)} (allowed: {', '.join(FAMILIES)})")
        return name


class FamilySpec(BaseModel):
    """Which task family, and its options, validated by that family's own ``Options`` model.

    In a job file it is one mapping, ``{name: glyphs, ways: 5, shots: 1}`` (or just the name);
    errors name the option (``family.shots``) and what the family allows.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    options: SerializeAsAny[FamilyOptions]

    @model_validator(mode="wrap")
    @classmethod
    def _by_family(cls, data: Any, handler: Any) -> FamilySpec:
        if isinstance(data, FamilySpec):
            return data
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a family name or a mapping with name and options, got {type(data).__name__}")
        given = {k: v for k, v in data.items() if v is not None}  # null: unset (as older job records wrote them)
        name = _FamilyName.model_validate({"name": given.pop("name", None)} if "name" in given else {}).name
        family = FAMILIES[name]
        accepted = family.Options.model_fields
        for option in given:
            if option not in accepted:
                raise ValueError(f"{option} is not an option of {name} (allowed: {', '.join(sorted(accepted))})")
        return handler({"name": name, "options": family.Options.model_validate(given)})

    @model_serializer
    def _flat(self) -> dict[str, Any]:
        return {"name": self.name, **self.options.model_dump()}

    @property
    def family(self) -> type[TaskFamily]:
        """The family's class."""
        return FAMILIES[self.name]

    @property
    def key(self) -> str:
        """The family and the options that change its tasks (``glyphs-5w1s-q5``): results are kept per key."""
        return self.family.key(self.options)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """What the family scores a task by, the primary metric first."""
        return self.family.metrics_for(self.options)

    @property
    def primary_metric(self) -> Metric:
        """What validation selects by and the leaderboard ranks by."""
        return self.metrics[0]

    def build_kind(self) -> TaskKind:
        """The kind of the family's tasks (``regression``, ``classification``, ``rl``) with these options."""
        kind = getattr(self.options, "kind", None)
        return kind if isinstance(kind, str) else self.family.kind

    def build(self) -> TaskFamily:
        """The task family this spec names."""
        return self.family.from_options(self.options)


class BackboneSpec(_Strict):
    """The network every method meta-trains: MLP (1-40-40-1 ReLU by default), Conv-4 (64 filters), ResNet-12/18."""

    name: Literal["mlp", "conv4", "resnet12", "resnet18", "melu"] = "mlp"
    hidden: list[Width] | Width | None = None
    embedding: Width | None = Field(default=None, description="melu: units of each feature embedding (32)")
    activation: Literal["relu", "tanh"] | None = None
    channels: list[Width] | None = Field(default=None, description="stage widths (resnet12, resnet18)")
    pooled_blocks: int | None = Field(default=None, ge=0, le=4, description="conv4: blocks that max-pool (default 4)")

    @model_validator(mode="after")
    def _fits_the_backbone(self) -> BackboneSpec:
        if self.name == "conv4" and (isinstance(self.hidden, list) or self.activation or self.channels):
            raise ValueError("conv4 takes hidden: <filters> (an integer) and pooled_blocks only")
        if self.name != "conv4" and self.pooled_blocks is not None:
            raise ValueError(f"pooled_blocks is an option of conv4 only, not of {self.name}")
        if self.name == "mlp" and (isinstance(self.hidden, int) or self.channels):
            raise ValueError("mlp takes hidden: a list of layer widths, and activation")
        if self.name != "melu" and self.embedding is not None:
            raise ValueError(f"embedding is an option of melu only, not of {self.name}")
        if self.name == "melu" and (isinstance(self.hidden, int) or self.channels):
            raise ValueError("melu takes hidden: a list of decision-layer widths, embedding, and activation")
        if self.name.startswith("resnet") and (self.hidden is not None or self.activation):
            raise ValueError(f"{self.name} takes channels: a list of stage widths only")
        return self

    def spec(self) -> dict[str, Any]:
        """The options given, for ``build_backbone``."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Budget(_Strict):
    """What each trial may spend, the same for every method and strategy (each bounded: a value past its bound is a
    typo, and would fail hours later or never)."""

    trials: PositiveInt = Field(le=100_000)
    meta_iterations: PositiveInt = Field(le=1_000_000_000)
    eval_interval: PositiveInt = Field(le=1_000_000_000)
    val_tasks: PositiveInt = Field(default=200, le=100_000)
    test_tasks: PositiveInt = Field(default=1000, le=100_000)
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                    description="wall-clock limit for the whole search")
    trial_timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                          description="wall-clock limit per trial: then PRUNED")
    seeds: PositiveInt = Field(default=1, le=20, description="training seeds of each method's best configuration: "
                               "the leaderboard shows their mean and spread, the champion decision their mean")


class PrunerSpec(_Strict):
    """Optuna pruner that may stop a trial at an evaluation.

    ``median``: below the median of earlier trials at the same iteration; ``hyperband``:
    successive halving in brackets, rungs from ``min_resource`` (default: the eval
    interval) to the trial's iterations; ``wilcoxon``: a signed-rank test, paired over the
    validation episodes at the same iteration, against the best trial; ``none``.
    No trial is pruned before ``n_warmup_steps`` iterations.
    """

    type: Literal["median", "hyperband", "wilcoxon", "none"] = "median"
    n_startup_trials: int = Field(default=3, ge=0, description="median: trials that are never pruned")
    n_warmup_steps: int = Field(default=0, ge=0, description="iterations before any pruning")
    min_resource: PositiveInt | None = Field(default=None, description="hyperband: iterations of the first rung")
    reduction_factor: int = Field(default=3, ge=2, description="hyperband: 1/fraction promoted at each rung")
    p_threshold: float = Field(default=0.1, gt=0, lt=1, description="wilcoxon: p-value below which a trial is pruned")


class Resources(_Strict):
    """Ray resources of one trial, how many trials run at once, and how often a lost trial is retried."""

    cpus_per_trial: PositiveInt = Field(default=1, le=1024)
    gpus_per_trial: float = Field(default=0.0, ge=0, le=64, allow_inf_nan=False,
                                  description="a fraction shares a GPU: 0.25 runs 4 trials on one")
    max_concurrent: PositiveInt | None = Field(default=None, le=100_000)
    max_retries: int = Field(default=2, ge=0, le=100, description="reruns of a trial whose worker or node was lost")


MAX_NAME = 80  # a search id adds a time stamp and a suffix; a checkpoint's file name adds the trial: under 255 bytes


class PromptSpec(_Strict):
    """How a language model's prompt shows a context and a query (``metaopt.incontext.http_model.PromptTemplate``)."""

    instruction: str = ""
    input_prefix: str = "Input: "
    label_prefix: str = "\nLabel:"
    separator: str = "\n\n"


class FrozenSpec(_Strict):
    """The frozen in-context model the job's selectors choose a context for: a model metaopt trained
    (``model: models:/metaopt-<key>@champion``, a run id or a checkpoint file), or a language model server
    (``url`` of an OpenAI-compatible API and its ``model`` name; the key read from ``api_key_env``)."""

    model: str = Field(min_length=1, description="a trained model's reference, or (with url) the served model's name")
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$",
                            description="an OpenAI-compatible API's base URL, http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="the environment variable that holds the server's key")
    timeout: float = Field(default=30.0, gt=0, le=3600, description="seconds a request may take")
    calibration: str | None = Field(default="N/A", description="the content-free query of contextual calibration "
                                    "(null: raw label scores)")
    queries_per_request: int = Field(default=16, ge=1, le=1024)
    template: PromptSpec = Field(default_factory=PromptSpec)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"model": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _server_settings_need_a_url(self) -> FrozenSpec:
        if self.url is None:
            given = sorted(self.model_fields_set - {"model"})
            if given:
                raise ValueError(f"{given[0]} applies to a language model server: set url too (or leave {given[0]} out)")
        return self

    def reference(self, family: FamilySpec) -> str:
        """What a selector's ``frozen`` hyperparameter holds: the model's reference, or the server's settings and the
        (text) family it reads, as JSON."""
        if self.url is None:
            return self.model
        return json.dumps({**self.model_dump(), "family": family._flat()}, sort_keys=True)


class Job(_Strict):
    """One search a user can launch: ``metaopt search JOB.yaml``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME,
                      description="names the search, its runs and files: letters, digits, _ . -")
    family: FamilySpec
    methods: list[str] = Field(min_length=1)
    search_space: str | None = Field(default=None, description="path to a search-space file, relative to the job")
    space: dict[str, MethodSpace] = Field(default_factory=dict, description="per-method overrides of search_space")
    budget: Budget
    strategy: str = Field(default="tpe", description="a key of metaopt.search.STRATEGIES")
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    resources: Resources = Field(default_factory=Resources)
    backbone: BackboneSpec = Field(default_factory=BackboneSpec)
    backbones: dict[str, BackboneSpec] = Field(
        default_factory=dict, description="per-method backbones that replace `backbone` for those methods"
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="seeds the trials and the sampler (numpy's range)")
    compile: Literal["auto", "always", "never"] = Field(
        default="auto", description="torch.compile the meta-step: auto compiles when the trial is long enough to repay it"
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="the meta-steps' arithmetic: fp32, or bf16 autocast where the CPU (AVX-512 BF16, "
        "AMX) or GPU computes it natively (evaluation stays fp32; see the README on when it pays)")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="configurations to try first")
    warm_start: Literal["off", "auto"] | list[str] = Field(
        default="off", description="start from the store's history: auto (the nearest keys of this family and kind) "
        "or a list of keys; their best configurations are tried after `enqueue`, at most a quarter of the budget")
    objectives: list[Literal["primary", "adapt_ms"]] = Field(
        default=["primary"], min_length=1, max_length=2,
        description="what Optuna optimises: [primary] (the family's primary metric on validation tasks), or "
        "[primary, adapt_ms] for two objectives (also the median ms to adapt to a validation task): the report "
        "draws the Pareto front")
    baselines: list[str] | None = Field(
        default=None, description="baselines searched beside the methods, each tried early at its defaults "
        "(default: scratch and pretrain on regression and classification families, the selection baselines where "
        "the job has a frozen model; [] for none)")
    frozen: FrozenSpec | None = Field(
        default=None, description="the frozen in-context model whose context the selectors (metaprompt, "
        "random_context...) choose: a trained model's reference, or {url, model} of a language model server")
    _registered: dict[str, dict[str, type]] = PrivateAttr(default_factory=dict)
    _frozen_checkpoint: dict | None = PrivateAttr(default=None)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        if name not in STRATEGIES:  # read when validating, so a strategy registered later is known
            names = [repr(n) for n in STRATEGIES]
            raise ValueError(f"Input should be {', '.join(names[:-1])} or {names[-1]}")
        return name

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        for method in methods:
            if method not in LEARNERS:
                raise ValueError(f"unknown method {short(method)} (allowed: {', '.join(LEARNERS)})")
            LEARNERS[method]  # a plugin that does not import: its one line (PluginError) here
        if len(set(methods)) != len(methods):
            raise ValueError("methods must not repeat")
        return methods

    @field_validator("backbones")
    @classmethod
    def _backbones_of_searched_methods(cls, backbones: dict[str, BackboneSpec], info: ValidationInfo) -> dict:
        methods = info.data.get("methods", [])
        for method in backbones:
            if method not in methods:
                raise ValueError(f"{short(method)} is not one of the job's methods (allowed: {', '.join(methods)})")
        return backbones

    @model_validator(mode="after")
    def _with_baselines(self) -> Job:
        # Every leaderboard answers "does meta-learning pay?": the baselines join the methods, each tried early
        # (after the job's own enqueued configurations) at its defaults.
        if self.baselines is None:
            supervised = self.family.build_kind() in SUPERVISED
            self.baselines = (list(SELECTION_BASELINES) if self.frozen is not None else list(DEFAULT_BASELINES)
                              if supervised else [])
        for name in self.baselines:
            if name not in LEARNERS:
                raise ValueError(f"baselines: unknown method {short(name)} (allowed: "
                                 f"{', '.join(m for m in LEARNERS if is_baseline(m))})")
            if not is_baseline(name):
                raise ValueError(f"baselines: {name} is a meta-learner: list it in methods (allowed: "
                                 f"{', '.join(m for m in LEARNERS if is_baseline(m))})")
        self.methods = [*self.methods, *(b for b in self.baselines if b not in self.methods)]
        enqueued = {config.get("method") for config in self.enqueue}  # the job's own first tries stay first
        self.enqueue = [*self.enqueue, *({"method": b} for b in self.baselines if b not in enqueued)]
        # The family's exact limit, when the job runs its method, runs with the family's own settings (fixed in its
        # space), tried early.
        limit = dict(self.family.family.limit(self.family.options) or {})
        method = limit.pop("method", None)
        if method in self.methods:
            self.space = {**self.space, method: {**self.space.get(method, {}), **limit}}
            if method not in {config.get("method") for config in self.enqueue}:
                self.enqueue = [*self.enqueue, {"method": method}]
        return self

    @model_validator(mode="after")
    def _two_objectives(self) -> Job:
        if self.objectives[0] != "primary" or len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives: the first is primary, then optionally adapt_ms (allowed: [primary], "
                             "[primary, adapt_ms])")
        if not self.multi_objective:
            return self
        if not STRATEGIES[self.strategy].multi_objective:
            allowed = ", ".join(n for n, s in STRATEGIES.items() if s.multi_objective)
            raise ValueError(f"strategy: {self.strategy} cannot search two objectives (allowed: {allowed})")
        if "pruner" in self.model_fields_set and self.pruner.type != "none":
            raise ValueError(f"pruner: {self.pruner.type} cannot prune a search of two objectives (Optuna prunes "
                             "single-objective studies only; allowed: none)")
        self.pruner = PrunerSpec(type="none")
        return self

    @property
    def multi_objective(self) -> bool:
        """Whether the search optimises the adaptation cost beside the primary metric (a Pareto front)."""
        return len(self.objectives) > 1

    @model_validator(mode="after")
    def _methods_fit_the_family(self) -> Job:
        kind, family = self.family.build_kind(), self.family.name
        for method in self.methods:
            kinds, only = LEARNERS[method].task_kinds, LEARNERS[method].families
            if kind in kinds and only is not None and family not in only:
                raise ValueError(f"methods: {method} plays {' and '.join(only)} only, not {family}")
            if kind in kinds and (why := LEARNERS[method].unfit_for(family, self.family.options)):
                raise ValueError(f"methods: {why}")
            if kind not in kinds:
                raise ValueError(f"methods: {method} learns {' and '.join(kinds)} tasks; family {self.family.name} "
                                 f"has {kind} tasks (allowed for it: "
                                 f"{', '.join(m for m in LEARNERS if _learns(m, kind)) or 'none installed'})")
        return self

    @model_validator(mode="after")
    def _frozen_model_for_selectors(self) -> Job:
        selectors = [m for m in self.methods if chooses_context(m)]
        if selectors and self.frozen is None:
            raise ValueError(f"frozen: {', '.join(selectors)} {'chooses' if len(selectors) == 1 else 'choose'} what a "
                             "frozen model sees: name it (frozen: "
                             "models:/metaopt-<key>@champion, a run id or a file; or frozen: {url: ..., model: ...} "
                             "for a language model server)")
        if self.frozen is not None and not selectors:
            raise ValueError("frozen: no method of the job chooses a context for it (allowed with: "
                             f"{', '.join(m for m in LEARNERS if chooses_context(m))})")
        if self.frozen is not None and self.frozen.url is not None and not hasattr(self.family.family, "decode"):
            raise ValueError(f"frozen.url: a language model reads text, and {self.family.name} tasks are not text "
                             f"(text families: {', '.join(n for n in FAMILIES if hasattr(FAMILIES[n], 'decode'))})")
        return self

    def frozen_checkpoint(self, tracking_uri: str | None = None) -> dict | None:
        """The trained frozen model's checkpoint (read once: the driver's copy travels with the job to the trials);
        None for a language model server or no frozen model."""
        if self.frozen is None or self.frozen.url is not None:
            return None
        if self._frozen_checkpoint is None:
            from metaopt.learners.checkpoint import read_checkpoint
            from metaopt.tracking.models import checkpoint_file

            self._frozen_checkpoint = read_checkpoint(checkpoint_file(self.frozen.model, tracking_uri=tracking_uri))
        return self._frozen_checkpoint

    @model_validator(mode="after")
    def _carry_registered_classes(self) -> Job:
        # Classes registered in this process (a notebook's) travel with the job, so a Ray worker knows them.
        self._registered = {
            "families": {n: FAMILIES[n] for n in [self.family.name] if FAMILIES.origin(n) == "registered"},
            "learners": {n: LEARNERS[n] for n in self.methods if LEARNERS.origin(n) == "registered"},
        }
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        registered = (self.__pydantic_private__ or {}).get("_registered") or {}
        for registry, key in ((FAMILIES, "families"), (LEARNERS, "learners")):
            for name, cls in registered.get(key, {}).items():
                if name not in registry:
                    registry.register(cls, name)

    @property
    def limit_method(self) -> str | None:
        """The method among this job's that is its family's exact limit (its configuration fixed by the family)."""
        method = (self.family.family.limit(self.family.options) or {}).get("method")
        return method if method in self.methods else None

    def backbone_for(self, method: str) -> dict[str, Any]:
        """The backbone spec ``method`` trains on: its entry in ``backbones``, else ``backbone``."""
        return self.backbones.get(method, self.backbone).spec()


DEFAULT_BASELINES = ("scratch", "pretrain")
# What a learned selector must beat (metaopt.incontext.selectors): random, nearest, diverse, best of 20, whole pool.
SELECTION_BASELINES = ("random_context", "nearest_context", "diverse_context", "best_of_contexts", "whole_pool")


def chooses_context(method: str) -> bool:
    """Whether ``method`` chooses what a frozen in-context model sees (a selector); False for one that does not
    load."""
    try:
        return getattr(LEARNERS[method], "chooses_context", False)
    except ValueError:
        return False


def _learns(method: str, kind: str) -> bool:
    try:
        return kind in LEARNERS[method].task_kinds
    except ValueError:  # a broken plugin
        return False


def format_validation_error(path: Path | str, error: ValidationError) -> str:
    """The first validation error as ``FILE: field.path: message``."""
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part)) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error" or first["type"] == "union_tag_invalid":
        message = f"{message} (got {short(first.get('input'))})"
    return f"{path}: {loc}: {message}"


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the chosen union member in the location ("float", "function-after[...]").
    return isinstance(part, str) and (part in {"float", "int", "categorical", "bool", "str"} or "[" in part)


MAX_FILE_BYTES = 1_000_000  # a job or search-space file is a page of settings; anything larger is not one
MAX_NODES = 100_000  # values in a file once its aliases are expanded (an alias bomb expands to billions)
MAX_DEPTH = 50  # nesting of mappings and lists


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of ``path``, bounded (size, expanded values, nesting), with one-line ``ConfigError``s for
    missing, oversized and unreadable files and bad syntax."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes: a job or search-space file is at most {MAX_FILE_BYTES:,}")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): a job file is YAML text") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()  # parsed once: its size is checked before anything is built from it
        _check_size(path, node)
        return loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error: {where}{problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def _check_size(path: Path, root: yaml.Node | None) -> None:
    """``ConfigError`` when the document nests deeper than ``MAX_DEPTH`` or expands to more than ``MAX_NODES`` values
    (aliases counted each time they are used: what loading would build)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)] if root is not None else []
    while stack:  # post-order without recursion: children's expanded sizes first
        node, depth, expanded = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)")
        children = _children(node)
        if id(node) in sizes:
            continue
        if expanded or not children:
            sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    if root is not None and sizes[id(root)] > MAX_NODES:
        raise ConfigError(f"{path}: expands to more than {MAX_NODES:,} values (YAML aliases repeated): "
                          "not a job or search-space file")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
