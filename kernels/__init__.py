"""Triton kernels, each beside the PyTorch reference its tests compare it with."""

import torch

# The dtypes the kernels take (float64 stays on the PyTorch references).
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
