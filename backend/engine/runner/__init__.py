"""One step on the device: prepare (pack the batch into step inputs, one host-to-device copy),
forward (eager, or a CUDA-graph replay for Reuse steps; fused Triton layers on CUDA), decode (the
budgeted vocabulary head and sampling, one device-to-host copy). The runner knows no policy."""
