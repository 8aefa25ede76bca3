# functional.pyi: types of adam_c.functional (checked against the module by tests/packaging/test_typing.py's stubtest).
import array
from typing import Optional, Union

import numpy as np
from numpy.typing import NDArray

# any C-contiguous float32/float64 buffer: a NumPy array (a torch CPU tensor's .numpy()), a memoryview, an array
_Buffer = Union[NDArray[np.float32], NDArray[np.float64], memoryview, array.array[float]]

def adam_step(param: _Buffer, grad: _Buffer, exp_avg: _Buffer, exp_avg_sq: _Buffer, *, step: int, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float = ..., amsgrad: bool = ...,
              max_exp_avg_sq: Optional[_Buffer] = ..., maximize: bool = ...,
              decoupled_weight_decay: bool = ...) -> None: ...
