"""SkinnyLinear: the same bits as nn.Linear for every row count, and greedy text unchanged."""

from __future__ import annotations

import pytest

from bertgpt_cli.models import skinny_linear


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch, tmp_path):
    """Every test starts on a machine with no verdicts yet (its own cache file)."""
    monkeypatch.setattr(skinny_linear, "_verdicts", None)
    monkeypatch.setattr(skinny_linear, "cache_path", lambda: tmp_path / "skinny_linear.json")


def _layers(bias: bool):
    import torch

    torch.manual_seed(0)
    stock = torch.nn.Linear(48, 80, bias=bias)
    skinny = torch.nn.Linear(48, 80, bias=bias)
    skinny.load_state_dict(stock.state_dict())
    skinny.__class__ = skinny_linear.skinny_linear_class()
    return stock, skinny


@pytest.mark.parametrize("bias", [False, True])
def test_same_bits_as_linear_for_every_row_count(bias):
    import torch

    stock, skinny = _layers(bias)
    with torch.inference_mode():
        for rows in [*range(1, 35), 64, 200]:
            x = torch.randn(rows, 1, 48)  # (batch, one new token, hidden) as in a decode step
            for _ in range(2):  # first call checks the shape, the second uses the verdict
                assert torch.equal(skinny(x), stock(x)), rows
            assert skinny(x).is_contiguous()
    verdicts = {
        int(k.split(",")[0]) for k in skinny_linear.known_verdicts() if k.split(",")[1:3] == ["80", "48"]
    }
    assert verdicts == set(range(1, skinny_linear.MAX_ROWS + 1))  # every few-row shape was judged


def test_a_shape_whose_bits_differ_falls_back_to_linear(monkeypatch):
    """If W @ x.T disagreed with F.linear in any bit, the stock result is returned, now and later."""
    import torch

    stock, skinny = _layers(bias=False)
    calls = []

    def off_by_a_bit(self, x, rows):
        calls.append(rows)
        return torch.nextafter(stock(x), torch.tensor(float("inf")))

    monkeypatch.setattr(type(skinny), "_weight_times_input", off_by_a_bit)
    x = torch.randn(7, 48)
    with torch.inference_mode():
        assert torch.equal(skinny(x), stock(x))
        assert torch.equal(skinny(x), stock(x))
    assert calls == [7]  # tried once, never again for this shape
    assert list(skinny_linear.known_verdicts().values()) == ["differs"]


def test_an_exact_but_slower_shape_falls_back_and_the_verdict_is_kept(monkeypatch):
    """A CPU where W @ x.T is exact but loses the race: F.linear from then on, in this process
    and in the next (the verdict is read back from the cache file, not timed again)."""
    import torch

    stock, skinny = _layers(bias=True)
    monkeypatch.setattr(skinny_linear, "measured_faster", lambda layer, x, rows: False)
    fast_calls = []
    original = type(skinny)._weight_times_input

    def counting(self, x, rows):
        fast_calls.append(rows)
        return original(self, x, rows)

    monkeypatch.setattr(type(skinny), "_weight_times_input", counting)
    x = torch.randn(16, 1, 48)
    with torch.inference_mode():
        for _ in range(3):
            assert torch.equal(skinny(x), stock(x))
    assert fast_calls == [16]  # only the exactness check of the first call
    key = next(iter(skinny_linear.known_verdicts()))
    assert skinny_linear.known_verdicts() == {key: "slower"}
    monkeypatch.setattr(skinny_linear, "_verdicts", None)  # a new process on the same machine
    monkeypatch.setattr(skinny_linear, "measured_faster", lambda *a: pytest.fail("timed again"))
    with torch.inference_mode():
        assert torch.equal(skinny(x), stock(x))
    assert fast_calls == [16] and skinny_linear.known_verdicts()[key] == "slower"


def test_a_faster_exact_shape_uses_the_fast_form(monkeypatch):
    import torch

    stock, skinny = _layers(bias=False)
    monkeypatch.setattr(skinny_linear, "measured_faster", lambda layer, x, rows: True)
    x = torch.randn(1, 1, 48)  # one row: exact on every BLAS tried
    with torch.inference_mode():
        assert torch.equal(skinny(x), stock(x))
    assert list(skinny_linear.known_verdicts().values()) in (["fast"], ["differs"])


def test_only_plain_cpu_linears_are_switched(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert skinny_linear.use_skinny_linears(model) == linears == 2 * 7 + 1  # q k v o gate up down, lm_head
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not any(type(m) is torch.nn.Linear for m in model.modules())


def test_generate_gives_the_same_tokens_as_stock_generate(tiny_llama_dir):
    """16 prompts in one batch: 16-row decode steps, where the fast form is used on this CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bertgpt_cli.inference.generate import GenerateConfig, Generator

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir, padding_side="left")
    tokenizer.pad_token = tokenizer.eos_token
    prompts = [f"review {i}: the movie was" + " very" * (i % 5) for i in range(16)]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    stock = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    config = GenerateConfig(model=str(tiny_llama_dir), max_new_tokens=10, batch_size=16)
    generator = Generator(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), tokenizer, config)
    runs = []
    for model in (stock, generator.model):
        with torch.inference_mode():
            runs.append(
                model.generate(
                    **batch,
                    generation_config=generator.generation_config,
                    return_dict_in_generate=True,
                    output_logits=True,
                )
            )
    expected, got = runs
    assert torch.equal(got.sequences, expected.sequences)
    assert len(got.logits) == 10
    assert all(torch.equal(a, b) for a, b in zip(got.logits, expected.logits, strict=True))  # every bit
