"""Which requests run in the next iteration, and in which phase (Refresh or Reuse): the scheduler's
mechanism (queues, admission by K/V pages, preemption), the policies side by side (`phase`, the
default; `fcfs` and `static`, the baselines), the fair shares under overload, and the cost model that
predicts an iteration's time with its refit from measured iterations. No tensors here."""
