"""Triton lifecycle for the dLLM engine: a thin decoupled Python-backend adapter.

`initialize` builds the engine from the settings (backend/serving/settings.py) and starts two
threads: the engine loop (backend.engine.async_engine) and the response thread (backend/serving/responder.py).
`execute` only validates, tokenizes and hands each request over (backend/serving/intake.py), then
returns: responses are sent from the response thread as the engine commits tokens. A client's mistake
is answered INVALID_ARG with a message that starts with the field's name; our own failures INTERNAL,
"internal error: ...". `finalize` stops both threads, deletes the metric series and drops every
reference to Triton objects before it returns, so that the model can unload and load again while
clients stream.

If the engine loop dies (an exception escaped the engine), every pending and later request is
answered INTERNAL at once and `is_ready()` turns false (Triton versions whose Python backend asks the
model; 2.51 does not, so there only the errors and the log say it).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import triton_python_backend_utils as pb_utils

try:
    import backend  # noqa: F401  (installed with the project, as in the Docker image)
except ImportError:  # running from a checkout whose project is not installed: the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from backend.engine.async_engine import AsyncEngine  # noqa: E402
from backend.engine.config import EngineConfig  # noqa: E402
from backend.engine.engine import Engine  # noqa: E402
from backend.server.stub_reaper import StubReaper  # noqa: E402
from backend.serving.answers import AnswerGroup  # noqa: E402
from backend.serving.inputs import InvalidInput  # noqa: E402
from backend.serving.intake import Intake, PromptLimits  # noqa: E402
from backend.serving.metrics import ServingMetrics, custom_metrics_enabled  # noqa: E402
from backend.serving.request_tracker import RequestTracker  # noqa: E402
from backend.serving.responder import Responder  # noqa: E402
from backend.serving.settings import load_settings  # noqa: E402
from backend.serving.write_gate import WriteGate  # noqa: E402


def _input(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException("config.pbtxt: the dllm model must be decoupled "
                                                "(model_transaction_policy { decoupled: true })")
        version_dir = Path(args["model_repository"]) / args["model_version"]
        try:
            settings = load_settings(version_dir, model_config, args["model_instance_kind"],
                                     args["model_instance_device_id"])
            config = EngineConfig.from_dict(settings.engine)
            engine = Engine.from_config(config)
        except Exception as e:
            raise pb_utils.TritonModelException(f"dllm engine failed to load: {e}") from e
        if engine.tokenizer is None:
            raise pb_utils.TritonModelException(
                f"tokenizer: {config.model} has no tokenizer (text in, text out needs one); set `tokenizer` "
                "to a directory holding tokenizer.json")
        self.tokenizer = tokenizer = engine.tokenizer
        self.engine = AsyncEngine(engine).start()
        limits = PromptLimits(engine.model_config.max_sequence_length, tokenizer.max_token_bytes)
        self.intake = Intake(lambda text: tokenizer.encode(text, parse_special_tokens=config.parse_special_tokens),
                             engine.make_params, self.engine.validate, limits)
        # As the vLLM backend: dllm: series only when config.pbtxt sets REPORT_CUSTOM_METRICS "true".
        self.metrics = ServingMetrics(pb_utils, args["model_name"], args["model_version"],
                                      args["model_instance_name"]) if custom_metrics_enabled(model_config) else None
        # Responses wait while Triton refuses requests for this model (unloading, or its successor
        # loading): see backend/serving/write_gate.py.
        model_name = args["model_name"]
        gate = WriteGate(lambda: pb_utils.is_model_ready(model_name), log_info=pb_utils.Logger.log_info)
        self.responder = Responder(self.engine, pb_utils, self.metrics, log_info=pb_utils.Logger.log_info,
                                   gate=gate)
        self.responder.start()
        self.reaper = StubReaper.for_this_stub()
        self._ids = itertools.count()
        self._death_logged = False
        pb_utils.Logger.log_info(
            f"dllm: {engine.describe()}; settings from {settings.sources or ['defaults']}")

    def execute(self, requests):
        for request in requests:
            self._accept(request)
        return None

    def is_ready(self) -> bool:
        return self.engine is not None and self.engine.dead is None

    def _accept(self, request) -> None:
        sender = request.get_response_sender()
        # Our own id: clients may reuse theirs (or send none), the engine needs unique ones.
        request_id = f"{request.request_id() or 'req'}#{next(self._ids)}"
        dead = self.engine.dead
        if dead is not None:
            if not self._death_logged:
                self._death_logged = True
                pb_utils.Logger.log_error(f"dllm: the engine loop has stopped ({dead}); failing every request "
                                          "until the model is reloaded")
            self.responder.refuse(request_id, sender, f"internal error: the engine has stopped ({dead}); the "
                                  "model must be reloaded", invalid=False)
            return
        try:
            prepared = self.intake.prepare(lambda name: _input(request, name), request.parameters())
        except InvalidInput as e:  # the message starts with the field's name
            self.responder.refuse(request_id, sender, str(e), invalid=True)
            return
        except Exception as e:
            self.responder.refuse(request_id, sender, f"internal error: {type(e).__name__}: {e}", invalid=False)
            return
        skip = prepared.keys.skip_special_tokens
        decode = self.tokenizer.decode if skip else (lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False))
        n = len(prepared.engine_requests)
        sub_ids = [request_id] if n == 1 else [f"{request_id}/{i}" for i in range(n)]
        def token_text(t: int) -> str:  # logprobs' decoded_token: special tokens shown, as vLLM
            return self.tokenizer.decode([t], skip_special_tokens=False)

        group = AnswerGroup([RequestTracker(prepared.request, len(prepared.prompt_ids), decode, token_text=token_text)
                             for _ in sub_ids], sub_ids)
        self.responder.submit(request_id, sender, group, prepared.engine_requests)

    def finalize(self):
        # Order matters: the engine's shutdown sends a final output for every pending request, the
        # response thread sends them out and ends (no sender is touched after it), then the metric
        # series go (before a successor instance can create the same ones), and the stub's watcher.
        pending = self.responder.num_active
        engine_stopped = self.engine.shutdown(timeout=30)
        responder_stopped = self.responder.stop(timeout=30)
        if self.metrics is not None:
            self.metrics.close()
        if self.reaper is not None:
            self.reaper.stop()
        busy = [name for name, done in (("engine loop", engine_stopped), ("response thread", responder_stopped))
                if not done]
        if busy:
            pb_utils.Logger.log_warn(f"dllm: finalize went on with the {' and '.join(busy)} still busy")
        pb_utils.Logger.log_info(f"dllm: response thread: {self.responder.gate.summary()}")
        self.engine = self.responder = self.metrics = self.tokenizer = self.intake = self.reaper = None
        pb_utils.Logger.log_info(f"dllm: engine stopped ({pending} requests were still active)")
