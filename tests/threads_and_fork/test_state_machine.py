"""Reliability: a hypothesis state machine interleaving steps (also from other threads and in fork children), group
edits, in-place array changes, state_dict round trips, pickle and deepcopy, checked bit for bit against the NumPy
oracle after every action."""
import copy
import json
import os
import pickle
import threading
import traceback
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import adam_c
from _forking import wait_for_child
from reference import adam_step_reference, assert_bitwise_equal

LRS = [1e-3, 0.1, np.float32(0.01), Fraction(1, 8), np.array(0.05)]
BETAS = [(0.9, 0.999), (0.5, 0.99), [0.0, 0.5], (np.float64(0.8), 0.9)]
SHAPES = [(1,), (3,), (5,), (7,), (), (3, 1), (1, 5), (0,)]
DTYPES = [np.float32, np.float64]


def _plain(group):
    """What the optimizer reads from a group, as the oracle's floats and bools."""
    b1, b2 = group["betas"]
    return dict(lr=float(group["lr"]), beta1=float(b1), beta2=float(b2), eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]), amsgrad=bool(group["amsgrad"]),
                maximize=bool(group["maximize"]), decoupled_weight_decay=bool(group["decoupled_weight_decay"]))


class OptimizerMachine(RuleBasedStateMachine):
    """The model: for each param array the optimizer holds, the oracle's expected values and state (by identity);
    the group structure itself is read from opt.param_groups, which the rules edit as a user would."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.arrays_made = 0
        a, b, c = self.new_array(), self.new_array(), self.new_array()
        self.opt = adam_c.Adam([{"params": [a, b]}, {"params": [c], "lr": 0.05, "amsgrad": True}], lr=0.01)
        self.model = {}  # id(array) -> {"p", "step", "m", "v", "vmax"} (None until the first step allocates)
        for p in (a, b, c):
            self.track(p)

    # ------------------------------------------------------------ helpers

    def new_array(self, shape=None, dtype=None):
        self.arrays_made += 1
        shape = SHAPES[self.arrays_made % len(SHAPES)] if shape is None else shape
        dtype = DTYPES[self.arrays_made % 2] if dtype is None else dtype
        return self.rng.standard_normal(shape).astype(dtype)

    def track(self, p):
        self.model[id(p)] = {"array": p, "p": p.copy(), "step": 0, "m": None, "v": None, "vmax": None}

    def params(self):
        return [p for g in self.opt.param_groups for p in g["params"]]

    def grads(self, data, none_ok=True):
        out = []
        for p in self.params():
            if none_ok and data.draw(st.integers(0, 4)) == 0:
                out.append(None)
            else:
                out.append((self.rng.standard_normal(p.shape) * 0.5).astype(p.dtype))
        return out

    def snapshot(self):
        return [p.copy() for p in self.params()], {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                                       for k, v in e.items()} for i, e in self.opt.state.items()}

    def assert_unchanged(self, before, what):
        after = self.snapshot()
        for x, y in zip(before[0], after[0]):
            assert_bitwise_equal(y, x, what)
        assert sorted(before[1]) == sorted(after[1]), what
        for i in before[1]:
            for k, v in before[1][i].items():
                if isinstance(v, np.ndarray):
                    assert_bitwise_equal(after[1][i][k], v, f"{what}: state[{i}][{k}]")
                else:
                    assert after[1][i][k] == v, what

    def drop_removed(self):
        """The optimizer drops a removed param's state at its next call; the invariants make one after each rule."""
        held = {id(p) for p in self.params()}
        for key in [k for k in self.model if k not in held]:
            del self.model[key]
        for p in self.params():
            if id(p) not in self.model:
                self.track(p)

    # ------------------------------------------------------------ rules

    @rule(data=st.data(), form=st.sampled_from(["list", "tuple", "generator", "buffers", "thread"]))
    def step(self, data, form):
        self.take_step(data, form)

    def maybe_step(self, data):
        """Most edits are followed by a step, so that steps interleave densely with everything else."""
        if data.draw(st.integers(0, 3), label="steps after the edit") > 0:
            self.take_step(data, data.draw(st.sampled_from(["list", "buffers"])))

    def take_step(self, data, form):
        self.drop_removed()  # a step is a call of the optimizer: removed params lose their state here
        grads = self.grads(data, none_ok=form != "buffers")
        if form == "buffers":  # through the optimizer-owned opt.grads (re-aligned after group edits)
            buffers = self.opt.grads
            assert len(buffers) == len(grads)
            for b, g in zip(buffers, grads):
                b[...] = g
            self.opt.step()
        elif form == "thread":  # from another Python thread
            errors = []
            worker = threading.Thread(target=lambda: self.call_catching(errors, self.opt.step, grads))
            worker.start()
            worker.join(60)
            assert not worker.is_alive() and not errors, errors
        else:
            self.opt.step(tuple(grads) if form == "tuple" else (g for g in grads) if form == "generator" else grads)
        self.apply_to_model(grads)

    @staticmethod
    def call_catching(errors, fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    def apply_to_model(self, grads):
        it = iter(grads)
        for group in self.opt.param_groups:
            hp = _plain(group)
            for p in group["params"]:
                rec, g = self.model[id(p)], next(it)
                if rec["m"] is None:
                    rec["m"], rec["v"] = np.zeros_like(rec["p"]), np.zeros_like(rec["p"])
                if hp["amsgrad"] and rec["vmax"] is None:
                    rec["vmax"] = np.zeros_like(rec["p"])
                if g is None:
                    continue
                rec["step"] += 1
                vmax = rec["vmax"] if rec["vmax"] is not None else np.zeros_like(rec["p"])
                newp, m, v, newvmax = adam_step_reference(rec["p"], g.reshape(rec["p"].shape), rec["m"], rec["v"],
                                                          vmax, step=rec["step"], **hp)
                rec["p"], rec["m"], rec["v"] = newp, m, v
                if hp["amsgrad"]:
                    rec["vmax"] = newvmax

    @rule(data=st.data())
    def fork_child_steps_its_copy(self, data):
        """A fork() child steps its copy of the optimizer and checks it against its copy of the oracle; the
        parent's optimizer is not affected."""
        self.drop_removed()
        grads = self.grads(data)
        before = self.snapshot()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.opt.step(grads)
                self.apply_to_model(grads)
                self.matches_the_oracle()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        code = wait_for_child(pid, 60, "the fork child's step")
        assert code == 0, "the fork child's step did not match the oracle"
        self.assert_unchanged(before, "the parent after the child stepped")

    @rule(data=st.data())
    def bad_step_changes_nothing(self, data):
        grads = self.grads(data, none_ok=False)
        if not grads:
            return
        k = data.draw(st.integers(0, len(grads) - 1))
        grads[k] = np.ones(grads[k].size + 2, grads[k].dtype)
        before = self.snapshot()
        try:
            self.opt.step(grads)
        except ValueError as exc:
            assert f"grads[{k}]" in str(exc), exc
        else:
            raise AssertionError("a grad of the wrong size was accepted")
        self.assert_unchanged(before, "after a rejected step")

    @rule(data=st.data(), key=st.sampled_from(["lr", "betas", "weight_decay", "amsgrad", "maximize",
                                                "decoupled_weight_decay"]))
    def set_hyperparameter(self, data, key):
        gi = data.draw(st.integers(0, len(self.opt.param_groups) - 1))
        values = {"lr": LRS, "betas": BETAS, "weight_decay": [0.0, 0.1, np.float32(0.5)],
                  "amsgrad": [True, False, np.bool_(True), 0], "maximize": [True, False],
                  "decoupled_weight_decay": [True, False]}[key]
        self.opt.param_groups[gi][key] = data.draw(st.sampled_from(values))
        self.maybe_step(data)

    @rule(data=st.data())
    def append_param(self, data):
        gi = data.draw(st.integers(0, len(self.opt.param_groups) - 1))
        self.opt.param_groups[gi]["params"].append(self.new_array())
        self.maybe_step(data)

    @rule(data=st.data())
    def pop_param(self, data):
        gi = data.draw(st.integers(0, len(self.opt.param_groups) - 1))
        members = self.opt.param_groups[gi]["params"]
        if members:
            members.pop(data.draw(st.integers(0, len(members) - 1)))
        self.maybe_step(data)

    @rule(data=st.data())
    def replace_params(self, data):
        """group["params"] = a new list: some of the old members (reordered), some new arrays."""
        gi = data.draw(st.integers(0, len(self.opt.param_groups) - 1))
        old = list(self.opt.param_groups[gi]["params"])
        kept = data.draw(st.permutations(old)) if old else []
        kept = kept[:data.draw(st.integers(0, len(kept)))]
        new = [self.new_array() for _ in range(data.draw(st.integers(0, 2)))]
        self.opt.param_groups[gi]["params"] = kept + new
        self.maybe_step(data)

    @rule(data=st.data())
    def move_param_between_groups(self, data):
        if len(self.opt.param_groups) < 2:
            return self.maybe_step(data)
        src, dst = data.draw(st.permutations(range(len(self.opt.param_groups))))[:2]
        members = self.opt.param_groups[src]["params"]
        if members:
            self.opt.param_groups[dst]["params"].append(members.pop())
        self.maybe_step(data)

    @rule(data=st.data())
    def add_param_group(self, data):
        group = {"params": [self.new_array() for _ in range(data.draw(st.integers(1, 2)))]}
        if data.draw(st.booleans()):
            group["lr"] = data.draw(st.sampled_from(LRS))
        if data.draw(st.booleans()):
            group["amsgrad"] = True
        self.opt.add_param_group(group)
        self.maybe_step(data)

    @precondition(lambda self: len(self.opt.param_groups) > 1)
    @rule(data=st.data())
    def pop_group(self, data):
        self.opt.param_groups.pop(data.draw(st.integers(0, len(self.opt.param_groups) - 1)))
        self.maybe_step(data)

    @rule(data=st.data())
    def reshape_param(self, data):
        params = [p for p in self.params() if p.size > 0]
        if not params:
            return self.maybe_step(data)
        p = data.draw(st.sampled_from(params))
        shape = data.draw(st.sampled_from([(p.size,), (1, p.size), (p.size, 1), (1, 1, p.size)]))
        p.shape = shape
        rec = self.model[id(p)]
        for key in ("p", "m", "v", "vmax"):
            if rec[key] is not None:
                rec[key] = rec[key].reshape(shape)
        self.maybe_step(data)

    @rule(data=st.data(), how=st.sampled_from(["float16", "readonly", "state-readonly"]))
    def unusable_param_is_refused(self, data, how):
        """An array made unusable in place (dtype reinterpreted, read-only) is refused by name; restored, fine."""
        params = [p for p in self.params() if p.ndim > 0]
        if not params:
            return
        p = data.draw(st.sampled_from(params))
        state = self.opt.state
        index = next(i for i, q in enumerate(self.params()) if q is p)
        if how == "state-readonly" and index not in state:
            return
        before = self.snapshot()
        if how == "float16":
            old_dtype = p.dtype
            p.dtype = np.float16
            expected = TypeError
        elif how == "readonly":
            p.flags.writeable = False
            expected = ValueError
        else:
            state[index]["exp_avg"].flags.writeable = False
            expected = ValueError
        try:
            self.opt.step([np.zeros(q.shape, q.dtype) for q in self.params()])
        except expected as exc:
            assert "param_groups[" in str(exc) or "opt.state[" in str(exc), exc
        else:
            raise AssertionError(f"step accepted a param made unusable ({how})")
        finally:
            if how == "float16":
                p.dtype = old_dtype
            elif how == "readonly":
                p.flags.writeable = True
            else:
                state[index]["exp_avg"].flags.writeable = True
        self.assert_unchanged(before, f"after a refused step ({how})")

    @rule(data=st.data())
    def state_dict_round_trip(self, data):
        sd = self.opt.state_dict()
        json.dumps({"param_groups": sd["param_groups"], "steps": [e["step"] for e in sd["state"].values()]})
        self.opt.load_state_dict(sd)
        # hyperparameters come back as plain values, which the oracle reads the same way
        for group, saved in zip(self.opt.param_groups, sd["param_groups"]):
            assert _plain(group) == _plain(saved)
        # a never-stepped param's allocated zero state is not saved: after loading it has none (and starts at 0)
        for i, p in enumerate(self.params()):
            if i not in sd["state"]:
                self.model[id(p)].update(step=0, m=None, v=None, vmax=None)
            elif self.model[id(p)]["vmax"] is None and "max_exp_avg_sq" in sd["state"][i]:
                self.model[id(p)]["vmax"] = np.zeros_like(self.model[id(p)]["p"])
        self.maybe_step(data)

    @rule(data=st.data(), how=st.sampled_from(["pickle", "deepcopy"]))
    def copy_optimizer(self, data, how):
        old_params = self.params()
        self.opt = pickle.loads(pickle.dumps(self.opt)) if how == "pickle" else copy.deepcopy(self.opt)
        records = [self.model[id(p)] for p in old_params]
        self.model = {}
        for p, rec in zip(self.params(), records):
            rec["array"] = p
            self.model[id(p)] = rec
        self.maybe_step(data)

    # ------------------------------------------------------------ the check

    @invariant()
    def matches_the_oracle(self):
        state = self.opt.state
        self.drop_removed()
        params = self.params()
        assert sorted(state) == [i for i, p in enumerate(params) if self.model[id(p)]["m"] is not None], \
            (sorted(state), [self.model[id(p)]["step"] for p in params])
        for i, p in enumerate(params):
            rec = self.model[id(p)]
            assert_bitwise_equal(p, rec["p"].reshape(p.shape), f"param {i}")
            if rec["m"] is None:
                continue
            entry = state[i]
            assert entry["step"] == rec["step"], (i, entry["step"], rec["step"])
            assert entry["exp_avg"].shape == p.shape
            assert_bitwise_equal(entry["exp_avg"], rec["m"].reshape(p.shape), f"state[{i}]['exp_avg']")
            assert_bitwise_equal(entry["exp_avg_sq"], rec["v"].reshape(p.shape), f"state[{i}]['exp_avg_sq']")
            assert ("max_exp_avg_sq" in entry) == (rec["vmax"] is not None), (i, sorted(entry))
            if rec["vmax"] is not None:
                assert_bitwise_equal(entry["max_exp_avg_sq"], rec["vmax"].reshape(p.shape),
                                     f"state[{i}]['max_exp_avg_sq']")


OptimizerMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
test_optimizer_state_machine = OptimizerMachine.TestCase
