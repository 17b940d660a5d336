"""Issue 28's L2M points that read L2M's code directly (ml-jku/L2M at 0a4747b): the modulators'
initialisation, the success rule, gradient accumulation with one micro-batch per domain."""

import math

import pytest
import torch

from lamo_ray.continual.pool import ModulationPool, l2m_init_bound


def test_modulator_init_bound_is_l2ms_kaiming_uniform_over_its_whole_pool_tensor():
    """ml-jku/L2M ``src/algos/prompt/l2m.py:109-111``: ``lora_a`` (pool 30, 6 layers, length 6, 768, rank 8)
    gets ``kaiming_uniform_(a=sqrt(5))`` as one tensor, so torch's fan-in is 6 x 6 x 768 x 8 and the
    bound ~0.0021; the single LoRA (``src/algos/prompt/lora.py:47-55``, an Embedding (6, 6 x 8 x 768))
    ~0.0052. Before: kaiming per (h, r) matrix, bound 1 / sqrt(h) (0.036 at paper scale)."""
    # the bound torch itself computes for L2M's tensors (meta: shapes only, no memory)
    pool = torch.empty(30, 6, 6, 768, 8, device="meta")
    single = torch.empty(6, 6 * 8 * 768, device="meta")
    for tensor, layers in ((pool, 6), (single, None)):
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(tensor)
        torch_bound = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3.0 / fan_in)
        assert l2m_init_bound(768, 3072, 8, layers) == pytest.approx(torch_bound, rel=1e-12)
    assert l2m_init_bound(768, 3072, 8, 6) == pytest.approx(0.002126, abs=1e-6)
    assert l2m_init_bound(768, 3072, 8) == pytest.approx(0.005208, abs=1e-6)
    # a small pool draws its A matrices from that bound: within it, and filling it
    torch.manual_seed(0)
    for single_lora, layers in ((False, 2), (True, None)):
        p = ModulationPool(32, 128, 2, size=5, rank=4, single=single_lora)
        bound = l2m_init_bound(32, 128, 4, layers)
        for a in (p.q_a, p.v_a, p.ff_a):
            assert a.abs().max() <= bound and a.abs().max() > 0.95 * bound
        assert all(b.abs().sum() == 0 for b in (p.q_b, p.v_b, p.ff_b))
