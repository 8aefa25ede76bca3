"""user_script.py: a user's script calling every public adam_c function; `mypy --strict` must accept it."""
import array
from typing import List, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

import adam_c
schedules = adam_c.schedules
from adam_c.typing import CpuInfo, FloatArray, OptimizerParamGroup, ParamState, StateDict, ThreadingInfo

w: NDArray[np.float32] = np.zeros((3, 5), np.float32)
b: NDArray[np.float64] = np.zeros(5, np.float64)
params: List[FloatArray] = [w, b]

opt = adam_c.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                  decoupled_weight_decay=False)
opt_w = adam_c.AdamW([{"params": [w], "lr": 1e-2, "weight_decay": 0.1}, {"params": b, "amsgrad": True}],
                     lr=schedules.cosine_with_warmup(1e-3, warmup_steps=5, total_steps=100))
extra: NDArray[np.float32] = np.zeros(7, np.float32)
opt_w.add_param_group({"params": [extra], "betas": (0.8, 0.99)})

grads: List[Optional[FloatArray]] = [np.ones_like(w), None]
assert opt.step(grads) is None
opt.grads[0] += 1.0
opt.zero_grad()
opt.step()


def closure() -> Tuple[float, List[Optional[FloatArray]]]:
    return 0.5, [np.ones_like(w), np.ones_like(b)]


loss: float = opt.step(closure=closure)
group: OptimizerParamGroup = opt.param_groups[0]
group["lr"] = 3e-4
group["lr"] = schedules.constant_with_warmup(3e-4, warmup_steps=10)
lr_now = group["lr"]
state: ParamState = opt.state[0]
step_count: int = state["step"]
saved: StateDict = opt.state_dict()
first_step: int = saved["state"][0]["step"]
saved_ids: List[int] = saved["param_groups"][0]["params"]
opt.load_state_dict(saved)

p, g, m, v = (np.zeros(9, np.float64) for _ in range(4))
adam_c.adam_step(p, g, m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
buf = array.array("f", [0.0] * 9)
adam_c.adam_step(buf, memoryview(array.array("f", [1.0] * 9)), array.array("f", [0.0] * 9),
                 array.array("f", [0.0] * 9), step=2, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
                 amsgrad=True, max_exp_avg_sq=array.array("f", [0.0] * 9), maximize=True,
                 decoupled_weight_decay=True)

info: CpuInfo = adam_c.cpu_info()
target: str = info["target"]
adam_c.set_target(target)
threads: int = adam_c.get_num_threads()
adam_c.set_num_threads(2)
adam_c.set_num_threads(None)
adam_c.set_threading("auto")
decided: ThreadingInfo = opt.threading_info()
chosen_threads: int = decided["threads"]
serial_us: Optional[float] = decided["serial_us"]
version: str = adam_c.__version__
include_dir: str = adam_c.get_include()
dirs: List[str] = [adam_c.get_library_dir(), adam_c.get_cmake_dir(), adam_c.get_pkgconfig_dir()]

values: List[float] = [f(t) for t in range(1, 20) for f in (
    schedules.constant_with_warmup(1e-3, warmup_steps=3),
    schedules.cosine_with_warmup(1e-3, warmup_steps=3, total_steps=20, min_lr=1e-5),
    schedules.linear_decay(1e-3, total_steps=20, warmup_steps=2, end_lr=0.0),
    schedules.step_decay(1e-3, step_size=5, gamma=0.5, warmup_steps=0),
    schedules.exponential_decay(1e-3, gamma=0.9, warmup_steps=1))]
