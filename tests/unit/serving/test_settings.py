"""Engine settings from engine.json and config.pbtxt parameters."""

import json

import pytest

from backend.engine.config import EngineConfig
from backend.serving.settings import load_settings, pbtxt_parameters


def config(**params):
    return {"parameters": {k: {"string_value": v} for k, v in params.items()}}


def test_pbtxt_values_are_json_literals_or_strings_and_empty_means_unset():
    assert pbtxt_parameters(config(max_num_seqs="8", dtype="bfloat16", device="", EXECUTION_ENV_PATH="x")) == {
        "max_num_seqs": 8, "dtype": "bfloat16"}


def test_parameters_override_engine_json(tmp_path):
    (tmp_path / "engine.json").write_text(json.dumps({"max_num_seqs": 4, "scheduler": "static"}))
    s = load_settings(tmp_path, config(max_num_seqs="16"))
    assert s.engine == {"max_num_seqs": 16, "scheduler": "static"}
    cfg = EngineConfig.from_dict(s.engine)
    assert cfg.max_num_seqs == 16 and cfg.scheduler == "static"


def test_bundled_model_is_found_beside_model_py(tmp_path):
    (tmp_path / "default-model").mkdir()
    assert load_settings(tmp_path, {}).engine["model"] == str((tmp_path / "default-model").resolve())
    assert load_settings(tmp_path, config(model="tiny-llada")).engine["model"] == "tiny-llada"


def test_gpu_instance_picks_its_device(tmp_path):
    assert load_settings(tmp_path, {}, "GPU", "1").engine["device"] == "cuda:1"
    assert load_settings(tmp_path, config(device="cpu"), "GPU", "1").engine["device"] == "cpu"
    assert "device" not in load_settings(tmp_path, {}, "CPU", "0").engine


def test_named_config_file_must_exist(tmp_path):
    with pytest.raises(ValueError, match="^engine_config_file"):
        load_settings(tmp_path, config(engine_config_file="missing.json"))
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match="^engine_config_file"):
        load_settings(tmp_path, config(engine_config_file="bad.json"))


def test_default_sampling_passes_through_to_the_engine_config(tmp_path):
    s = load_settings(tmp_path, config(default_sampling='{"max_tokens": 32}'))
    assert EngineConfig.from_dict(s.engine).default_sampling == {"max_tokens": 32}
