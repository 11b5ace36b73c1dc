"""Triton lifecycle for the dLLM engine: a thin decoupled Python-backend adapter.

`initialize` builds the engine from the settings (backend/serving/settings.py) and starts two
threads: the engine loop (backend.async_engine) and the response thread (backend/serving/responder.py).
`execute` only validates, tokenizes and hands each request over, then returns: responses are sent
from the response thread as the engine commits tokens. `finalize` stops both threads and drops every
reference to Triton objects, so that the model can unload and reload.
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

from backend.async_engine import AsyncEngine  # noqa: E402
from backend.engine import Engine  # noqa: E402
from backend.engine_config import EngineConfig  # noqa: E402
from backend.serving.inputs import parse_request  # noqa: E402
from backend.serving.metrics import ServingMetrics  # noqa: E402
from backend.serving.request_tracker import RequestTracker  # noqa: E402
from backend.serving.responder import Responder  # noqa: E402
from backend.serving.settings import load_settings  # noqa: E402


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
        self.tokenizer = engine.tokenizer
        self.engine = AsyncEngine(engine).start()
        self.metrics = ServingMetrics(pb_utils, args["model_name"], args["model_version"],
                                      args["model_instance_name"])
        self.responder = Responder(self.engine, pb_utils, self.metrics, log_info=pb_utils.Logger.log_info)
        self.responder.start()
        self._ids = itertools.count()
        pb_utils.Logger.log_info(
            f"dllm: model {config.model} on {engine.model.device} ({engine.model.dtype}), "
            f"{engine.pool.allocator.num_pages} K/V pages; settings from {settings.sources or ['defaults']}")

    def execute(self, requests):
        for request in requests:
            self._accept(request)
        return None

    def _accept(self, request) -> None:
        sender = request.get_response_sender()
        try:
            parsed = parse_request(lambda name: _input(request, name), request.parameters())
            prompt_ids = self.tokenizer.encode(parsed.prompt)
            params = self.engine.engine.make_params(parsed.sampling)
            tracker = RequestTracker(parsed, len(prompt_ids), self.tokenizer.decode)
            # Our own id: clients may reuse theirs (or send none), the engine needs unique ones.
            request_id = f"{request.request_id() or 'req'}#{next(self._ids)}"
            self.responder.submit(request_id, sender, tracker, prompt_ids, params)
        except ValueError as e:  # the message starts with the field's name
            self._fail(sender, str(e), pb_utils.TritonError.INVALID_ARG)
        except Exception as e:
            self._fail(sender, f"internal error: {type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _fail(sender, message: str, code) -> None:
        sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        # Order matters: the engine's shutdown sends a final output for every pending request, then
        # the response thread sends them out and stops.
        pending = self.responder.num_active
        self.engine.shutdown()
        self.responder.stop()
        self.metrics.close()
        self.engine = self.responder = self.metrics = self.tokenizer = None
        pb_utils.Logger.log_info(f"dllm: engine stopped ({pending} requests were still active)")
