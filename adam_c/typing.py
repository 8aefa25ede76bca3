"""typing.py: names for the types adam_c accepts and returns (arrays, schedules, param groups, state_dict)."""
from typing import Callable, Dict, Iterable, List, Tuple, TypedDict, Union

import numpy as np
from numpy.typing import NDArray

__all__ = ["CpuInfo", "FloatArray", "Hyperparameters", "LearningRate", "OptimizerParamGroup", "ParamGroup",
           "ParamState", "SavedParamGroup", "Schedule", "StateDict", "ThreadingInfo"]

#: A param, grad or state array: a NumPy array of float32, float64 or float16 (C-contiguous, aligned, native byte
#: order). bfloat16 params (ml_dtypes, an optional package without a NumPy scalar type here) are accepted at run time.
FloatArray = Union[NDArray[np.float32], NDArray[np.float64], NDArray[np.float16]]
#: A learning-rate schedule: called once per step with the 1-based number of that step, returns the lr.
Schedule = Callable[[int], float]
#: What `lr` may be in the constructor and in a param group: a number or a schedule.
LearningRate = Union[float, Schedule]


class Hyperparameters(TypedDict):
    """Every hyperparameter of a group, as optimizers keep them (opt.defaults)."""
    lr: LearningRate
    betas: Tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool
    decoupled_weight_decay: bool


class _ParamGroupParams(TypedDict):
    params: Union[FloatArray, Iterable[FloatArray]]


class ParamGroup(_ParamGroupParams, total=False):
    """A param group as passed to Adam(...) or add_param_group: params plus any hyperparameters (the others take
    the constructor's values). Extra keys are kept at run time; give them through a plain dict if you need them."""
    lr: LearningRate
    betas: Tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool
    decoupled_weight_decay: bool


class OptimizerParamGroup(Hyperparameters):
    """An entry of opt.param_groups: every hyperparameter, and the group's arrays."""
    params: List[FloatArray]


class _ParamStateRequired(TypedDict):
    step: int
    exp_avg: FloatArray
    exp_avg_sq: FloatArray


class ParamState(_ParamStateRequired, total=False):
    """opt.state[i] and state_dict()["state"][i]; max_exp_avg_sq only where the group uses AMSGrad. Compressed
    state (state_dtype) adds "state_dtype"; its exp_avg/exp_avg_sq/max_exp_avg_sq are then uint16 (bfloat16 bits)
    or uint8 (int8 codes, with float32 "<key>_absmax" block scales)."""
    max_exp_avg_sq: FloatArray
    master: FloatArray
    ema: FloatArray
    state_dtype: str
    exp_avg_absmax: NDArray[np.float32]
    exp_avg_sq_absmax: NDArray[np.float32]
    max_exp_avg_sq_absmax: NDArray[np.float32]


class SavedParamGroup(Hyperparameters):
    """state_dict()["param_groups"][g]: the hyperparameters and the indices of the group's params."""
    params: List[int]


class StateDict(TypedDict):
    """opt.state_dict(): indices run across groups, as in torch.optim."""
    state: Dict[int, ParamState]
    param_groups: List[SavedParamGroup]


class CpuInfo(TypedDict):
    """adam_c.cpu_info()."""
    target: str
    targets: List[str]
    supported_targets: List[str]
    forced_target: Union[str, None]
    openmp: bool
    num_threads: int
    default_num_threads: int
    parallel_threshold: int
    threading: str
    pool_restarts_after_fork: int
    executor: str
    openmp_runtime: Union[str, None]


class ThreadingInfo(TypedDict):
    """opt.threading_info(): the measured serial-or-threads decision of an optimizer's steps."""
    threads: int
    serial_us: Union[float, None]
    threads_us: Union[float, None]
    steps: int
