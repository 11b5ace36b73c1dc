"""An OpenAI-compatible HTTP server (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, server-sent
events) in front of a running tritonserver: a process of its own that talks to Triton's gRPC stream like
any client (`tritonclient.grpc.aio`) and never imports the engine.

    python -m openai_server --triton-url localhost:8001          # the HTTP server alone
    python -m openai_server.launch                               # tritonserver and this server (make serve-openai)

One concept per module: `protocol` (what a request may hold), `errors` (OpenAI error objects),
`sampling` (an OpenAI request as the model's sampling parameters), `triton` (one generation over the gRPC
stream), `choices` (Triton's per-answer responses as OpenAI choices and chunks), `logprobs`, `app` (the
routes), `launch` (both processes together).
"""
