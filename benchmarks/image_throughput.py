"""Image-scale meta-training throughput: metaopt beside higher, a plain torch.func loop and easyfsl, in one process.

Workload: glyphs 5-way 1-shot, 5 queries a class (28x28 grey), Conv-4 (64 filters), one
inner SGD step at 0.4, Adam 0.001 outside, the same episodes and the same initialisation
for every row, one CPU thread. Each row is checked against metaopt's on the first batch:
the meta-loss and the largest meta-gradient difference.

1. Gradient learners at meta-batch 4 and 16: second-order MAML (metaopt as it runs, on
   PyTorch's kernels instead of its fused Conv-4 block, and vmapped over the tasks; higher
   looping over the tasks; a plain torch.func loop; with ``--compiled``, compiled), then
   first-order MAML, ANIL, Meta-SGD and MAML++ (5 steps, multi-step loss, second order),
   every row timed interleaved.
2. Metric learners at 4 episodes a step: ProtoNet, Matching Nets, Relation Net (metaopt, and
   the same learner with every episode in one graph: one backward instead of one per episode),
   and, where easyfsl imports (``make bench-easyfsl``: it needs torchvision, which the pinned
   torch lacks), each beside easyfsl 1.5's learner configured alike: Matching Nets with
   full-context embeddings, Relation Nets on 64x7x7 maps (Conv-4 pooling two blocks) with each
   library's own relation module.
3. ResNet-12 at 84x84 (miniImageNet's shape; random images): MAML and ProtoNet, meta-batch
   4, with the peak memory of each row.
4. Peak memory of second-order MAML on Conv-4 at meta-batch 16: metaopt and higher.

Rows are timed interleaved (one window of each row in turn, ``--windows`` rounds for table 1,
10 for table 2), so that the machine's drift lands on every row alike; a row's speed is the
median of its windows, a ratio between two rows the median of their windows' ratios. The process is a
trial's, for every row alike: freed memory kept (``--default-malloc`` leaves glibc's default) and, while the
rows are timed, what the warmed-up process holds left out of Python's full collections, as ``fit()`` runs a
trial's loop (``--default-gc`` leaves the collector as it is).

The peers (higher, the torch.func loop, easyfsl) run the same Conv-4 module with PyTorch's own
batch-norm, max-pool and ReLU kernels, as their users have them: the fused block is metaopt's.
Peak memory is the peak resident set of a fresh (spawned) process that runs only that row (without the ceiling's
replay, which holds every recorded convolution's tensors at once),
and what the row added to it once its workload was built. ``--device cuda`` runs tables 1 and 2 on a GPU (meta-batch 32 too) and reports
``torch.cuda.max_memory_allocated`` instead.

    python benchmarks/image_throughput.py [--iterations 20] [--quick] [--compiled] [--device cpu]
        [--json benchmarks/results/image_throughput.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import multiprocessing
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from metaopt.allocator import keep_freed_memory, long_lived_frozen
from metaopt.learners import LEARNERS
from metaopt.models import build_backbone
from metaopt.models.fused import NormPoolReLU
from metaopt.models.thin_conv import ThinConv2d
from metaopt.search.fit import bf16_supported
from metaopt.tasks import FAMILIES, TaskBatch

INNER_LR, OUTER_LR, WAYS = 0.4, 0.001, 5
Step = Callable[[TaskBatch], tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (meta-loss, meta-gradients)


MALLOC_KEPT = [False]  # whether main() set glibc's malloc as a trial's (memory rows' fresh processes do the same)
GC_FROZEN = [True]  # whether the timed steps run with the warmed-up process's objects frozen, as fit() runs a trial's


# -- the rows ---------------------------------------------------------------------------------------------------
def ours(method: str, mapping: str = "auto", *, compile: bool = False,
         **hparams: Any) -> Callable[[torch.nn.Module], Step]:
    """A metaopt learner's meta-step (its meta-gradient, then Adam; ``compile``: through ``torch.compile``)."""

    def build(model: torch.nn.Module) -> Step:
        defaults = {"inner_lr": INNER_LR, "outer_lr": OUTER_LR} if method not in METRIC else {"outer_lr": OUTER_LR}
        options = {"compile": True} if compile else {}  # only the gradient learners compile
        learner = LEARNERS[method](model, {**defaults, **hparams}, task_kind="classification", n_way=WAYS,
                                   max_iterations=100_000, **options)
        if mapping != "auto":
            learner.task_mapping = mapping
        if method in METRIC:
            def metric_step(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
                if mapping == "one-graph":  # the same learner, every episode in one graph, one backward
                    loss = learner.training_loss(learner.meta_parameters(), batch)
                    learner.outer.step(loss=loss)
                    return loss.detach(), {k: p.grad for k, p in learner.meta_parameters().items()}
                loss = learner.meta_step(batch)["loss"]
                return loss, {k: p.grad for k, p in learner.meta_parameters().items()}

            return metric_step

        def step(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss = learner.meta_step(batch)["loss"]
            return loss, {k: p.grad for k, p in learner.meta_parameters().items()}

        return step

    return build


def pytorch_kernels(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` running PyTorch's own batch-norm, max-pool and ReLU kernels, as a peer library's user has them: the
    fused Conv-4 block (``metaopt.models.fused``) is metaopt's, so every peer row turns it off (the same function)."""
    for module in model.modules():
        if isinstance(module, (NormPoolReLU, ThinConv2d)):
            module.fused = False
    return model


def with_pytorch_kernels(build: Callable[[torch.nn.Module], Step]) -> Callable[[torch.nn.Module], Step]:
    """The row ``build`` on PyTorch's own batch-norm, max-pool and ReLU kernels (what the fused block brings)."""
    return lambda model: build(pytorch_kernels(model))


def per_task_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  task_loss: Callable[[TaskBatch, int], torch.Tensor]) -> Step:
    """A peer's meta-step: each task's loss backpropagated on its own (a mean over the tasks), then one step."""

    def step(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for t in range(batch.num_tasks):
            loss = task_loss(batch, t) / batch.num_tasks
            loss.backward()
            total = total + loss.detach()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        optimizer.step()
        return total, grads

    return step


def higher_maml() -> Callable[[torch.nn.Module], Step]:
    """higher's MAML: a loop over the tasks, each its own differentiable inner loop (higher has no batched form)."""

    def build(model: torch.nn.Module) -> Step:
        import higher

        pytorch_kernels(model)
        outer = torch.optim.Adam(model.parameters(), lr=OUTER_LR)
        inner = torch.optim.SGD(model.parameters(), lr=INNER_LR)

        def task_loss(batch: TaskBatch, t: int) -> torch.Tensor:
            # copy_initial_weights=False: higher's default (True) gives a zero MAML meta-gradient.
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
                diffopt.step(F.cross_entropy(fmodel(batch.support_x[t]), batch.support_y[t]))
                return F.cross_entropy(fmodel(batch.query_x[t]), batch.query_y[t])

        return per_task_step(model, outer, task_loss)

    return build


def func_loop(model: torch.nn.Module) -> Step:
    """Second-order MAML as a plain torch.func loop: functional_call and torch.func.grad per task, autograd outside."""
    params = dict(pytorch_kernels(model).named_parameters())
    outer = torch.optim.Adam(params.values(), lr=OUTER_LR)

    def loss_fn(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    def step(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = torch.zeros(())
        for t in range(batch.num_tasks):
            g = grad(loss_fn)(params, batch.support_x[t], batch.support_y[t])
            fast = {k: p - INNER_LR * g[k] for k, p in params.items()}
            total = total + loss_fn(fast, batch.query_x[t], batch.query_y[t])
        total = total / batch.num_tasks
        grads = dict(zip(params, torch.autograd.grad(total, list(params.values()))))
        for k, p in params.items():
            p.grad = grads[k]
        outer.step()
        return total.detach(), grads

    return step


def easyfsl_row(method: str) -> Callable[[torch.nn.Module], Step]:
    """easyfsl's learner of ``method`` on the same backbone, one episode at a time (its API takes one), gradients
    summed over the step: PrototypicalNetworks; MatchingNetworks (always with its full-context-embedding LSTMs);
    RelationNetworks (its own default relation module on the backbone's feature maps)."""

    def build(model: torch.nn.Module) -> Step:
        from easyfsl import methods

        pytorch_kernels(model)
        if method == "protonet":
            net = methods.PrototypicalNetworks(model)
        elif method == "matchingnet":
            net = methods.MatchingNetworks(model, feature_dimension=model.embedding_size)
        else:  # easyfsl wants the maps, not metaopt's flattened embedding: the same module, unflattened
            maps = torch.nn.Sequential(model, torch.nn.Unflatten(1, model.feature_shape))
            net = methods.RelationNetworks(maps, feature_dimension=model.feature_shape[0])
        optimizer = torch.optim.Adam(net.parameters(), lr=OUTER_LR)

        def task_loss(batch: TaskBatch, t: int) -> torch.Tensor:
            net.process_support_set(batch.support_x[t], batch.support_y[t])
            return F.cross_entropy(net(batch.query_x[t]), batch.query_y[t])

        return per_task_step(model, optimizer, task_loss)

    return build


METRIC = ("protonet", "matchingnet", "relationnet")
# Each metric learner as easyfsl runs it: Matching Nets with full-context embeddings, Relation Nets on 64x7x7 maps
# (Conv-4 pooling its first two blocks, as Sung et al.'s embedding does).
AS_EASYFSL: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # method: (its hyperparameters, backbone options)
    "protonet": ({}, {}),
    "matchingnet": ({"fce": True}, {}),
    "relationnet": ({}, {"pooled_blocks": 2}),
}


# -- measuring --------------------------------------------------------------------------------------------------
def episodes(n: int, tasks: int, *, shape: tuple[int, ...] | None = None, device: str = "cpu") -> list[TaskBatch]:
    """``n`` batches of ``tasks`` glyphs 5w1s episodes (or random images of ``shape``), one stream for every row."""
    generator = torch.Generator().manual_seed(0)
    if shape is None:
        family = FAMILIES["glyphs"](ways=WAYS, shots=1, queries=5)
        batches = [family.sample(tasks, "train", generator) for _ in range(n)]
    else:
        labels = torch.arange(WAYS)
        batches = [TaskBatch(torch.randn(tasks, WAYS, *shape, generator=generator), labels.repeat(tasks, 1),
                             torch.randn(tasks, 5 * WAYS, *shape, generator=generator),
                             labels.repeat_interleave(5).repeat(tasks, 1)) for _ in range(n)]
    return [b.to(device) for b in batches]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(build: Callable[[torch.nn.Module], Step], init: torch.nn.Module, batches: list[TaskBatch], *,
        device: str = "cpu", windows: int = 3, ceiling: bool = True) -> dict[str, Any]:
    """Warm up on the first batch (its loss and gradients kept for the check), then time the rest in windows."""
    return run_interleaved({"row": (build, init)}, batches, device=device, windows=windows, ceiling=ceiling)["row"]


def run_interleaved(builds: dict[str, tuple[Callable[[torch.nn.Module], Step], torch.nn.Module]],
                    batches: list[TaskBatch], *, device: str = "cpu", windows: int = 3,
                    ceiling: bool = True) -> dict[str, dict[str, Any]]:
    """Every row warmed up on the first batch (its loss and gradients kept for the check), then timed on the rest in
    windows taken in turn — row 1's first window, row 2's, ..., row 1's second — so that a machine's drift (another
    process, the clock) lands on every row alike; each row's rate is the median of its windows."""
    steps, rows, convolutions = {}, {}, {}
    for name, (build, init) in builds.items():
        model = copy.deepcopy(init).to(device)
        torch.manual_seed(0)  # what a learner draws itself (a relation module, learned rates) is drawn alike in every row
        steps[name] = build(model)
        start = time.perf_counter()
        loss, grads = steps[name](batches[0])
        _sync(device)
        rows[name] = {"first_step_s": time.perf_counter() - start, "first_loss": float(loss),
                      "first_grads": {k: v.detach().clone().cpu() for k, v in grads.items() if v is not None}}
        if ceiling:
            with ConvolutionCalls() as recorded:  # one more step of every row alike, its convolutions recorded
                steps[name](batches[0])
            convolutions[name] = recorded.calls
    timed = batches[1:]
    per_window = max(1, len(timed) // windows)
    rates: dict[str, list[float]] = {name: [] for name in builds}
    with long_lived_frozen() if GC_FROZEN[0] else contextlib.nullcontext():  # as fit() does after a trial's first step
        for w in range(min(windows, len(timed))):
            chunk = timed[w * per_window:(w + 1) * per_window]
            for name, step in steps.items():
                start = time.perf_counter()
                for batch in chunk:
                    step(batch)
                _sync(device)
                rates[name].append(len(chunk) / (time.perf_counter() - start))
    for name, row in rows.items():
        row["it_per_s"] = statistics.median(rates[name])
        row["window_rates"] = rates[name]
        row["tasks_per_s"] = row["it_per_s"] * batches[0].num_tasks
        if ceiling:  # the replay holds every recorded call's tensors at once: a memory row leaves it out
            row["convolutions"] = len(convolutions[name])
            row["conv_replay_ms"] = replay_ms(convolutions[name], device)
        row["step_ms"] = 1000 / row["it_per_s"]
    return rows


def paired_ratio(row: dict[str, Any], peer: dict[str, Any]) -> float:
    """``row``'s speed over ``peer``'s: the median of their windows' ratios, each pair timed in the same round, so a
    drift of the machine between rounds cancels (the ratio of the medians would pick up a round's noise on one side)."""
    return statistics.median(a / b for a, b in zip(row["window_rates"], peer["window_rates"], strict=True))


class ConvolutionCalls(TorchDispatchMode):
    """Every convolution a step calls below autograd — forward, backward and double backward
    (``aten.convolution``, ``aten.convolution_backward``) — with its arguments' shapes, strides and dtypes."""

    OPS = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.OPS:
            spec = lambda t: (tuple(t.shape), t.stride(), t.dtype, t.device) if isinstance(t, torch.Tensor) else t  # noqa: E731
            self.calls.append((func, tree_map(spec, args), tree_map(spec, kwargs)))
        return func(*args, **kwargs)


def replay_ms(calls: list[tuple[Any, tuple, dict]], device: str, repeats: int = 10) -> float:
    """The time of a step's convolutions alone, called again on tensors of the same shapes, strides and dtypes
    (median ms over ``repeats`` replays of them all): the step's ceiling where everything else were free."""
    def tensor(spec: Any) -> Any:
        if _is_spec(spec):
            shape, stride, dtype, where = spec  # strides as recorded, expanded (0) ones too: a view of random storage
            storage = 1 + sum((n - 1) * st for n, st in zip(shape, stride)) if all(shape) else 0
            return torch.rand(storage, device=where).to(dtype).as_strided(shape, stride)
        return spec

    ready = [(func, tree_map(tensor, args, is_leaf=_is_spec), tree_map(tensor, kwargs, is_leaf=_is_spec))
             for func, args, kwargs in calls]
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for func, args, kwargs in ready:
                func(*args, **kwargs)
            _sync(device)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def _is_spec(x: Any) -> bool:
    return isinstance(x, tuple) and len(x) == 4 and isinstance(x[2], torch.dtype)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM): ``ru_maxrss`` keeps the peak of the image it was spawned from
    (Linux carries it across ``exec``), so a row spawned by a big parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The rows of the memory tables, by name: a spawned child (a fresh process) rebuilds its row from these.
ROWS: dict[str, Callable[[], Callable[[torch.nn.Module], Step]]] = {
    "metaopt maml": lambda: ours("maml"),
    "metaopt maml, vmapped over tasks": lambda: ours("maml", "vmap"),
    "higher 0.2.1 maml (per-task loop)": higher_maml,
    "metaopt protonet": lambda: ours("protonet"),
    "metaopt protonet, all episodes in one graph": lambda: ours("protonet", "one-graph"),
}


def workload(backbone: str, meta_batch: int, n: int, device: str = "cpu") -> tuple[torch.nn.Module, list[TaskBatch]]:
    """The initialisation and the batches of a memory row: ``conv4`` / ``resnet12`` headed, or ``*-embedding``."""
    name, _, role = backbone.partition("-")
    torch.manual_seed(0)
    shape = (1, 28, 28) if name == "conv4" else (3, 84, 84)
    init = build_backbone({"name": name}, input_shape=shape, out_features=None if role == "embedding" else WAYS)
    return init, episodes(n + 1, meta_batch, shape=None if name == "conv4" else shape, device=device)


def _in_child(row: str, backbone: str, meta_batch: int, n: int, answer: Any, kept: bool) -> None:
    torch.set_num_threads(1)
    if kept:
        keep_freed_memory()
    init, batches = workload(backbone, meta_batch, n)
    start = _rss_mb()
    result = run(ROWS[row](), init, batches, windows=1, ceiling=False)
    peak = _peak_rss_mb()
    answer.send({"it_per_s": result["it_per_s"], "peak_rss_mb": peak, "added_mb": peak - start,
                 "first_loss": result["first_loss"]})


def run_with_memory(row: str, backbone: str, meta_batch: int, n: int, device: str = "cpu") -> dict[str, Any]:
    """The row ``row`` of ``ROWS`` in a fresh (spawned) process that runs only it, with that process's peak memory:
    its peak resident set, and what the row added to the process as it stood once the workload was built."""
    if device.startswith("cuda"):
        init, batches = workload(backbone, meta_batch, n, device)
        torch.cuda.reset_peak_memory_stats()
        result = run(ROWS[row](), init, batches, device=device, windows=1, ceiling=False)
        return {**result, "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20}
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_in_child, args=(row, backbone, meta_batch, n, send, MALLOC_KEPT[0]))
    child.start()
    answer = receive.recv()
    child.join()
    return answer


def _checked(rows: dict[str, dict[str, Any]], reference: str) -> None:
    ref = rows[reference]
    for row in rows.values():
        row["loss_diff"] = abs(row["first_loss"] - ref["first_loss"])
        common = set(row["first_grads"]) & set(ref["first_grads"])
        row["max_grad_diff"] = max((row["first_grads"][k] - ref["first_grads"][k]).abs().max().item() for k in common)


def _print(title: str, rows: dict[str, dict[str, Any]], peers: dict[str, str], unit: str = "it/s") -> None:
    """The table of ``rows``, each beside every peer (``x_<peer>``, a paired ratio, kept in the row for the JSON)."""
    keys = {n: f"x_{n.replace(' ', '_')}" for n in peers}
    for row in rows.values():
        for n, peer in peers.items():
            if peer in rows:
                row[keys[n]] = paired_ratio(row, rows[peer])
    print(f"\n{title}")
    names = list(peers)
    print(f"{'implementation':<46}{unit:>9}" + "".join(f"{'x ' + n:>14}" for n in names)
          + f"{'|loss diff|':>13}{'|grad diff|':>13}{'step ms':>9}{'conv ms':>9}{'step/conv':>10}")
    for name, row in rows.items():
        ratios = "".join(f"{row[keys[n]]:>13.2f}x" if keys[n] in row else f"{'-':>14}" for n in names)
        ceiling = (f"{row['step_ms']:>9.1f}{row['conv_replay_ms']:>9.1f}{row['step_ms'] / row['conv_replay_ms']:>9.2f}x"
                   if row.get("conv_replay_ms") else "")
        print(f"{name:<46}{row['it_per_s']:>9.2f}{ratios}{row.get('loss_diff', 0):>13.1e}"
              f"{row.get('max_grad_diff', 0):>13.1e}{ceiling}")
    print("(conv ms: the step's own convolution calls, forward and backward, replayed alone on tensors of their shapes,"
          " strides and dtypes — the step's time if everything else were free)")


def _plain(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:  # noqa: D103
    return {name: {k: v for k, v in row.items() if k != "first_grads"} for name, row in rows.items()}


def in_bf16(build: Callable[[torch.nn.Module], Step]) -> Callable[[torch.nn.Module], Step]:
    """The row ``build`` with its steps under bfloat16 autocast, as ``precision: bf16`` runs a job's meta-steps."""

    def wrapped(model: torch.nn.Module) -> Step:
        step = build(model)

        def autocast_step(batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            with torch.autocast(batch.support_x.device.type, dtype=torch.bfloat16):
                return step(batch)

        return autocast_step

    return wrapped


def float64_errors(rows: dict[str, dict[str, Any]], init: torch.nn.Module, batch: TaskBatch) -> None:
    """Each row's first meta-gradient against metaopt's in float64 on the same batch: ||g - g64|| / ||g64|| over every
    parameter (``grad_error_f64``)."""
    model = copy.deepcopy(init).double().to(batch.support_x.device)
    torch.manual_seed(0)
    exact = TaskBatch(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y)
    reference = {k: v.detach().cpu() for k, v in ours("maml")(model)(exact)[1].items()}
    norm = sum(v.square().sum() for v in reference.values()).sqrt()
    for row in rows.values():
        grads = row["first_grads"]
        if set(grads) == set(reference):
            row["grad_error_f64"] = float(sum((grads[k].double() - reference[k]).square().sum()
                                              for k in reference).sqrt() / norm)


def gradient_table(init: torch.nn.Module, meta_batch: int, n: int, device: str, quick: bool,
                   compiled: bool = False, windows: int = 5) -> dict[str, Any]:
    batches = episodes(n + 1, meta_batch, device=device)
    builds: dict[str, Callable[[torch.nn.Module], Step]] = {
        "metaopt maml": ours("maml"),
        "metaopt maml, PyTorch's kernels (no fused block)": with_pytorch_kernels(ours("maml")),
        "metaopt maml, vmapped over tasks": ours("maml", "vmap"),
        "higher 0.2.1 maml (per-task loop)": higher_maml(),
        "torch.func per-task loop": func_loop,
    }
    if bf16_supported(torch.device(device)):
        builds["metaopt maml, bf16 autocast (precision: bf16)"] = in_bf16(ours("maml"))
    if not quick:
        builds |= {
            "metaopt fomaml": ours("fomaml"),
            "metaopt anil": ours("anil"),
            "metaopt metasgd": ours("metasgd"),
            "metaopt mamlpp (5 steps, MSL, second order)": ours("mamlpp", inner_steps=5, first_order_until=0.0,
                                                                inner_lr=0.1),
        }
    if compiled:  # its first step compiles (minutes on Conv-4 with a cold inductor cache): untimed, as every warm-up
        builds["metaopt maml, compiled (compile: always)"] = ours("maml", compile=True)
    rows = run_interleaved({name: (build, init) for name, build in builds.items()}, batches, device=device,
                           windows=windows)
    for name, row in rows.items():
        print(f"  {name}: {row['it_per_s']:.2f} it/s (first step {row['first_step_s']:.1f} s)", flush=True)
    _checked({k: rows[k] for k in list(builds)[:5]}, "metaopt maml")
    float64_errors(rows, init, batches[0])
    for name, row in rows.items():
        if "grad_error_f64" in row:
            print(f"  {name}: meta-gradient {row['grad_error_f64']:.1e} off float64 (relative, first batch)")
    _print(f"1. gradient learners, Conv-4, glyphs 5w1s, meta-batch {meta_batch}, {device}", rows,
           {"higher": "higher 0.2.1 maml (per-task loop)", "func loop": "torch.func per-task loop"})
    return _plain(rows)


def metric_table(init: torch.nn.Module, n: int, device: str) -> dict[str, Any]:
    """Each metric learner as it runs, with every episode in one graph, and as easyfsl configures it (beside easyfsl
    on that configuration, where easyfsl imports)."""
    batches = episodes(n + 1, 4, device=device)
    builds: dict[str, tuple[Callable[[torch.nn.Module], Step], torch.nn.Module]] = {}
    try:
        import easyfsl  # noqa: F401

        has_easyfsl = True
    except (ImportError, RuntimeError) as error:  # torchvision beside the wrong torch raises RuntimeError
        print(f"  easyfsl unavailable ({type(error).__name__}): run `make bench-easyfsl`")
        has_easyfsl = False
    for method in METRIC:
        builds[f"metaopt {method}"] = ours(method), init
        builds[f"metaopt {method}, all episodes in one graph"] = ours(method, "one-graph"), init
        hparams, options = AS_EASYFSL[method]
        if hparams or options:
            torch.manual_seed(0)
            own = build_backbone({"name": "conv4", **options}, input_shape=(1, 28, 28), out_features=None)
            builds[f"metaopt {method} as easyfsl runs it"] = ours(method, **hparams), own
        else:
            own = init
        if has_easyfsl:
            builds[f"easyfsl 1.5 {method}"] = easyfsl_row(method), own
    rows = run_interleaved(builds, batches, device=device, windows=10)
    for name, row in rows.items():
        print(f"  {name}: {row['it_per_s']:.2f} steps/s", flush=True)
    for method in METRIC:
        _checked({k: rows[k] for k in rows if k.startswith(f"metaopt {method}") and "easyfsl" not in k},
                 f"metaopt {method}")
        for name in (f"metaopt {method}", f"metaopt {method}, all episodes in one graph"):
            rows[name]["x_one_graph"] = (rows[name]["it_per_s"]
                                         / rows[f"metaopt {method}, all episodes in one graph"]["it_per_s"])
        peer = rows.get(f"easyfsl 1.5 {method}")
        mine = f"metaopt {method} as easyfsl runs it" if f"metaopt {method} as easyfsl runs it" in rows \
            else f"metaopt {method}"
        if peer:  # the median of the paired windows' ratios: each pair ran back to back
            rows[mine]["x_easyfsl"] = paired_ratio(rows[mine], peer)
            peer["x_easyfsl"] = 1.0
    print(f"\n2. metric learners, Conv-4, glyphs 5w1s, 4 episodes a step, {device} (losses differ from easyfsl's: "
          "it scores ProtoNet by Euclidean distance, ours by its square; its relation module is its own)")
    print(f"{'implementation':<46}{'steps/s':>9}{'x one graph':>12}{'x easyfsl':>11}{'|loss diff|':>13}{'|grad diff|':>13}"
          f"{'step ms':>9}{'conv ms':>9}{'step/conv':>10}")
    for name, row in rows.items():
        own = f"{row['x_one_graph']:.2f}x" if "x_one_graph" in row else "-"
        versus = f"{row['x_easyfsl']:.2f}x" if "x_easyfsl" in row else "-"
        print(f"{name:<46}{row['it_per_s']:>9.2f}{own:>12}{versus:>11}{row.get('loss_diff', 0):>13.1e}"
              f"{row.get('max_grad_diff', 0):>13.1e}{row['step_ms']:>9.1f}{row['conv_replay_ms']:>9.1f}"
              f"{row['step_ms'] / row['conv_replay_ms']:>9.2f}x")
    return _plain(rows)


def resnet_table(n: int, device: str) -> dict[str, Any]:
    rows = {name: run_with_memory(name, "resnet12" if "maml" in name else "resnet12-embedding", 4, n, device)
            for name in ("metaopt maml", "higher 0.2.1 maml (per-task loop)", "metaopt protonet",
                         "metaopt protonet, all episodes in one graph")}
    print(f"\n3. ResNet-12, 84x84x3 random episodes (5w1s, 5 queries), meta-batch 4, {device}")
    key = "peak_cuda_mb" if device.startswith("cuda") else "peak_rss_mb"
    print(f"{'implementation':<46}{'it/s':>9}{'peak MB':>10}{'added MB':>10}")
    for name, row in rows.items():
        print(f"{name:<46}{row['it_per_s']:>9.3f}{row[key]:>10.0f}{row.get('added_mb', 0):>10.0f}")
    return _plain(rows)


def memory_table(n: int, device: str) -> dict[str, Any]:
    rows = {name: run_with_memory(name, "conv4", 16, n, device)
            for name in ("metaopt maml", "metaopt maml, vmapped over tasks", "higher 0.2.1 maml (per-task loop)")}
    print(f"\n4. peak memory, second-order MAML, Conv-4, glyphs 5w1s, meta-batch 16, {device}")
    key = "peak_cuda_mb" if device.startswith("cuda") else "peak_rss_mb"
    print(f"{'implementation':<46}{'it/s':>9}{'peak MB':>10}{'added MB':>10}")
    for name, row in rows.items():
        print(f"{name:<46}{row['it_per_s']:>9.3f}{row[key]:>10.0f}{row.get('added_mb', 0):>10.0f}")
    return _plain(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20, help="timed meta-iterations per Conv-4 row")
    parser.add_argument("--windows", type=int, default=5,
                        help="rounds of the gradient table (each row timed once a round; ratios are paired per round)")
    parser.add_argument("--resnet-iterations", type=int, default=3, help="timed meta-iterations per ResNet-12 row")
    parser.add_argument("--quick", action="store_true", help="second-order MAML at meta-batch 4 only")
    parser.add_argument("--meta-batches", type=int, nargs="+", default=None,
                        help="meta-batch sizes of the gradient table (default: 4 and 16; 32 too on cuda)")
    parser.add_argument("--compiled", action="store_true",
                        help="a compiled second-order MAML row too (its first step compiles: minutes with a cold cache)")
    parser.add_argument("--tables", nargs="+", default=["gradient", "metric", "memory", "resnet12"],
                        choices=["gradient", "metric", "memory", "resnet12"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "image_throughput.json"))
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (by default the process is a trial's: freed memory kept, "
                             "metaopt.allocator; every row, the peers' too, runs in this one process)")
    parser.add_argument("--default-gc", action="store_true",
                        help="leave Python's collector as it is while timing (by default, as in a trial's fit(), what "
                             "the warmed-up process holds is frozen: metaopt.allocator.long_lived_frozen)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    GC_FROZEN[0] = not args.default_gc
    kept = MALLOC_KEPT[0] = False if args.default_malloc else keep_freed_memory()
    print(f"malloc: {'freed memory kept, as in a trial (every row alike)' if kept else 'glibc default'}")
    torch.manual_seed(0)
    headed = build_backbone({"name": "conv4"}, input_shape=(1, 28, 28), out_features=WAYS)
    torch.manual_seed(0)
    embedding = build_backbone({"name": "conv4"}, input_shape=(1, 28, 28), out_features=None)
    report: dict[str, Any] = {"benchmark": "image_throughput", "torch": torch.__version__, "device": args.device,
                              "threads": args.threads, "machine": platform.processor() or platform.machine(),
                              "iterations": args.iterations, "windows": args.windows, "malloc_keeps_freed": kept,
                              "gc_frozen_while_timed": GC_FROZEN[0]}
    sizes = [4] if args.quick else [4, 16] + ([32] if args.device.startswith("cuda") else [])
    sizes = args.meta_batches or sizes
    tables = ["gradient"] if args.quick else args.tables
    if "gradient" in tables:
        report["gradient"] = {str(m): gradient_table(headed, m, args.iterations, args.device, args.quick, args.compiled,
                                                    args.windows)
                              for m in sizes}
    if "metric" in tables:
        report["metric"] = metric_table(embedding, args.iterations, args.device)
    if "memory" in tables:
        report["memory"] = memory_table(max(2, args.iterations // 10), args.device)
    if "resnet12" in tables:
        report["resnet12"] = resnet_table(args.resnet_iterations, args.device)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
