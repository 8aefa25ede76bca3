"""adam_c.torch under FSDP2 (DTensor params) on 2 gloo processes: same training as torch.optim.AdamW, clipping, DCP."""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

fsdp = pytest.importorskip("torch.distributed.fsdp", reason="torch without torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("torch without FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is not available in this torch build")

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where the worker script lives
WORKER = os.path.join(TESTS, "_torch_fsdp_worker.py")
sys.path.insert(0, TESTS)
import _gloo_ranks  # noqa: E402
TIMEOUT_S, RTOL = 300, 1e-5
COMPARED = ("plain", "clip", "fused_clip", "offload")


def run_ranks(world, outdir, *scenarios):
    _gloo_ranks.run_ranks(WORKER, world, [outdir, *scenarios], TIMEOUT_S, TESTS)
    return {name: [torch.load(os.path.join(outdir, f"{name}.{r}.pt"), weights_only=False) for r in range(world)]
            for name in scenarios}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """2 ranks run every scenario (and save a DCP checkpoint after 3 steps); then 1 rank loads that checkpoint."""
    outdir = tmp_path_factory.mktemp("fsdp")
    out = run_ranks(2, outdir, *COMPARED, "dcp_save", "dcp_master", "rank_local")
    out.update(run_ranks(1, outdir, "dcp_load", "errors"))
    return out


def relative_error(actual, expected):
    return max(float((a - e).abs().max() / e.abs().max()) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("scenario", COMPARED)
def test_fsdp2_trains_as_torch_adamw(results, scenario):
    """Full params after 5 steps equal torch.optim.AdamW's under the same FSDP2 model (plain; clip_grad_norm_
    before step; adam_c's fused max_grad_norm against torch's clipping; CPUOffloadPolicy), the same on both ranks,
    with the moments kept as DTensors (what DCP saves and reshards)."""
    rank0, rank1 = results[scenario]
    assert relative_error(rank0["adam_c"], rank0["torch"]) < RTOL
    assert all(torch.equal(a, b) for a, b in zip(rank0["adam_c"], rank1["adam_c"]))
    assert rank0["adam_c_state_types"] == rank0["torch_state_types"] == ["DTensor", "Tensor"]


def test_fused_clipping_uses_the_norm_over_all_ranks(results):
    """step(max_grad_norm=) reduces the squared grads across the process group: the norm it clips by is
    clip_grad_norm_'s over the whole model (a rank's own shards give a smaller one), and it does clip."""
    rank0, rank1 = results["fused_clip"]
    ours, torchs = rank0["adam_c_norms"], rank0["torch_norms"]
    assert len(ours) == len(torchs) == 5 and ours == rank1["adam_c_norms"]
    for a, e in zip(ours, torchs):
        assert a == pytest.approx(e, rel=RTOL)
    assert min(ours) > 0.05  # MAX_NORM: every step clipped


def test_dcp_resume_continues_the_same_trajectory(results):
    """3 steps, dcp.save of get_state_dict(model, opt), a fresh model and optimizer, dcp.load + set_state_dict,
    2 steps: the same bits as 5 steps without the checkpoint (get_state_dict's state initialisation moved nothing:
    the worker checks it)."""
    for rank in results["dcp_save"]:
        assert all(torch.equal(a, b) for a, b in zip(rank["resumed"], rank["straight"], strict=True))


def test_dcp_resume_with_masters_and_ema(results):
    """bfloat16 params with float32 masters and an EMA: every state tensor a DTensor, and a DCP resume gives the
    same bits as the run without the checkpoint."""
    for rank in results["dcp_master"]:
        assert rank["state_types"] == {"step": "Tensor", "exp_avg": "DTensor", "exp_avg_sq": "DTensor",
                                       "master": "DTensor", "ema": "DTensor"}
        assert all(torch.equal(a, b) for a, b in zip(rank["resumed"], rank["straight"], strict=True))


def test_dcp_checkpoint_of_2_ranks_loads_on_1(results):
    """The 2-rank checkpoint loads resharded into a 1-rank FSDP2 model and optimizer and goes on as the 2-rank run
    (every rank sees the same batch, so the averaged grads are the same up to rounding)."""
    assert relative_error(results["dcp_load"][0]["resumed"], results["dcp_save"][0]["straight"]) < RTOL


@pytest.mark.parametrize("case, error, words", [
    ("partial", "ValueError", "Partial placement"),
    ("mixed_clip", "ValueError", "clip_grad_norm_"),
    ("compressed", "ValueError", "state_dtype='bfloat16'"),
    ("small_local_shard", "ValueError", "local shard has shape (1,)"),
    ("dtensor_grad_of_plain_param", "TypeError", "grad is a DTensor, its param a plain tensor"),
])
def test_what_cannot_be_stepped_is_refused_by_name(results, case, error, words):
    """A Partial DTensor param; fused clipping over DTensor and plain params together; compressed state of a
    DTensor param; state whose global shape and placements fit but whose local shard is smaller (the step would
    write past it); a DTensor grad of a plain param: each an error that names it, with the params left as they
    were."""
    kind, message, unchanged = results["errors"][0][case]
    assert kind == error and words in message and unchanged, (kind, message)


@pytest.mark.parametrize("case", ["found_inf_first_step", "found_inf", "refused"])
def test_a_step_that_ends_early_on_one_rank_skips_on_all(results, case):
    """Fused clipping reduces the norm across the ranks; a step that ends on rank 1 before its C call (its own
    found_inf, before or after the first plan; a step count refused in Python) still joins that reduction, with a
    NaN: no rank waits for ever, every rank skips (params unchanged, last_step_skipped), only rank 1 raises, and
    both step on together afterwards (the run returning at all is the no-hang check)."""
    rank0, rank1 = results["rank_local"]
    assert rank0[case] == (True, True, None)
    skipped, unchanged, error = rank1[case]
    assert unchanged
    if case == "refused":
        assert "largest step count" in error
    else:
        assert (skipped, error) == (True, None)
    assert rank0["state_after_skipped_first_step"] == rank1["state_after_skipped_first_step"] == 0
    assert rank0["steps"] == rank1["steps"] == [3]


def test_an_out_of_date_plan_joins_the_reduction_its_params_make(results):
    """A param list edited in place with a param fused clipping refuses (another placement), rank 0 ending its
    step early (found_inf): it joins only the reduction the current params make, which every rank refuses alike,
    so none waits; rank 1 gets the refusal; once the list is as it was, both clip and step together again."""
    rank0, rank1 = results["rank_local"]
    assert rank0["stale_plan"] == (True, True, None)
    skipped, unchanged, error = rank1["stale_plan"]
    assert unchanged and "one mesh and one placement" in error
    assert rank0["norm_after"] == rank1["norm_after"] > 0


def test_state_bytes_counts_this_ranks_shards(results):
    """state_bytes() of DTensor state: the bytes this rank holds (its local shards of exp_avg and exp_avg_sq)."""
    for rank in results["rank_local"]:
        assert rank["state_bytes"] == 2 * 4 * rank["local_numel"]


def test_a_dtensor_step_counter_is_read_as_a_plain_tensor(results):
    """state["step"] set to a (Replicate) DTensor: read as its value and kept as the plain tensor torch.optim
    keeps, and the step goes on from it."""
    assert results["errors"][0]["dtensor_step"] == ("Tensor", 2.0)


def test_fsdp_bench_reports_every_optimizer_and_the_floor(tmp_path):
    """python -m adam_c.bench.fsdp under torchrun (2 ranks, a tiny model, 2 rounds): a line per optimizer and the
    memory floor, each with its ratios to torch fused and to the floor."""
    import signal
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                             "-m", "adam_c.bench.fsdp", "--width", "48", "--rounds", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its ranks
        out, err = proc.communicate()
        pytest.fail("the FSDP2 bench did not finish in 120 s:\n" + out + err)
    assert proc.returncode == 0, out + err
    lines = out.splitlines()
    for name in ("adam_c", "torch foreach", "torch fused", "memory floor"):
        assert any(line.strip().startswith(name) and line.rstrip().endswith("x floor") for line in lines), out
    assert "1.00x fused" in next(line for line in lines if line.strip().startswith("torch fused"))
    assert "GB/s over all ranks" in out
