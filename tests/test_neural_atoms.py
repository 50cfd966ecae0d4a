"""Neural Atoms block (Li et al., "Neural Atoms", ICLR 2024, Sec. 3.2) over real atoms only: outputs and
gradients equal to the previous padded implementation (``PaddedNeuralAtomBlock``, kept verbatim in
benchmarks/bench_neural_atoms.py) to float64 round-off, batched == per-graph, no [B, N_max] intermediates,
double backward, device/dtype taken from the inputs."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from farfield.models.long_range import NeuralAtomBlock, NeuralAtoms

_BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_neural_atoms.py"


def _reference():
    spec = importlib.util.spec_from_file_location("_bench_neural_atoms", _BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_bench_neural_atoms", mod)
    spec.loader.exec_module(mod)
    return mod


REF = _reference()


def _pair(d, K, heads, reduce, seed=0):
    torch.manual_seed(seed)
    new = NeuralAtomBlock(d, K, heads, reduce).double()
    with torch.no_grad():                              # non-zero biases so that every bias path is exercised
        for p in new.parameters():
            p.add_(0.1 * torch.randn_like(p))
    old = REF.PaddedNeuralAtomBlock(d, K, heads, reduce).double()
    old.load_state_dict(new.state_dict())
    return new, old


def _inputs(sizes, d, seed=1):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(sizes)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    h = torch.randn(int(sizes.sum()), d, generator=g, dtype=torch.float64)
    w = torch.randn(int(sizes.sum()), d, generator=g, dtype=torch.float64)
    return sizes, batch, h, w


def _run(block, h, batch, B, atoms, w):
    h = h.detach().clone().requires_grad_(True)
    y = block(h, batch, B, atoms)
    params = dict(block.named_parameters())
    grads = torch.autograd.grad((y * w).sum(), [h, *params.values()])
    return y.detach(), dict(zip(["h", *params], grads))


def _assert_close_grads(g_new, g_old, tol=1e-10):
    """Each gradient against the largest gradient entry of its module (the exchange's key bias has an
    analytically zero gradient: softmax is shift-invariant; both sides hold round-off there)."""
    assert g_new.keys() == g_old.keys()
    scale = {}
    for k, g in g_old.items():
        mod = k.rsplit(".", 1)[0] if "." in k else k
        scale[mod] = max(scale.get(mod, 0.0), g.abs().max().item())
    for k, g in g_old.items():
        mod = k.rsplit(".", 1)[0] if "." in k else k
        err = (g_new[k] - g).abs().max().item()
        assert err <= tol * max(scale[mod], 1e-12), (k, err, scale[mod])


# graphs of very different sizes, a 1-atom graph; per-graph neural atoms equal or not; paths: the key
# re-association ((H-1) K < d), the value re-association (1 head, B K < N) and the plain forms
CASES = [
    # d, max_atoms, heads, head_reduce, sizes, atoms
    (16, 6, 1, "sum", [1, 40, 3, 200, 7], [1, 6, 2, 6, 5]),         # masks, k and v re-association
    (16, 6, 1, "mean", [1, 2, 3], [1, 2, 3]),                       # B K >= N: plain value projection
    (16, 6, 4, "sum", [1, 40, 3, 200, 7], [1, 6, 2, 6, 5]),         # (H-1) K >= d: plain key projection
    (16, 6, 4, "mean", [1, 40, 3, 200, 7], [1, 6, 2, 6, 5]),
    (16, 3, 4, "mean", [1, 40, 3, 200], [3, 3, 3, 3]),              # key re-association with 4 heads, no mask
    (16, 6, 2, "sum", [1, 40, 3, 200], [6, 6, 6, 6]),
    (12, 8, 3, "sum", [150, 1, 90, 33], [5, 5, 5, 5]),              # fewer live seeds than max_atoms
    (8, 4, 1, "sum", [30, 0, 25, 1], [4, 3, 2, 1]),                 # a graph with no atoms
]


@pytest.mark.parametrize("d,K,heads,reduce,sizes,atoms", CASES)
def test_outputs_and_gradients_equal_the_padded_reference(d, K, heads, reduce, sizes, atoms):
    new, old = _pair(d, K, heads, reduce)
    sizes, batch, h, w = _inputs(sizes, d)
    atoms = torch.tensor(atoms)
    y1, g1 = _run(new, h, batch, len(sizes), atoms, w)
    y0, g0 = _run(old, h, batch, len(sizes), atoms, w)
    assert (y1 - y0).abs().max() <= 1e-12 * y0.abs().max()
    _assert_close_grads(g1, g0)


@pytest.mark.parametrize("d,K,heads,reduce,sizes,atoms", CASES[:5])
def test_batched_equals_per_graph(d, K, heads, reduce, sizes, atoms):
    new, _ = _pair(d, K, heads, reduce)
    sizes_t, batch, h, w = _inputs(sizes, d)
    atoms = torch.tensor(atoms)
    y, _ = _run(new, h, batch, len(sizes), atoms, w)
    start = 0
    for b, n in enumerate(sizes):
        hb = h[start:start + n]
        yb, _ = _run(new, hb, torch.zeros(n, dtype=torch.long), 1, atoms[b:b + 1], w[start:start + n])
        assert (y[start:start + n] - yb).abs().max() <= 1e-12 * max(yb.abs().max().item(), 1e-300)
        start += n


@pytest.mark.parametrize("schedule,heads,reduce", [("fixed", 1, "sum"), ("desc", 1, "sum"), ("desc", 2, "mean"),
                                                   ("fixed", 4, "mean")])
def test_mechanism_layers_equal_the_padded_reference(schedule, heads, reduce):
    """Every layer of the mechanism (per-graph K_b from ``ratio``, fixed or descending schedule) against the
    reference blocks with the same weights."""
    torch.manual_seed(0)
    m = NeuralAtoms(16, 3, ratio=0.5, max_atoms=40, heads=heads, head_reduce=reduce, schedule=schedule).double()
    sizes, batch, h, w = _inputs([1, 60, 5, 17, 2], 16)
    for i, (blk, atoms) in enumerate(zip(m.blocks, m.atoms_per_layer(sizes))):
        ref = REF.PaddedNeuralAtomBlock(16, 40, heads, reduce).double()
        ref.load_state_dict(blk.state_dict())
        y1, g1 = _run(blk, h, batch, len(sizes), atoms, w)
        y0, g0 = _run(ref, h, batch, len(sizes), atoms, w)
        assert (y1 - y0).abs().max() <= 1e-12 * y0.abs().max(), i
        _assert_close_grads(g1, g0)


def test_padded_copy_swaps_every_block_and_keeps_the_weights():
    m = torch.nn.Sequential(NeuralAtoms(8, 2, num_atoms=3))
    ref = REF.padded_copy(m)
    blocks = [b for b in ref.modules() if isinstance(b, REF.PaddedNeuralAtomBlock)]
    assert len(blocks) == 2 and not any(isinstance(b, NeuralAtomBlock) for b in ref.modules())
    for k, v in m.state_dict().items():
        assert torch.equal(ref.state_dict()[k], v)


def test_no_intermediate_scales_with_batch_times_largest_graph():
    """One graph of 3,000 atoms and 300 graphs of 1 atom: the padded layout holds B x N_max x K = 301 x 3,000 x
    K values; every tensor saved for backward here stays O(N K + B K d)."""
    d, K = 8, 4
    new, _ = _pair(d, K, 2, "sum")
    sizes, batch, h, w = _inputs([3000] + [1] * 300, d)
    N, B = int(sizes.sum()), len(sizes)
    biggest = [0]

    def pack(t):
        biggest[0] = max(biggest[0], t.numel())
        return t

    h = h.requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = new(h, batch, B, torch.full((B,), K))
    (y * w).sum().backward()
    assert biggest[0] <= 2 * max(N * 2 * K, N * d, B * K * d), biggest[0]
    assert biggest[0] < B * 3000 * K / 20


def test_double_backward_matches_the_reference():
    """Influence diagnostics take second derivatives through the block."""
    new, old = _pair(8, 4, 1, "sum")
    sizes, batch, h, w = _inputs([5, 1, 9], 8)
    atoms = torch.tensor([4, 2, 3])
    out = []
    for m in (new, old):
        x = h.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad((m(x, batch, 3, atoms) * w).sum().tanh(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), x)
        out.append(gg)
    assert (out[0] - out[1]).abs().max() <= 1e-10 * out[1].abs().max()


def test_float32_outputs_follow_the_input_dtype_and_match():
    new, old = _pair(16, 6, 1, "sum")
    new, old = new.float(), old.float()
    sizes, batch, h, _ = _inputs([1, 40, 3, 200], 16)
    atoms = torch.tensor([1, 6, 2, 6])
    y1, y0 = new(h.float(), batch, 4, atoms), old(h.float(), batch, 4, atoms)
    assert y1.dtype == torch.float32 and y1.shape == (244, 16)
    assert (y1 - y0).abs().max() <= 1e-5 * y0.abs().max()


def test_unused_seeds_get_exactly_zero_gradient():
    """Seeds beyond the batch's largest K_b are never scored (and had exactly zero gradient before)."""
    new, _ = _pair(8, 10, 1, "sum")
    sizes, batch, h, w = _inputs([4, 7], 8)
    y = new(h, batch, 2, torch.tensor([3, 5]))
    (y * w).sum().backward()
    assert torch.count_nonzero(new.seeds.grad[5:]) == 0 and torch.count_nonzero(new.seeds.grad[:5]) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    new, old = _pair(16, 6, 1, "sum")
    sizes, batch, h, _ = _inputs([1, 40, 3], 16)
    atoms = torch.tensor([1, 6, 2])
    y = new.cuda()(h.cuda(), batch.cuda(), 3, atoms.cuda())
    assert y.device.type == "cuda"
    assert torch.allclose(y.cpu(), old(h, batch, 3, atoms), rtol=0, atol=1e-10)
