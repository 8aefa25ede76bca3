"""schedules.py: learning-rate schedules for NumPy users: callables schedule(step) -> lr to pass as `lr`."""
import math
import numbers
import operator
from typing import Dict, Tuple, Union

from ._validation import MAX_STEP

__all__ = ["LRSchedule", "constant_with_warmup", "cosine_with_warmup", "exponential_decay", "linear_decay",
           "step_decay"]


def _real(value: float, name: str, low: float = 0.0, low_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x) or (x < low if low_inclusive else x <= low):
        raise ValueError(f"{name} must be a finite number {'>=' if low_inclusive else '>'} {low:g}, got {value!r}")
    return x


def _count(value: int, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    n = operator.index(value)
    if not low <= n <= MAX_STEP:
        raise ValueError(f"{name} must be an int >= {low}, got {n}")
    return n


class LRSchedule:
    """A learning-rate schedule: schedule(step) is the lr of the `step`-th update (1-based, the `step` of
    adam_step and of torch's optimizer state). An optimizer whose group lr is a schedule calls it once per
    step() with the group's step about to be taken (1 + the largest step count among the group's params, so a
    restored state_dict resumes the schedule where it stopped).

    Warmup (warmup_steps = W >= 1): steps 1..W use lr * step / W, reaching lr at step W. After it, the decay
    counts d = step - W - 1 = 0, 1, 2, ... steps, exactly as torch's SequentialLR([LinearLR(1/W, 1, W - 1),
    <decay scheduler>], milestones=[W]) does. Instances compare equal by their arguments and can be pickled.
    """

    _maker = "constant_with_warmup"  # the function that makes this kind, for the repr

    def __init__(self, lr: float, warmup_steps: int) -> None:
        self.lr = _real(lr, "lr")
        self.warmup_steps = _count(warmup_steps, "warmup_steps", 0)

    def _decay(self, d: int) -> float:
        """The lr d >= 0 steps after the warmup."""
        return self.lr

    def _arguments(self) -> Dict[str, Union[int, float]]:
        return {"lr": self.lr, "warmup_steps": self.warmup_steps}

    def __call__(self, step: int) -> float:
        t = _count(step, "step", 1)
        if t <= self.warmup_steps:
            return self.lr * t / self.warmup_steps
        return self._decay(t - self.warmup_steps - 1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"{self._maker}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def _key(self) -> Tuple[Tuple[str, Union[int, float]], ...]:
        return tuple(sorted(self._arguments().items()))


class _Constant(LRSchedule):
    pass


class _Cosine(LRSchedule):
    _maker = "cosine_with_warmup"

    def __init__(self, lr: float, warmup_steps: int, total_steps: int, min_lr: float) -> None:
        super().__init__(lr, warmup_steps)
        self.total_steps = _count(total_steps, "total_steps", 1)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"total_steps must be > warmup_steps ({self.warmup_steps}), got {self.total_steps}")
        self.min_lr = _real(min_lr, "min_lr")

    def _decay(self, d: int) -> float:
        span = self.total_steps - self.warmup_steps
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * min(d, span) / span)) / 2.0

    def _arguments(self) -> Dict[str, Union[int, float]]:
        return {**super()._arguments(), "total_steps": self.total_steps, "min_lr": self.min_lr}


class _Linear(LRSchedule):
    _maker = "linear_decay"

    def __init__(self, lr: float, warmup_steps: int, total_steps: int, end_lr: float) -> None:
        super().__init__(lr, warmup_steps)
        self.total_steps = _count(total_steps, "total_steps", 1)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"total_steps must be > warmup_steps ({self.warmup_steps}), got {self.total_steps}")
        self.end_lr = _real(end_lr, "end_lr")

    def _decay(self, d: int) -> float:
        span = self.total_steps - self.warmup_steps
        return self.lr + (self.end_lr - self.lr) * min(d, span) / span

    def _arguments(self) -> Dict[str, Union[int, float]]:
        return {**super()._arguments(), "total_steps": self.total_steps, "end_lr": self.end_lr}


class _Step(LRSchedule):
    _maker = "step_decay"

    def __init__(self, lr: float, warmup_steps: int, step_size: int, gamma: float) -> None:
        super().__init__(lr, warmup_steps)
        self.step_size = _count(step_size, "step_size", 1)
        self.gamma = _real(gamma, "gamma", 0.0, low_inclusive=False)

    def _decay(self, d: int) -> float:
        return _power_decay(self, self.gamma, d // self.step_size)

    def _arguments(self) -> Dict[str, Union[int, float]]:
        return {**super()._arguments(), "step_size": self.step_size, "gamma": self.gamma}


class _Exponential(LRSchedule):
    _maker = "exponential_decay"

    def __init__(self, lr: float, warmup_steps: int, gamma: float) -> None:
        super().__init__(lr, warmup_steps)
        self.gamma = _real(gamma, "gamma", 0.0, low_inclusive=False)

    def _decay(self, d: int) -> float:
        return _power_decay(self, self.gamma, d)

    def _arguments(self) -> Dict[str, Union[int, float]]:
        return {**super()._arguments(), "gamma": self.gamma}


def _power_decay(schedule: LRSchedule, gamma: float, k: int) -> float:
    """lr * gamma ** k, torch's closed form of StepLR / ExponentialLR. With gamma > 1 the lr grows without bound:
    once it is past the largest float it is a ValueError naming the schedule and the step, never inf (which no
    optimizer accepts as an lr) or a bare OverflowError. With gamma < 1 it decays to 0.0."""
    if schedule.lr == 0.0:
        return 0.0
    try:
        value = schedule.lr * gamma ** k
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{schedule!r}: the lr after {k} decays, lr * gamma ** {k}, is larger than the largest "
                         "float (gamma > 1 grows the lr without bound); stop the schedule before it overflows")
    return value


def constant_with_warmup(lr: float, *, warmup_steps: int = 0) -> LRSchedule:
    """lr after a linear warmup of warmup_steps steps (torch: LinearLR(start_factor=1/W, total_iters=W-1))."""
    return _Constant(lr, warmup_steps)


def cosine_with_warmup(lr: float, *, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> LRSchedule:
    """Linear warmup to lr, then half a cosine from lr down to min_lr, reached after total_steps steps and kept
    (torch: CosineAnnealingLR(T_max=total_steps - warmup_steps, eta_min=min_lr) after the warmup)."""
    return _Cosine(lr, warmup_steps, total_steps, min_lr)


def linear_decay(lr: float, *, total_steps: int, warmup_steps: int = 0, end_lr: float = 0.0) -> LRSchedule:
    """Linear warmup to lr, then a straight line from lr to end_lr, reached after total_steps steps and kept
    (torch: LinearLR(start_factor=1, end_factor=end_lr/lr, total_iters=total_steps - warmup_steps))."""
    return _Linear(lr, warmup_steps, total_steps, end_lr)


def step_decay(lr: float, *, step_size: int, gamma: float = 0.1, warmup_steps: int = 0) -> LRSchedule:
    """Linear warmup to lr, then lr * gamma ** (d // step_size) for the d-th step after it (torch: StepLR)."""
    return _Step(lr, warmup_steps, step_size, gamma)


def exponential_decay(lr: float, *, gamma: float, warmup_steps: int = 0) -> LRSchedule:
    """Linear warmup to lr, then lr * gamma ** d for the d-th step after it (torch: ExponentialLR)."""
    return _Exponential(lr, warmup_steps, gamma)
