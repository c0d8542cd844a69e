"""Model wiring, parameter and FLOP counts against formulas, causality, sampling."""

from __future__ import annotations

import torch

from moeplace.lm.base import FeedForward
from moeplace.lm.lstm import LSTMConfig
from moeplace.lm.models import build_model, config_from_dict, config_to_dict
from moeplace.lm.transformer import TransformerConfig


def test_dense_transformer_params_and_flops_match_formula():
    V, T, L, d, f = 65, 64, 4, 128, 512
    m = build_model(TransformerConfig(vocab_size=V, block_size=T, n_layer=L, n_head=4, n_embd=d, d_ff=f,
                                      bias=False))
    # per block: qkv 3d^2 + proj d^2 + ffn 2*d*f + two LayerNorm weights; tied embedding; final LN
    expected = V * d + T * d + L * (4 * d * d + 2 * d * f + 2 * d) + d
    assert m.num_params() == expected
    flops = L * (2 * 4 * d * d + 2 * d * (T + 1) + 2 * 2 * d * f) + 2 * d * V
    assert m.active_flops_per_token() == flops


def test_moe_transformer_matches_dense_compute_and_counts_experts():
    kw = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, d_ff=128, bias=False)
    dense = build_model(TransformerConfig(**kw))
    moe = build_model(TransformerConfig(num_experts=8, k=2, **kw))
    # MoE: 8 experts of 64 hidden units; active = 2 x 64 = the dense 128, plus the gating (and noise) matmuls
    per_layer_extra_params = 8 * 2 * 32 * 64 - 2 * 32 * 128 + 2 * 32 * 8
    assert moe.num_params() - dense.num_params() == 2 * per_layer_extra_params
    gating = 2 * (2 * 32 * 8)
    assert 0 <= moe.active_flops_per_token() - dense.active_flops_per_token() <= 2 * gating


def test_moe_every_other_block():
    m = build_model(TransformerConfig(vocab_size=20, block_size=8, n_layer=4, n_head=2, n_embd=16, d_ff=32,
                                      num_experts=4, k=1, moe_every=2))
    kinds = [type(b.ffn).__name__ for b in m.blocks]
    assert kinds == ["FeedForward", "MoE", "FeedForward", "MoE"]


def test_single_expert_moe_equals_dense_ffn():
    """An MoE with one expert and k=1 (gate = 1) computes exactly the dense FFN with the same weights."""
    torch.manual_seed(0)
    kw = dict(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16, d_ff=24, bias=True,
              activation="relu")
    moe = build_model(TransformerConfig(num_experts=1, k=1, d_expert=24, **kw)).eval()
    dense = build_model(TransformerConfig(**kw)).eval()
    sd = {k: v for k, v in moe.state_dict().items() if "ffn" not in k}
    for i, block in enumerate(moe.blocks):
        e = block.ffn.experts
        sd[f"blocks.{i}.ffn.fc.weight"] = e.w1[0].T
        sd[f"blocks.{i}.ffn.fc.bias"] = e.b1[0]
        sd[f"blocks.{i}.ffn.proj.weight"] = e.w2[0].T
        sd[f"blocks.{i}.ffn.proj.bias"] = e.b2[0]
    dense.load_state_dict(sd)
    idx = torch.randint(0, 30, (3, 12))
    torch.testing.assert_close(moe(idx)[0], dense(idx)[0], rtol=1e-5, atol=1e-5)


def test_moe_of_dense_slices_with_equal_gates_equals_dense_transformer():
    """Equal active compute must mean the same function: a dense FFN of width 2h split into two experts of
    width h (k=2, gates 1/2 each: zero-initialised router, no noise in eval mode) gives the dense model's
    logits. Catches an MoE block that returns the gate-weighted *mean* of the slices (half the dense FFN)."""
    torch.manual_seed(0)
    kw = dict(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16, d_ff=24, bias=True,
              activation="relu")
    moe = build_model(TransformerConfig(num_experts=2, k=2, moe_kwargs={"router": "noisy_topk"}, **kw)).eval()
    dense = build_model(TransformerConfig(**kw)).eval()
    sd = {k: v for k, v in dense.state_dict().items() if "ffn" not in k}
    for i, block in enumerate(dense.blocks):
        torch.nn.init.normal_(block.ffn.proj.bias, std=0.1)  # nonzero biases are part of the check
        torch.nn.init.normal_(block.ffn.fc.bias, std=0.1)
        w1, b1 = block.ffn.fc.weight.T, block.ffn.fc.bias          # [d, 2h], [2h]
        w2, b2 = block.ffn.proj.weight.T, block.ffn.proj.bias      # [2h, d], [d]
        sd[f"blocks.{i}.ffn.experts.w1"] = torch.stack(w1.split(12, dim=1))
        sd[f"blocks.{i}.ffn.experts.b1"] = torch.stack(b1.split(12))
        sd[f"blocks.{i}.ffn.experts.w2"] = torch.stack(w2.split(12, dim=0))
        sd[f"blocks.{i}.ffn.experts.b2"] = torch.stack([b2 / 2, b2 / 2])
        sd[f"blocks.{i}.ffn.router.w_gate"] = torch.zeros(16, 2)
        sd[f"blocks.{i}.ffn.router.w_noise"] = torch.zeros(16, 2)
    moe.load_state_dict(sd)
    idx = torch.randint(0, 30, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(moe(idx)[0], dense(idx)[0], rtol=1e-5, atol=1e-5)
        # independent reference for one block's FFN term: the dense formula W2 relu(W1 x + b1) + b2
        x = torch.randn(5, 16)
        f = dense.blocks[0].ffn
        ref = torch.relu(x @ f.fc.weight.T + f.fc.bias) @ f.proj.weight.T + f.proj.bias
        block = moe.blocks[0]
        torch.testing.assert_close(block.ffn_scale * block.ffn(x), ref, rtol=1e-5, atol=1e-5)


def test_old_checkpoint_config_keeps_unscaled_moe():
    """Configs saved before moe_output_scale existed rebuild the model they were trained as (scale 1)."""
    d = config_to_dict(TransformerConfig(vocab_size=20, num_experts=4, k=2))
    del d["moe_output_scale"]
    m = build_model(config_from_dict(d))
    assert [b.ffn_scale for b in m.blocks] == [1.0] * 4
    fresh = build_model(TransformerConfig(vocab_size=20, num_experts=4, k=2))
    assert [b.ffn_scale for b in fresh.blocks] == [2.0] * 4


def test_moe_lstm_of_dense_slices_with_equal_gates_equals_dense_lstm():
    """The LSTM's MoE at equal active compute is the dense FFN when its k experts are the FFN's slices."""
    torch.manual_seed(0)
    kw = dict(vocab_size=30, block_size=12, d_model=16, d_ff=24)
    moe = build_model(LSTMConfig(num_experts=2, k=2, moe_kwargs={"router": "noisy_topk"}, **kw)).eval()
    dense = build_model(LSTMConfig(**kw)).eval()
    sd = {k: v for k, v in dense.state_dict().items() if "ffn" not in k}
    f = dense.ffn
    torch.nn.init.normal_(f.fc.weight, std=0.3)  # large enough that a wrong scale shows in the logits
    torch.nn.init.normal_(f.proj.weight, std=0.3)
    torch.nn.init.normal_(f.fc.bias, std=0.1)
    torch.nn.init.normal_(f.proj.bias, std=0.1)
    sd["ffn.experts.w1"] = torch.stack(f.fc.weight.T.split(12, dim=1))
    sd["ffn.experts.b1"] = torch.stack(f.fc.bias.split(12))
    sd["ffn.experts.w2"] = torch.stack(f.proj.weight.T.split(12, dim=0))
    sd["ffn.experts.b2"] = torch.stack([f.proj.bias / 2, f.proj.bias / 2])
    sd["ffn.router.w_gate"] = torch.zeros(16, 2)
    sd["ffn.router.w_noise"] = torch.zeros(16, 2)
    moe.load_state_dict(sd)
    idx = torch.randint(0, 30, (3, 12))
    with torch.no_grad():
        torch.testing.assert_close(moe(idx)[0], dense(idx)[0], rtol=1e-5, atol=1e-5)
    d = config_to_dict(LSTMConfig(vocab_size=20, num_experts=4, k=2))
    del d["moe_output_scale"]  # an LSTM checkpoint from before the scale: rebuilt unscaled, as trained
    assert build_model(config_from_dict(d)).ffn_scale == 1.0


def test_transformer_and_lstm_are_causal():
    for cfg in (TransformerConfig(vocab_size=20, block_size=10, n_layer=2, n_head=2, n_embd=16, d_ff=32,
                                  num_experts=4, k=2),
                LSTMConfig(vocab_size=20, block_size=10, d_model=16, d_ff=32, num_experts=4, k=2)):
        m = build_model(cfg).eval()
        a = torch.randint(0, 20, (2, 10))
        b = a.clone()
        b[:, 6:] = (b[:, 6:] + 1) % 20
        torch.testing.assert_close(m(a)[0][:, :6], m(b)[0][:, :6])
        assert not torch.allclose(m(a)[0][:, 6:], m(b)[0][:, 6:])


def test_moe_lstm_structure_and_routing_of_all_timesteps():
    cfg = LSTMConfig(vocab_size=20, block_size=10, d_model=16, d_ff=32, num_experts=4, k=2, dropout=0.0)
    m = build_model(cfg).eval()
    idx = torch.randint(0, 20, (3, 10))
    logits, _ = m(idx)
    assert sum(m.ffn.stats["tokens_per_expert"]) == 3 * 10 * 2  # every timestep of the batch, k each
    # residual structure of the paper: h = e + LSTM1(e); h += k·MoE(h); h += LSTM2(h); softmax(W h)
    e = m.embedding(idx)
    h = e + m.lstm1(e)[0]
    h = h + 2 * m.ffn(h)  # k = 2: the mean of 2 experts scaled to the sum, as the dense FFN of 2 slices
    h = h + m.lstm2(h)[0]
    torch.testing.assert_close(logits, h @ m.lm_head.weight.T + m.lm_head.bias)
    d = 16
    lstm_flops = 2 * 2 * 4 * (d * d + d * d)
    assert m.active_flops_per_token() == lstm_flops + m.ffn.active_flops_per_token() + 2 * d * 20


def test_lstm_ffn_norm_feeds_the_moe_a_layer_normed_input():
    """ffn_norm: h = e + LSTM1(e); h += k·MoE(LN(h)), LN(h) = (h - mean) / sqrt(var + 1e-5) over d_model."""
    torch.manual_seed(0)
    cfg = LSTMConfig(vocab_size=20, block_size=10, d_model=16, d_ff=32, num_experts=4, k=2, ffn_norm=True,
                     moe_kwargs={"router": "noisy_topk", "gate_init_std": 1.0})
    m = build_model(cfg).eval()
    idx = torch.randint(0, 20, (3, 10))
    seen = []
    m.ffn.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    with torch.no_grad():
        logits, _ = m(idx)
        e = m.embedding(idx)
        h = e + m.lstm1(e)[0]
        mu = h.mean(-1, keepdim=True)
        var = ((h - mu) ** 2).mean(-1, keepdim=True)
        normed = (h - mu) / torch.sqrt(var + 1e-5)
        torch.testing.assert_close(seen[0], normed)
        h = h + 2 * m.ffn(normed)
        h = h + m.lstm2(h)[0]
        torch.testing.assert_close(logits, h @ m.lm_head.weight.T + m.lm_head.bias)
    d = config_to_dict(LSTMConfig(vocab_size=20))
    del d["ffn_norm"]  # a checkpoint from before the option: rebuilt without the norm, as trained
    assert isinstance(build_model(config_from_dict(d)).ffn_norm, torch.nn.Identity)


def test_dense_lstm_ffn_width():
    m = build_model(LSTMConfig(vocab_size=20, d_model=16, d_ff=48))
    assert isinstance(m.ffn, FeedForward) and m.ffn.fc.out_features == 48
    assert m.ffn.active_flops_per_token() == 2 * 2 * 16 * 48


def test_generate_greedy_and_top1_agree_and_crop_context():
    torch.manual_seed(0)
    m = build_model(TransformerConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, d_ff=32))
    start = torch.zeros(2, 1, dtype=torch.long)
    greedy = m.generate(start, 12, temperature=0)
    top1 = m.generate(start, 12, temperature=1.3, top_k=1)
    assert greedy.shape == (2, 13) and torch.equal(greedy, top1)
    # independent greedy decode: argmax of the last logits over the last 8 tokens
    seq = start.clone()
    for _ in range(12):
        seq = torch.cat([seq, m(seq[:, -8:])[0][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(seq, greedy)


def test_config_roundtrip():
    cfg = TransformerConfig(vocab_size=20, num_experts=4, moe_kwargs={"router": "noisy_topk"})
    assert config_from_dict(config_to_dict(cfg)) == cfg
    lc = LSTMConfig(vocab_size=20)
    assert config_from_dict(config_to_dict(lc)) == lc


def test_rotary_embedding_matches_complex_rotation_and_is_relative():
    """apply_rotary is the complex rotation (x_i + i x_{i+D/2}) e^{i m θ_i}, θ_i = 10000^(-2i/D);
    so q_m · k_n depends on m - n only."""
    from moeplace.lm.transformer import apply_rotary, rotary_tables

    torch.manual_seed(0)
    T, D = 10, 8
    cos, sin = rotary_tables(T, D)
    x = torch.randn(1, 1, T, D, dtype=torch.float64)
    got = apply_rotary(x, cos.double(), sin.double())
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    z = torch.complex(x[..., : D // 2], x[..., D // 2:]) * torch.polar(
        torch.ones(T, D // 2, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * theta)
    torch.testing.assert_close(got, torch.cat((z.real, z.imag), dim=-1))
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    qs = apply_rotary(q.expand(1, 1, T, D), cos.double(), sin.double())[0, 0]
    ks = apply_rotary(k.expand(1, 1, T, D), cos.double(), sin.double())[0, 0]
    torch.testing.assert_close(qs[5] @ ks[2], qs[7] @ ks[4])  # same offset 3
    torch.testing.assert_close(qs[3] @ ks[3], q @ k)  # offset 0: the plain dot product


def test_rope_transformer_has_no_position_table_and_stays_causal():
    kw = dict(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16, d_ff=32, bias=False)
    learned = build_model(TransformerConfig(**kw))
    rope = build_model(TransformerConfig(pos_emb="rope", **kw)).eval()
    assert learned.num_params() - rope.num_params() == 12 * 16  # the block_size x n_embd table
    assert "wpe.weight" not in rope.state_dict()
    torch.manual_seed(1)
    idx = torch.randint(0, 20, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 20
    a, b = rope(idx)[0], rope(changed)[0]
    torch.testing.assert_close(a[:, :8], b[:, :8])  # a later token never changes an earlier prediction
    assert not torch.allclose(a[:, 8:], b[:, 8:])
