"""misuse.py: calls adam_c's types must refuse; every line marked `# error` must get a mypy --strict error."""
import numpy as np

import adam_c
from adam_c import schedules

ints = np.zeros(3, np.int64)
w = np.zeros(3, np.float32)
adam_c.Adam([ints])  # error
adam_c.Adam([w], lr="fast")  # error
adam_c.Adam([w], betas=(0.9,))  # error
adam_c.Adam([{"params": [w], "learning_rate": 1e-3}])  # error
opt = adam_c.Adam([w])
opt.step([[1.0, 2.0, 3.0]])  # error
opt.param_groups[0]["lr"] = "slow"  # error
steps: str = opt.state_dict()["state"][0]["step"]  # error
adam_c.set_num_threads("2")  # error
adam_c.adam_step(w, w, w, w, step=1, lr=1e-3, beta1=0.9, beta2=0.999)  # error
schedules.cosine_with_warmup(1e-3, warmup_steps=2)  # error
schedules.step_decay(1e-3, step_size=2.5)  # error
