"""adam_c.torch across 2 gloo processes on localhost: DDP, and ZeroRedundancyOptimizer sharding adam_c.torch.AdamW."""
import copy
import os
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import adam_c.torch as at  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where the worker script lives
sys.path.insert(0, HERE)
import _gloo_ranks  # noqa: E402
import _torch_dist_worker as worker  # noqa: E402

WORLD, TIMEOUT_S, RTOL = 2, 180, 1e-9

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Runs the 2 ranks once (each a fresh interpreter, bounded in time) and returns their results."""
    out = str(tmp_path_factory.mktemp("dist") / "result")
    _gloo_ranks.run_ranks(os.path.join(HERE, "_torch_dist_worker.py"), WORLD, [out], TIMEOUT_S, HERE)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(WORLD)]


def single_process(cls=at.AdamW, **kwargs):
    model = worker.make_model()
    opt = cls(worker.param_groups(model), lr=worker.LR, weight_decay=worker.WEIGHT_DECAY, **kwargs)
    worker.train(model, opt, lambda x, y: (x, y))
    return model, opt


def assert_params_close(actual, expected, what):
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=RTOL, msg=lambda m: f"{what}, param {i}: {m}")


@pytest.mark.parametrize("mode", ["ddp", "zero", "zero-bucket-view"])
def test_sharded_training_equals_single_process(ranks, mode):
    model, _ = single_process()
    for r in range(WORLD):
        assert_params_close(ranks[r][mode], list(model.parameters()), f"{mode} rank {r}")
    torch_model, _ = single_process(torch.optim.AdamW, foreach=False)  # and torch agrees with both
    assert_params_close(ranks[0][mode], list(torch_model.parameters()), f"{mode} vs torch.optim.AdamW")


@pytest.mark.parametrize("mode", ["zero", "zero-bucket-view"])
def test_a_rank_holds_an_empty_group(ranks, mode):
    sizes = [ranks[r][mode + "-local-group-sizes"] for r in range(WORLD)]
    assert all(len(s) == 3 for s in sizes)  # every rank's local optimizer has all three groups
    assert any(0 in s for s in sizes)       # and some rank's group is empty
    assert sum(map(sum, sizes)) == len(list(worker.make_model().parameters()))


@pytest.mark.parametrize("cls", [at.AdamW, torch.optim.AdamW])
@pytest.mark.parametrize("mode", ["zero", "zero-bucket-view"])
def test_consolidated_state_dict_loads_and_continues(ranks, mode, cls):
    """consolidate_state_dict() gives a full checkpoint that adam_c.torch and torch.optim load, with the
    single-process run's state, and training continues identically."""
    sd = copy.deepcopy(ranks[0][mode + "-state-dict"])  # load_state_dict aliases its tensors, as torch's does
    ref_model, ref = single_process()
    model = worker.make_model()
    model.load_state_dict(ref_model.state_dict())
    opt = cls(worker.param_groups(model), lr=worker.LR, weight_decay=worker.WEIGHT_DECAY)
    opt.load_state_dict(sd)
    ref_sd = ref.state_dict()
    assert sorted(sd["state"]) == sorted(ref_sd["state"])
    for i, entry in ref_sd["state"].items():
        assert sd["state"][i]["step"].item() == entry["step"].item() == worker.STEPS
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sd["state"][i][key], entry[key], rtol=RTOL, atol=RTOL)
    for step in range(worker.STEPS, worker.STEPS + 4):
        for m, o in ((model, opt), (ref_model, ref)):
            x, y = worker.batch(step)
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    assert_params_close(list(model.parameters()), list(ref_model.parameters()), "after resuming")
