"""The model-based and in-context learners (``cnp``, ``anp``, ``icl``, ``snail``, ``mann``, ``metanet``): they learn a
family in a short run, read a task in one forward pass whichever other queries come with a query (and whatever the
order of its support set, except the sequential ones), train and score on every family of their kind (tables of
values and of classes, colour image folders, glyphs across fonts), and save, load and serve like every learner."""

from __future__ import annotations

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint, save_checkpoint
from metaopt.search.fit import fit
from metaopt.tasks import ImageFolder, Sine, Tabular
from metaopt.tasks.base import TaskBatch
from metaopt.tasks.glyphs import Glyphs, GlyphsCrossFont
from metaopt.tracking.mlflow_tracker import MlflowTrialLog
from metaopt.tracking.store import get_or_create_experiment
from tests.own_data import class_rows, draw_shapes, linear_rows, write_table

LEARNERS = ["cnp", "anp", "icl", "snail", "mann", "metanet"]
SEQUENTIAL = {"snail", "mann"}  # they read the support as a sequence, by design
MLP = {"name": "mlp", "hidden": [32, 32]}
SMALL = {"cnp": {"width": 32, "layers": 2}, "icl": {"width": 32, "depth": 2, "heads": 2},
         "anp": {"width": 32, "layers": 2, "heads": 2},
         "snail": {"filters": 8, "key_size": 8, "value_size": 8, "max_shots": 10},
         "mann": {"hidden": 32, "slots": 16, "slot_size": 8, "reads": 2},
         "metanet": {"hidden": 32, "key_size": 16}}
ITERATIONS = {"cnp": 100, "anp": 200, "icl": 200, "snail": 200, "metanet": 100}  # on glyphs
GLYPHS_LR = {"anp": 0.003, "snail": 0.003}  # the rest: 0.001
SINE_ITERATIONS = {"snail": 100, "mann": 200, "metanet": 100}  # the rest: 400


def _sine_learner(method: str, **hparams):
    torch.manual_seed(0)
    return build_learner(method, {**SMALL[method], "meta_batch": 16, "outer_lr": 0.01, **hparams}, backbone=MLP,
                         task_kind="regression", input_shape=(1,), output_size=1, max_iterations=400)


@pytest.mark.parametrize("method", LEARNERS)
def test_a_short_run_on_sine_predicts_new_tasks_better_than_the_untrained_network(method):
    family = Sine(shots=10, queries=10)
    learner = _sine_learner(method)
    test = family.fixed_tasks(100, "test", seed=1)[0]
    before = family.score_learner(learner, test)["loss"].mean()
    fit(learner, family, iterations=SINE_ITERATIONS.get(method, 400), generator=torch.Generator().manual_seed(0))
    after = family.score_learner(learner, test)["loss"].mean()
    assert after < 0.7 * before, (float(before), float(after))


@pytest.mark.parametrize("method", list(ITERATIONS))  # mann: its label-stream benchmark (it learns glyphs slowly)
def test_a_short_run_on_glyphs_classifies_new_classes_above_chance(method, tmp_path_factory):
    family = Glyphs(ways=3, shots=1, queries=3, cache_dir=tmp_path_factory.getbasetemp() / "glyph-cache-context")
    torch.manual_seed(0)
    learner = build_learner(method, {**SMALL[method], "meta_batch": 8, "outer_lr": GLYPHS_LR.get(method, 0.001)},
                            backbone={"name": "conv4", "hidden": 8}, task_kind="classification",
                            input_shape=family.input_shape, output_size=3, n_way=3, max_iterations=ITERATIONS[method])
    fit(learner, family, iterations=ITERATIONS[method], generator=torch.Generator().manual_seed(0))
    test = family.fixed_tasks(100, "test", seed=1)[0]
    accuracy = family.score_learner(learner, test)["accuracy"].mean()
    assert accuracy > 0.55, float(accuracy)  # chance: 1/3


@pytest.mark.parametrize("method", LEARNERS)
def test_a_query_is_predicted_whatever_the_support_order_and_the_other_queries(method):
    learner = _sine_learner(method)
    task = Sine(shots=10, queries=12).sample(1, "test", torch.Generator().manual_seed(3))
    sx, sy, qx = task.support_x[0], task.support_y[0], task.query_x[0]
    predicted = learner.adapt(sx, sy)(qx)
    shuffle = torch.randperm(10, generator=torch.Generator().manual_seed(4))
    reordered = learner.adapt(sx[shuffle], sy[shuffle])(qx)
    if method in SEQUENTIAL:  # a sequence model: another order is another reading
        assert not torch.allclose(reordered, predicted, atol=1e-4)
    else:
        assert torch.allclose(reordered, predicted, atol=1e-5)
    reverse = torch.arange(11, -1, -1)
    assert torch.allclose(learner.adapt(sx, sy)(qx[reverse]), predicted[reverse], atol=1e-5)
    assert torch.allclose(learner.adapt(sx, sy)(qx[:1]), predicted[:1], atol=1e-5)  # alone, as among the others
    batched = learner.predict(task)[0]  # the batched path reads the task as adapt does
    assert torch.allclose(batched, predicted, atol=1e-5)


def test_snail_reads_each_query_after_the_support_as_a_sequence_of_its_own_would():
    """The support's steps run once per task and each query takes one step per block (``Blocks``): the same as
    the paper's reading, each query the last step of its own sequence (float64, Conv-4 with its batch norm)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    learner = build_learner("snail", {"max_shots": 12}, backbone={"name": "conv4", "hidden": 8},
                            task_kind="classification", input_shape=(1, 28, 28), output_size=5, n_way=5)
    learner.backbone.double()
    for extra in learner.extras.values():
        extra.data = extra.data.double()
    task = Glyphs(ways=5, shots=2, queries=3).sample(2, "test", torch.Generator().manual_seed(0))
    task = TaskBatch(task.support_x.double(), task.support_y, task.query_x.double(), task.query_y)
    meta = learner.meta_parameters()
    with torch.no_grad():
        shared = learner.batch_predictions(meta, task)
        support = torch.cat([learner.embed_episodes(meta, task.support_x), learner.target_features(task.support_y, 5)],
                            -1)
        query = F.pad(learner.embed_episodes(meta, task.query_x), (0, 5))
        sequences = torch.cat([support[:, None].expand(-1, 15, -1, -1), query[:, :, None]], 2)  # a sequence per query
        last = learner.call("blocks", meta, sequences.flatten(0, 1).transpose(1, 2))[:, :, -1]
        own = learner.head(meta, last).unflatten(0, (2, 15))
    assert shared.shape == (2, 15, 5) and torch.allclose(shared, own, atol=1e-10)


def test_mann_writes_its_add_vector_to_memory_not_its_read_key():
    from metaopt.learners.mann import MemoryCore

    torch.manual_seed(0)
    core = MemoryCore(inputs=6, hidden=16, slots=8, slot_size=4, reads=2, gamma=0.95)
    steps = torch.randn(3, 5, 6)
    width = core.controller.hidden_size

    def reads() -> torch.Tensor:
        return core(steps)[..., width:]  # what the heads read back at each step

    assert reads().abs().max() > 0.05  # the add vectors written are read back
    with torch.no_grad():  # nothing to add: the memory stays empty whatever the keys ask, so every read is ~0
        core.adds.weight.zero_()
        core.adds.bias.zero_()
    assert reads().abs().max() < 1e-4


@pytest.mark.parametrize("method", LEARNERS)
def test_a_trained_learner_saves_loads_with_weights_only_and_serves_through_pyfunc(method, tmp_path):
    family = Sine(shots=5, queries=20)
    learner = _sine_learner(method)
    fit(learner, family, iterations=20, generator=torch.Generator().manual_seed(0))
    path = save_checkpoint(make_checkpoint(learner, backbone=MLP, input_shape=(1,), output_size=1),
                           tmp_path / "trial.pt")
    torch.load(path, weights_only=True)  # plain tensors and values only
    restored = load_checkpoint(path)
    task = family.sample(1, "test", torch.Generator().manual_seed(1))
    expected = learner.adapt(task.support_x[0], task.support_y[0])(task.query_x[0])
    assert torch.equal(restored.adapt(task.support_x[0], task.support_y[0])(task.query_x[0]), expected)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = get_or_create_experiment(MlflowClient(), f"context-{method}")
        with mlflow.start_run(experiment_id=experiment) as run:
            MlflowTrialLog(run.info.run_id).log_model(path, full=True)
        model = mlflow.pyfunc.load_model(MlflowClient().get_run(run.info.run_id).data.tags["metaopt.model_uri"])
    finally:
        mlflow.set_tracking_uri(previous)
    predicted = model.predict({"support_x": task.support_x[0].tolist(), "support_y": task.support_y[0].tolist(),
                               "query_x": task.query_x[0].tolist()})
    assert torch.allclose(torch.as_tensor(predicted, dtype=expected.dtype), expected, atol=1e-5)


def test_icl_grows_its_context_over_the_curriculum():
    learner = _sine_learner("icl", curriculum=0.5, min_context=2)
    batch = Sine(shots=10, queries=5).sample(4, "train", torch.Generator().manual_seed(0))
    sizes = []
    for iteration in (0, 100, 199, 200, 399):
        learner.iteration = iteration
        sizes.append(learner._context(batch).support_x.shape[1])
    assert sizes == [2, 6, 9, 10, 10]
    with torch.no_grad():  # at test, always the whole support set
        learner.iteration = 0
        assert learner._context(batch).support_x.shape[1] == 10


@pytest.mark.parametrize("method", ["icl", "anp"])
def test_heads_that_do_not_divide_the_width_are_one_line_before_anything_is_built(method):
    with pytest.raises(ValueError, match=rf"^{method}: heads \(4\) must divide width \(30\)$"):
        build_learner(method, {"width": 30, "heads": 4}, backbone=MLP, task_kind="regression", input_shape=(1,),
                      output_size=1)


def _families(root):
    """One family of each other kind and shape these learners read: a table of values, a table of classes, a folder
    of colour images, and glyphs meta-tested on another font (Conv-4 of 8 filters for the images)."""
    small_conv = {"name": "conv4", "hidden": 8}
    return {
        "tabular-regression": (Tabular(path=str(write_table(linear_rows(tasks=30, rows=15), root / "lin.csv")),
                                       task_column="user", target="y", kind="regression", shots=5, queries=5,
                                       cache_dir=root / "cache"), MLP),
        "tabular-classification": (Tabular(path=str(write_table(class_rows(tasks=30, rows=15), root / "cls.csv")),
                                           task_column="site", target="label", kind="classification", shots=4,
                                           queries=4, cache_dir=root / "cache"), MLP),
        "imagefolder-colour": (ImageFolder(root=str(draw_shapes(root / "shapes", per_class=4)), ways=3, shots=1,
                                           queries=2, size=20, channels=3, cache_dir=root / "cache"), small_conv),
        "glyphs-crossfont": (GlyphsCrossFont(ways=3, shots=1, queries=2), small_conv),
    }


@pytest.fixture(scope="module")
def other_families(tmp_path_factory):
    return _families(tmp_path_factory.mktemp("families"))


@pytest.mark.parametrize("name", ["tabular-regression", "tabular-classification", "imagefolder-colour",
                                  "glyphs-crossfont"])
@pytest.mark.parametrize("method", LEARNERS)
def test_every_learner_trains_and_scores_on_each_family_of_its_kind(method, name, other_families):
    family, backbone = other_families[name]
    torch.manual_seed(0)
    learner = build_learner(method, {**SMALL[method], "meta_batch": 2, "outer_lr": 0.001}, backbone=backbone,
                            task_kind=family.kind, input_shape=family.input_shape, output_size=family.output_size,
                            n_way=family.n_way, max_iterations=3)
    fit(learner, family, iterations=3, generator=torch.Generator().manual_seed(0))
    scores = family.score_learner(learner, family.fixed_tasks(4, "test", seed=1)[0])
    assert scores and all(bool(torch.isfinite(v).all()) for v in scores.values()), scores


@pytest.mark.parametrize("method", LEARNERS)
def test_a_class_absent_from_a_tasks_support_still_gets_a_finite_logit(method):
    # A table's tasks share global classes, and a task's few support rows need not show every one of them.
    torch.manual_seed(0)
    learner = build_learner(method, SMALL[method], backbone=MLP, task_kind="classification", input_shape=(3,),
                            output_size=3, n_way=3)
    batch = TaskBatch(torch.randn(2, 4, 3), torch.tensor([[0, 1, 0, 1], [0, 0, 1, 1]]), torch.randn(2, 5, 3),
                      torch.tensor([[0, 1, 2, 0, 1]] * 2))
    assert torch.isfinite(learner.predict(batch)).all()
    assert torch.isfinite(learner.training_loss(learner.meta_parameters(), batch))
