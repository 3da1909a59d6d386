"""The GPT-2 module: parity with transformers, sampling filters, Hugging Face export and import, configs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from webtext.model import hf
from webtext.model.config import PRESETS, GPTConfig, model_config, parse_job
from webtext.model.model import GPT, filter_logits

transformers = pytest.importorskip("transformers")

TINY = dict(block_size=32, vocab_size=101, n_layer=2, n_head=4, n_embd=48)


def hf_tiny(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=TINY["vocab_size"], n_positions=TINY["block_size"],
                                  n_embd=TINY["n_embd"], n_layer=TINY["n_layer"], n_head=TINY["n_head"],
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_logits_match_transformers_gpt2():
    theirs = hf_tiny()
    with torch.no_grad():  # random biases and LayerNorm gains too, so no parameter kind is tested at its default
        for name, p in theirs.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1).add_(1.0 if "ln" in name and name.endswith("weight") else 0.0)
    ours = hf.from_hf_state_dict(theirs.state_dict(), GPTConfig(**TINY)).eval()
    idx = torch.randint(0, TINY["vocab_size"], (3, TINY["block_size"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(idx, labels=idx)
        logits, _ = ours(idx)
        _, loss = ours(idx[:, :-1], idx[:, 1:])
    assert ours.config.padded_vocab_size == 128
    assert torch.allclose(logits[..., :TINY["vocab_size"]], expected.logits, atol=1e-5, rtol=0)
    assert torch.isneginf(logits[..., TINY["vocab_size"]:]).all()
    # The loss over the padded vocabulary equals transformers' loss over the real one: padding takes no mass.
    # (Their loss drops the last position; ours is fed one token less, which is the same thing.)
    assert math.isclose(loss.item(), expected.loss.item(), rel_tol=1e-5)


def test_init_follows_gpt2():
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=1000, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight
    std = {name: p.std().item() for name, p in model.named_parameters()}
    assert std["transformer.h.0.attn.c_attn.weight"] == pytest.approx(0.02, rel=0.05)
    assert std["transformer.h.3.mlp.c_proj.weight"] == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert std["transformer.h.3.attn.c_proj.weight"] == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.transformer.h[0].attn.c_attn.bias.abs().max() == 0
    assert isinstance(model.transformer.h[0].mlp.gelu, torch.nn.GELU)
    assert model.transformer.h[0].mlp.gelu.approximate == "tanh"
    assert model.transformer.h[0].ln_1.eps == 1e-5


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(**TINY))
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # every parameter exactly once, the tied embedding included
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params(non_embedding=False)


def test_presets_are_the_published_sizes():
    sizes = {name: (c["n_layer"], c["n_head"], c["n_embd"]) for name, c in PRESETS.items()}
    assert sizes["gpt2"] == (12, 12, 768) and sizes["gpt2-medium"] == (24, 16, 1024)
    assert sizes["gpt2-large"] == (36, 20, 1280) and sizes["gpt2-xl"] == (48, 25, 1600)
    with torch.device("meta"):
        n = GPT(model_config("gpt2", vocab_size=50257, pad_vocab_multiple=1)).num_params(non_embedding=False)
    assert n == 124_439_808  # GPT-2 small as released


def test_job_file_rejects_unknown_and_mistyped_fields():
    job = parse_job('[model]\npreset = "gpt2-tiny"\nn_layer = 3\n[train]\nlearning_rate = 1\n')
    assert job.model.n_layer == 3 and job.model.n_embd == 64 and job.train.learning_rate == 1.0
    with pytest.raises(ValueError, match="unknown field.*n_layers"):
        parse_job("[model]\nn_layers = 3\n")
    with pytest.raises(ValueError, match="batch_size must be int"):
        parse_job('[train]\nbatch_size = "12"\n')
    with pytest.raises(ValueError, match="unknown table"):
        parse_job("[optim]\nlr = 1\n")
    with pytest.raises(ValueError, match="unknown model preset"):
        parse_job('[model]\npreset = "gpt5"\n')


def test_top_k_1_is_greedy_decoding():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    prompt = torch.randint(0, TINY["vocab_size"], (2, 5))
    greedy = model.generate(prompt, 12, temperature=0)
    for seed in range(3):
        sampled = model.generate(prompt, 12, temperature=1.3, top_k=1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(sampled, greedy)
    assert (greedy < TINY["vocab_size"]).all()


def test_padding_ids_are_never_sampled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():  # make the padding rows the most attractive logits if they were not masked
        model.transformer.wte.weight[TINY["vocab_size"]:] = 10.0
    out = model.generate(torch.zeros(4, 1, dtype=torch.long), 20, temperature=2.0,
                         generator=torch.Generator().manual_seed(0))
    assert (out < TINY["vocab_size"]).all()


def test_top_p_keeps_exactly_the_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()

    def kept(p):
        return set(torch.isfinite(filter_logits(logits, top_p=p))[0].nonzero().flatten().tolist())

    assert kept(0.4) == {1}  # the top token alone reaches 0.4
    assert kept(0.75) == {1, 3}  # 0.5 < 0.75 <= 0.8
    assert kept(0.9) == {1, 3, 2}  # 0.8 < 0.9 <= 0.95
    assert kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    assert set(torch.isfinite(filter_logits(logits, top_k=2, top_p=0.5))[0].nonzero().flatten().tolist()) == {1}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-40, 40), min_size=2, max_size=30, unique=True), st.floats(0.01, 0.999))
def test_top_p_nucleus_is_the_smallest_sufficient_prefix(values, p):
    logits = torch.tensor([values], dtype=torch.float64) / 5  # distinct, so "most probable" is well defined
    probs = torch.softmax(logits, -1)[0]
    kept = torch.isfinite(filter_logits(logits, top_p=p))[0]
    order = torch.argsort(probs, descending=True)
    n_kept = int(kept.sum())
    assert kept[order[:n_kept]].all()  # the kept tokens are the most probable ones
    mass = probs[order].cumsum(0)
    assert mass[n_kept - 1] >= p - 1e-12  # they reach p
    assert n_kept == 1 or mass[n_kept - 2] < p + 1e-12  # and one fewer would not


def test_export_round_trip_through_transformers(tmp_path):
    import support_shards
    from tokenizers import Tokenizer

    shards_dir = support_shards.shard_dir()
    tok_path = f"{shards_dir}/tokenizer.json"
    tok = Tokenizer.from_file(tok_path)
    torch.manual_seed(0)
    config = GPTConfig(block_size=32, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=2, n_embd=32)
    ours = GPT(config).eval()
    eot = tok.token_to_id(support_shards.EOT)
    hf.export_dir(ours, tok_path, eot, str(tmp_path / "hf"))

    loaded = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "def f(x):\n    return x ** 2  # squares"
    ids = tok.encode(text).ids
    assert hf_tok(text)["input_ids"] == ids
    assert hf_tok.eos_token_id == eot
    idx = torch.tensor([ids])
    with torch.no_grad():
        theirs = loaded(idx).logits
        mine, _ = ours(idx)
    assert torch.allclose(theirs, mine[..., :config.vocab_size], atol=1e-5, rtol=0)

    back = hf.import_dir(str(tmp_path / "hf"))
    assert back.config.vocab_size == config.vocab_size and back.config.n_layer == 2
    for (name, a), (_, b) in zip(ours.state_dict().items(), back.state_dict().items()):
        if name not in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(a, b), name
    assert torch.equal(ours.transformer.wte.weight[:config.vocab_size], back.transformer.wte.weight[:config.vocab_size])


def test_import_refuses_a_directory_without_safetensors(tmp_path):
    theirs = hf_tiny()
    theirs.save_pretrained(str(tmp_path), safe_serialization=True)
    model = hf.import_dir(str(tmp_path))
    assert model.config.vocab_size == TINY["vocab_size"]
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors missing"):
        hf.import_dir(str(tmp_path))
