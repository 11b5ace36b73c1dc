"""How Hugging Face parameter names map onto our parameters (shared by LLaDA and Dream mappings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorMap:
    """One checkpoint tensor (or a row range of it) filling a row range of one of our parameters.

    Our q/k/v and gate/up matrices are fused, so several checkpoint tensors fill one parameter.
    """

    hf_name: str
    param: str
    dst_rows: tuple[int, int] | None = None  # rows of our parameter; None = all of it
    src_rows: tuple[int, int] | None = None  # rows of the checkpoint tensor; None = all of it


def qkv_rows(q_size: int, kv_size: int) -> dict[str, tuple[int, int]]:
    return {"q": (0, q_size), "k": (q_size, q_size + kv_size), "v": (q_size + kv_size, q_size + 2 * kv_size)}


def gate_up_rows(intermediate: int) -> dict[str, tuple[int, int]]:
    return {"gate": (0, intermediate), "up": (intermediate, 2 * intermediate)}
