"""What runs inside Triton (model_repository/dllm/1/model.py is its thin entry point): settings from
config.pbtxt and engine.json, the intake (inputs parsed, prompt measured and tokenized, the engine's
validation once), the responder thread (the only writer of responses, behind the write gate while
the model is unavailable), request trackers (detokenized deltas, timings), and the custom metrics."""
