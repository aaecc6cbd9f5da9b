"""Fixed-seed fingerprints of every learner, to show a refactoring changed no number.

For each learner (gradient learners and the hypergradient learner on a 1-4-4-1 tanh MLP in
float64 on sine, metric learners and gradient learners on Conv-4 on glyphs, pretrain on pooled
sine points, RL², MAML and first-order MAML on bandits and tabular MDPs), a few meta-steps from a
fixed seed: the loss of each step, the sum of every meta-parameter after them, the sum of its
predictions on held-out tasks, and for RL the total reward it earns. Run it on two checkouts
and compare:

    python benchmarks/learner_fingerprints.py before.json          # on the old checkout
    python benchmarks/learner_fingerprints.py after.json --compare before.json
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metaopt.learners import LEARNERS
from metaopt.learners.checkpoint import build_learner
from metaopt.tasks import Sine
from metaopt.tasks.glyphs import Glyphs
from tests.helpers import sine_batch

torch.set_num_threads(1)
out = {}

def fp(learner, batches, test) -> dict:  # noqa: ANN001
    """The learner's losses over ``batches``, its meta-parameters' sums, its predictions' sum on ``test``."""
    losses = []
    for b in batches:
        losses.append(float(learner.meta_step(b)["loss"]))
    params = {k: float(v.detach().double().sum()) for k, v in learner.meta_parameters().items()}
    pred = None if test is None else float(learner.predict(test).double().sum())  # RL learners play instead
    return {"losses": losses, "params": params, "pred": pred, "iteration": learner.iteration}

sine = [sine_batch(3, seed=s) for s in range(4)]
test = sine_batch(4, seed=99)
cases = {
    "maml": {"inner_lr": 0.1, "inner_steps": 2},
    "maml-adam": {"inner_lr": 0.05, "inner_steps": 2, "inner_optimizer": "adam", "max_grad_norm": 0.5},
    "fomaml": {"inner_lr": 0.1},
    "anil": {"inner_lr": 0.1},
    "metasgd": {"inner_lr": 0.1},
    "metacurvature": {"inner_lr": 0.1, "inner_steps": 2},
    "metacurvature-lr": {"inner_lr": 0.1, "curvature": "lowrank"},
    "reptile": {"inner_lr": 0.1, "outer_lr": 0.5},
    "mamlpp": {"inner_lr": 0.1, "inner_steps": 3},
    "hypergrad": {"inner_lr": 0.1, "inner_steps": 2},
    "hypergrad-anil": {"inner_lr": 0.1, "inner_steps": 2, "base": "anil"},
    "hypergrad-fomaml": {"inner_lr": 0.1, "inner_steps": 2, "base": "fomaml"},
    "hypergrad-mamlpp": {"inner_lr": 0.1, "inner_steps": 3, "base": "mamlpp"},
    "hypergrad-shared": {"inner_lr": 0.1, "inner_steps": 2, "shared_lr": True},
    "scratch": {"steps": 5},
    "maml-ft": {"inner_lr": 0.1, "ft_steps": 3},
}
for name, hp in cases.items():
    method = name.split("-")[0]
    torch.manual_seed(0)
    net = __import__("metaopt.models", fromlist=["MLP"]).MLP(in_features=1, out_features=1, hidden=(4, 4), activation="tanh").double()
    learner = LEARNERS[method](net, hp, task_kind="regression", max_iterations=6)
    out[name] = fp(learner, sine, test)

family = Glyphs(ways=3, shots=1, queries=2, cache_dir=tempfile.mkdtemp(prefix="glyphs-"))
for method, hp in {"protonet": {}, "matchingnet": {}, "matchingnet-fce": {"fce": True}, "relationnet": {}, "siamese": {},
                   "maml": {"inner_lr": 0.1}, "mamlpp": {"inner_steps": 2}, "metasgd": {}}.items():
    torch.manual_seed(0)
    m = method.split("-")[0]
    learner = build_learner(m, {"meta_batch": 2, **hp}, backbone={"name": "conv4", "hidden": 8}, task_kind="classification",
                            input_shape=family.input_shape, output_size=3, n_way=3, max_iterations=4)
    g = torch.Generator().manual_seed(0)
    batches = [family.sample(2, "train", g) for _ in range(3)]
    out["glyphs-" + method] = fp(learner, batches, family.sample(3, "test", g))

# pretrain on sine pooled
torch.manual_seed(0)
s = Sine(shots=5, queries=5)
for hp in ({"adapt_steps": 3}, {"adapt_steps": 3, "fine_tune": "all"}):
    torch.manual_seed(0)
    learner = build_learner("pretrain", {"meta_batch": 16, **hp}, backbone={"name": "mlp", "hidden": [8, 8]}, task_kind="regression",
                            input_shape=(1,), output_size=1, max_iterations=4)
    g = torch.Generator().manual_seed(0)
    batches = [s.pooled(16, "train", g) for _ in range(3)]
    out["pretrain-" + hp.get("fine_tune", "head")] = fp(learner, batches, s.sample(3, "test", g))

# RL: rl2 and maml on bandits
from metaopt.tasks.bandit import Bandit
from metaopt.tasks.tabular_mdp import TabularMDP
for fam_name, fam in (("bandit", Bandit()), ("mdp", TabularMDP())):
    for method, hp in {"rl2": {"hidden": 8, "meta_batch": 8}, "maml": {"meta_batch": 8, "inner_lr": 0.5},
                       "fomaml": {"meta_batch": 8}}.items():
        torch.manual_seed(0)
        learner = build_learner(method, hp, backbone={"name": "mlp", "hidden": [8]}, task_kind="rl",
                                input_shape=fam.input_shape, output_size=fam.output_size, max_iterations=4)
        g = torch.Generator().manual_seed(0)
        batches = [fam.sample(8, "train", g) for _ in range(2)]
        r = fp(learner, batches, None)
        r["reward"] = float(learner.total_reward(fam.sample(4, "test", g), torch.Generator().manual_seed(3)).sum())
        out[f"{fam_name}-{method}"] = r
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("json", help="where to write the fingerprints")
parser.add_argument("--compare", help="fingerprints of another checkout: print which learners differ")
args = parser.parse_args()
Path(args.json).write_text(json.dumps(out, indent=1, sort_keys=True))
print(f"{len(out)} learners fingerprinted -> {args.json}")
if args.compare:
    other = json.loads(Path(args.compare).read_text())
    print(f"{'learner':<24}{'last loss here':>20}{'there':>20}  same?")
    for name in sorted(set(out) | set(other)):
        here, there = out.get(name), other.get(name)
        last = lambda f: "-" if f is None else f"{f['losses'][-1]:.10g}"  # noqa: E731
        print(f"{name:<24}{last(here):>20}{last(there):>20}  {'identical' if here == there else 'DIFFERENT'}")
