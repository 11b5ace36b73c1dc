"""The block-diffusion training objective shows the model exactly the states SDAR's decoding sees:
each noisy row's logits from the one training forward equal the oracle's plain block-causal forward
of (clean blocks before it + that noisy block), on random tiny models in float64; and the LLaDA ->
SDAR conversion keeps every shared weight."""

from __future__ import annotations

import random

import pytest
import torch

from backend.models import random_model
from backend.models.model_config import ModelConfig
from backend.oracle.block_common import Forwards
from backend.training.block_objective import block_diffusion_loss, block_layout, hidden_states, noisy_batch
from backend.training.model_init import convert

MASK, EOS = 30, 29


def tiny(seed: int, arch: str = "sdar") -> torch.nn.Module:
    cfg = ModelConfig(arch=arch, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=48,
                      vocab_size=32, max_sequence_length=128, qk_norm=arch == "sdar",
                      block_size=4 if arch == "sdar" else 0, mask_token_id=MASK, eos_token_id=EOS)
    return random_model(cfg, torch.float64, seed=seed)


def example(rng: random.Random) -> tuple[list[int], list[int]]:
    prompt = [rng.randrange(29) for _ in range(rng.randint(1, 13))]
    answer = [rng.randrange(29) for _ in range(rng.randint(0, 9))]
    return prompt, answer + [EOS] * rng.randint(1, 6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [1, 2, 4])
def test_noisy_rows_see_what_decoding_sees(seed, block):
    rng = random.Random(seed)
    model = tiny(seed)
    pairs = [example(rng) for _ in range(3)]
    nb = noisy_batch([p for p, _ in pairs], [a for _, a in pairs], MASK, torch.Generator().manual_seed(seed),
                     block, EOS)
    logits = model.lm_head(hidden_states(model, nb))
    assert nb.rows.numel() > 0 and (nb.ids[nb.rows] == MASK).all()
    offset = 0
    for (p, a), pos in zip(pairs, nb.positions, strict=True):
        clean = block_layout(p, a, block, EOS)
        n = len(clean)
        assert n % block == 0 and clean[:len(p)] == p and EOS in clean[len(p):]
        noisy = nb.ids[offset + n:offset + pos.numel()]
        first = n - noisy.numel()
        assert first == len(p) // block * block and (noisy[:len(p) - first] == torch.tensor(p[first:])).all()
        oracle = Forwards(model, block, cached=False)
        for lo in range(first, n, block):
            x = torch.tensor(clean[:lo] + noisy[lo - first:lo - first + block].tolist())
            want = oracle.denoise(x, lo, lo + block)
            got = logits[offset + n + lo - first:offset + n + lo - first + block]
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        offset += pos.numel()


def test_loss_is_finite_positive_and_learns():
    torch.manual_seed(0)
    model = tiny(1).float().requires_grad_(True)
    rng = random.Random(1)
    pairs = [example(rng) for _ in range(8)]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]

    def loss(seed: int) -> torch.Tensor:
        per, n = block_diffusion_loss(model, prompts, answers, MASK, torch.Generator().manual_seed(seed), False, 4, EOS)
        assert torch.isfinite(per).all() and (per >= 0).all() and n > 0
        return per.sum()

    before = float(loss(999))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        opt.zero_grad()
        loss(step).backward()
        opt.step()
    assert float(loss(999)) < 0.5 * before


def test_llada_converts_to_sdar_keeping_its_weights():
    llada = tiny(2, "llada")
    sdar = convert(llada, ModelConfig(**{**llada.config.__dict__, "arch": "sdar", "qk_norm": True, "block_size": 4}),
                   [[random.Random(i).randrange(32) for _ in range(20)] for i in range(4)])
    src = llada.state_dict()
    for name, w in sdar.state_dict().items():
        if name.endswith(("q_norm.weight", "k_norm.weight")):
            assert (w > 0).all() and (w == w[0]).all()  # one calibrated scale per layer
        else:
            assert torch.equal(w, src[name].to(w.dtype)), name
