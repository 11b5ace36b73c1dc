"""The readiness probe's reading of the metrics page (the HTTP side runs against a real server in
tests/integration/test_engine_death.py)."""

from backend.server.probe import stopped_engines

PAGE = """# HELP dllm:engine_up 1 while the instance's engine loop serves, 0 once it has stopped
# TYPE dllm:engine_up gauge
dllm:engine_up{instance="dllm_0_0",model="dllm",pid="11",version="1"} 1
dllm:engine_up{instance="dllm_0_1",model="dllm",pid="12",version="1"} 0
dllm:engine_up{instance="other_0",model="other",pid="13",version="1"} 0
dllm:kv_pages_used{instance="dllm_0_0",model="dllm",pid="11",version="1"} 0
"""


def test_names_the_stopped_instances_of_the_model_only():
    assert stopped_engines(PAGE, "dllm") == ["dllm_0_1"]
    assert stopped_engines(PAGE, "other") == ["other_0"]
    assert stopped_engines(PAGE.replace("} 0\n", "} 1\n"), "dllm") == []
    assert stopped_engines("", "dllm") == []  # metrics off: only the model's readiness counts
