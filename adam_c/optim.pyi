# optim.pyi: types of adam_c.optim (kept as a stub so optim.py stays free of them; tests/test_typing.py's stubtest
# fails when the two drift apart).
from contextlib import AbstractContextManager
from typing import (Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, TypeVar, Union,
                    overload)

from .typing import (FloatArray, Hyperparameters, LearningRate, OptimizerParamGroup, ParamGroup, ParamState, StateDict,
                     ThreadingInfo)

_Loss = TypeVar("_Loss")
_Grads = Sequence[Optional[FloatArray]]

_Rounding = Literal["nearest", "stochastic"]

class Adam:
    defaults: Hyperparameters
    param_groups: List[OptimizerParamGroup]
    last_step_skipped: bool
    last_grad_norm: Optional[float]
    def __init__(self, params: Iterable[Union[FloatArray, ParamGroup]], lr: LearningRate = ...,
                 betas: Tuple[float, float] = ..., eps: float = ..., weight_decay: float = ..., amsgrad: bool = ...,
                 *, maximize: bool = ..., decoupled_weight_decay: bool = ..., master_weights: bool = ...,
                 rounding: _Rounding = ..., ema_decay: Optional[float] = ..., seed: int = ...) -> None: ...
    def add_param_group(self, param_group: ParamGroup) -> None: ...
    @property
    def grads(self) -> List[FloatArray]: ...
    def zero_grad(self) -> None: ...
    def threading_info(self) -> ThreadingInfo: ...
    @overload
    def step(self, grads: Optional[_Grads] = ..., closure: None = ..., *, grad_scale: Optional[float] = ...,
             max_grad_norm: Optional[float] = ..., skip_nonfinite: Optional[bool] = ...) -> None: ...
    @overload
    def step(self, grads: Optional[_Grads] = ..., *, closure: Callable[[], Tuple[_Loss, Optional[_Grads]]],
             grad_scale: Optional[float] = ..., max_grad_norm: Optional[float] = ...,
             skip_nonfinite: Optional[bool] = ...) -> _Loss: ...
    @overload
    def step(self, grads: Optional[_Grads], closure: Callable[[], Tuple[_Loss, Optional[_Grads]]], *,
             grad_scale: Optional[float] = ..., max_grad_norm: Optional[float] = ...,
             skip_nonfinite: Optional[bool] = ...) -> _Loss: ...
    def ema_weights(self) -> AbstractContextManager[Adam]: ...
    @property
    def state(self) -> Dict[int, ParamState]: ...
    def state_dict(self) -> StateDict: ...
    def load_state_dict(self, state_dict: Union[StateDict, Mapping[str, Any]]) -> None: ...
    def __getstate__(self) -> Dict[str, Any]: ...
    def __setstate__(self, saved: Dict[str, Any]) -> None: ...

class AdamW(Adam):
    def __init__(self, params: Iterable[Union[FloatArray, ParamGroup]], lr: LearningRate = ...,
                 betas: Tuple[float, float] = ..., eps: float = ..., weight_decay: float = ..., amsgrad: bool = ...,
                 *, maximize: bool = ..., master_weights: bool = ..., rounding: _Rounding = ...,
                 ema_decay: Optional[float] = ..., seed: int = ...) -> None: ...
