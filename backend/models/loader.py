"""Load and save Hugging Face-format checkpoints (LLaDA, Dream, SDAR and Fast-dLLM v2 names) from a local directory.

Nothing is ever fetched: the directory must hold `config.json` and either `model.safetensors` or
sharded `*.safetensors` files with `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from backend.models import ARCH_MODULES, DiffusionLM, build_model, default_dtype
from backend.models.model_config import ModelConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some exporters save that carry no weights.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded; the message names the file or tensor."""


def detect_arch(hf: dict) -> str:
    model_type = str(hf.get("model_type", "")).lower()
    archs = hf.get("architectures") or []
    if model_type == "sdar" or "SDARForCausalLM" in archs:
        return "sdar"
    if model_type == "fast_dllm_qwen" or "Fast_dLLM_QwenForCausalLM" in archs or "bd_size" in hf:
        return "fast_dllm"
    if model_type == "llada" or "d_model" in hf:
        return "llada"
    if model_type in ("dream", "qwen2") or "num_hidden_layers" in hf:
        return "dream"
    raise CheckpointError(f"config.json: cannot tell the architecture (model_type={hf.get('model_type')!r})")


def read_config(path: str | Path, **overrides) -> ModelConfig:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: no config.json in the checkpoint directory")
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    try:
        return ARCH_MODULES[detect_arch(hf)].config_from_hf(hf).replace(**overrides)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_file}: {e}") from e


def _tensor_files(path: Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the file that holds it."""
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        for f in set(weight_map.values()):
            if not (path / f).is_file():
                raise CheckpointError(f"{index}: shard {f} is missing")
        return {name: path / f for name, f in weight_map.items()}
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{path}: neither {SINGLE_FILE} nor {INDEX_FILE} found")
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def load_model(path: str | Path, dtype: torch.dtype | None = None, device="cpu",
               config: ModelConfig | None = None) -> DiffusionLM:
    """Build the architecture named by `config.json` and fill it from the safetensors files.

    Every parameter row must be filled exactly once: missing, unexpected and mis-shaped tensors
    raise `CheckpointError` naming the tensor.
    """
    path = Path(path)
    cfg = config or read_config(path)
    dtype = dtype or default_dtype(device)
    files = _tensor_files(path)
    names = {n for n in files if not n.endswith(IGNORED_SUFFIXES)}
    maps = ARCH_MODULES[cfg.arch].tensor_maps(cfg, names)
    expected = {m.hf_name for m in maps}
    missing = sorted(expected - names)
    if missing:
        raise CheckpointError(f"{path}: missing tensor {missing[0]}" +
                              (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = sorted(names - expected)
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]}" +
                              (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))

    model = build_model(cfg, dtype, device)
    params = dict(model.named_parameters())
    by_file: dict[Path, list] = {}
    for m in maps:
        by_file.setdefault(files[m.hf_name], []).append(m)
    with torch.no_grad():
        for file, file_maps in by_file.items():
            # Read straight onto the target device: no second copy of an 8B model in host memory.
            with safe_open(file, framework="pt", device=str(torch.device(device))) as f:
                for m in file_maps:
                    _copy_into(params[m.param], f.get_tensor(m.hf_name), m, _offset(cfg, m))
    return model


def _offset(cfg: ModelConfig, m) -> float:
    """What the checkpoint's value lacks of ours: 1 on every norm weight of a Gemma-style RMSNorm."""
    return cfg.norm_weight_offset if m.param.endswith("norm.weight") else 0.0


def _copy_into(param: torch.Tensor, tensor: torch.Tensor, m, offset: float = 0.0) -> None:
    if offset:  # in the checkpoint's dtype, as the official (1 + weight)
        tensor = tensor + offset
    if m.src_rows is not None:
        tensor = tensor[m.src_rows[0]:m.src_rows[1]]
    target = param if m.dst_rows is None else param[m.dst_rows[0]:m.dst_rows[1]]
    if tuple(tensor.shape) != tuple(target.shape):
        raise CheckpointError(f"tensor {m.hf_name}: shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
    target.copy_(tensor.to(target.dtype))


def checkpoint_tensors(model: DiffusionLM) -> dict[str, torch.Tensor]:
    """Our parameters under their Hugging Face names (split q/k/v and gate/up, as LLaDA-8B ships)."""
    cfg = model.config
    params = dict(model.named_parameters())
    out = {}
    for m in ARCH_MODULES[cfg.arch].tensor_maps(cfg):
        p = params[m.param]
        t = p if m.dst_rows is None else p[m.dst_rows[0]:m.dst_rows[1]]
        out[m.hf_name] = (t.detach() - _offset(cfg, m)).to("cpu").contiguous()
    return out


def save_checkpoint(model: DiffusionLM, path: str | Path, max_shard_bytes: int | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write `config.json` and safetensors (sharded with an index when `max_shard_bytes` is set)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    (path / "config.json").write_text(json.dumps(ARCH_MODULES[cfg.arch].config_to_hf(cfg), indent=2) + "\n")
    tensors = {k: (v.to(dtype) if dtype else v) for k, v in checkpoint_tensors(model).items()}
    if max_shard_bytes is None:
        save_file(tensors, str(path / SINGLE_FILE), metadata={"format": "pt"})
        return path
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return path
