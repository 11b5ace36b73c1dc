"""dllm-serve's Python side, one package per layer (each imports only the layers below it; `make lint`
checks it): `serving/` (what runs inside Triton) and `server/` (starting tritonserver) above
`oracle/` (reference decoder, evaluation) and `training/` (the bundled model's training), above
`engine/` (the continuous-batching engine), above `models/` (architectures, checkpoint loading,
tokenizer), above `kernels/` (Triton kernels, outside this package)."""
