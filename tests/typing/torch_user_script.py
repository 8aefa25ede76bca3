"""torch_user_script.py: a torch user's training loop with adam_c.torch (as with torch.optim.AdamW); `mypy --strict`
must accept it (tests/test_typing.py), and also with float16 arrays given to the NumPy API."""
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

import adam_c
import adam_c.torch

model = nn.Linear(4, 2)
opt = adam_c.torch.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, foreach=None)
groups: List[Dict[str, Any]] = [{"params": [model.weight], "lr": 1e-2}, {"params": [model.bias]}]
opt_groups = adam_c.torch.Adam(groups, amsgrad=True, state_dtype="bfloat16", ema_decay=0.999)
scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
scaler = torch.amp.GradScaler("cpu")


def closure() -> float:
    opt.zero_grad()
    loss = model(torch.randn(3, 4)).pow(2).sum()
    loss.backward()
    return float(loss.item())


for _ in range(2):
    opt.zero_grad(set_to_none=True)
    loss = model(torch.randn(3, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    scheduler.step()
final: float = opt.step(closure)
nothing: None = opt.step(max_grad_norm=1.0)
skipped: bool = opt.last_step_skipped
norm: Optional[float] = opt.last_grad_norm
scaler.step(opt)
saved: Dict[str, Any] = opt.state_dict()
opt.load_state_dict(saved)
with opt_groups.ema_weights():
    pass
stored: str = opt.state_dtype
nbytes: int = opt_groups.state_bytes()
base: torch.optim.Optimizer = opt

half: NDArray[np.float16] = np.zeros(3, np.float16)
opt_half = adam_c.AdamW([half], lr=1e-3, master_weights=True)
opt_half.step([np.ones(3, np.float16)])
opt_half.zero_grad(set_to_none=True)
