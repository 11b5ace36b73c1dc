"""Engine settings for the Triton model, from two places (later wins):

1. a JSON object in `engine.json` beside `model.py` (the model's version directory), or in the file
   that the `engine_config_file` parameter names (relative to that directory);
2. the `parameters` of `config.pbtxt` (string values; JSON literals such as `64`, `null` or `true`
   are read as JSON, anything else stays a string; an empty value means "not set").

Keys are `backend.engine.config.EngineConfig` fields (`default_sampling`, a JSON object, is laid over
the checkpoint's `generation_config.json`), plus `engine_config_file` (see above).
Parameters whose name is upper case (EXECUTION_ENV_PATH, ...) belong to Triton's Python backend and
are left alone. A relative `model` path is looked up in the version directory first, so
`"model": "default-model"` names the bundled checkpoint; unset, `model` is `default-model` there when
that directory exists (so a copied model repository, as in the Docker image, finds its own copy).

On a KIND_GPU instance an unset `device` becomes `cuda:<model_instance_device_id>`, so that each
instance runs on the GPU Triton gave it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ENGINE_JSON = "engine.json"
BUNDLED_MODEL = "default-model"


@dataclass
class ServingSettings:
    engine: dict = field(default_factory=dict)  # EngineConfig.from_dict input
    sources: list[str] = field(default_factory=list)  # where the values came from, for the load log


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def pbtxt_parameters(model_config: dict) -> dict:
    """`{"name": {"string_value": "..."}}` (Triton's JSON form of the model config) to plain values."""
    out = {}
    for name, spec in (model_config.get("parameters") or {}).items():
        text = spec.get("string_value", "") if isinstance(spec, dict) else str(spec)
        if name.isupper() or text.strip() == "":
            continue
        out[name] = _parse_value(text.strip())
    return out


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"engine_config_file: {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    except OSError as e:
        raise ValueError(f"engine_config_file: cannot read {path} ({e.strerror})") from None
    if not isinstance(value, dict):
        raise ValueError(f"engine_config_file: {path} must hold a JSON object")
    return value


def load_settings(version_dir: Path, model_config: dict, instance_kind: str = "CPU",
                  device_id: int | str = 0) -> ServingSettings:
    """Merge the sources; raises ValueError naming the field for a malformed source. The engine
    fields themselves are validated by EngineConfig.from_dict."""
    version_dir = Path(version_dir)
    params = pbtxt_parameters(model_config)
    settings = ServingSettings()
    file_name = params.pop("engine_config_file", None)
    path = version_dir / (file_name or ENGINE_JSON)
    values: dict = {}
    if file_name or path.is_file():
        values = _read_json(path)
        settings.sources.append(str(path))
    if params:
        settings.sources.append("config.pbtxt parameters")
    values.update(params)

    values.pop("engine_config_file", None)

    if values.get("model") is None and (version_dir / BUNDLED_MODEL).is_dir():
        values["model"] = BUNDLED_MODEL
    model = values.get("model")
    if isinstance(model, str) and not Path(model).is_absolute() and (version_dir / model).exists():
        values["model"] = str((version_dir / model).resolve())
    if values.get("device") is None and str(instance_kind).upper().endswith("GPU"):
        values["device"] = f"cuda:{int(device_id)}"
    settings.engine = values
    return settings
