"""Measurements, all printing figures and writing JSON under results/: the in-process engine
benchmark and its workloads, server load tools (Perf Analyzer, GenAI-Perf, AIPerf, fair progress),
the schedule model and device fits, kernel bandwidth and the sm_90 compile check, the GPU check."""
