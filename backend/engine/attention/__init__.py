"""Attention during a step: Refresh rows store their K/V into the pool and attend to their own
sequence; Reuse rows attend to their block and their cached slots read from the pool (paged kernel
on CUDA, its reference on the CPU); head-centric sparse selection of what each KV head keeps."""
