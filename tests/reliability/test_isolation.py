"""A row that fails fails alone: when one sequence's adapter cannot be made, the sequences batched with it get the
answers they would get alone, and the loop goes on serving."""

from __future__ import annotations

from conftest import PROFILE_DIM, make_base, make_tokenizer, perturb
from figures import record
from test_adapter_cache import FakeSentenceModel
from test_serving import USERS, alone

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.serving.engine import ContinuousBatcher, SequenceRequest
from hyperpeft.serving.sampling import SamplingParams


class PoisonedSentenceModel(FakeSentenceModel):
    """An encoder that fails on one text, as a broken encoder or a text no check foresaw would."""

    def encode(self, texts, **kwargs):
        if any("poison" in text for text in texts):
            raise RuntimeError("the encoder cannot read this text")
        return super().encode(texts, **kwargs)


def test_a_failing_row_fails_alone_and_its_neighbours_get_their_answers():
    encoder = ProfileEncoder("fake", model=PoisonedSentenceModel())
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM)
    model = HyperPeftModel(make_base(), config, profile_encoder=encoder)
    perturb(model, std=1.0)
    model.eval()
    tokenizer = make_tokenizer()
    prompt = "w3 w4 w5"
    ids = tuple(tokenizer(prompt)["input_ids"])
    profiles = [USERS["alice"], "poison pill", USERS["bob"], None, "more poison"]
    params = SamplingParams(max_tokens=6, temperature=0)
    engine = ContinuousBatcher(model, tokenizer, batch_window_ms=50)
    engine.start()
    try:
        for _ in range(2):  # and the loop still serves afterwards
            results = engine.generate([SequenceRequest(ids, p, params) for p in profiles], timeout=60)
            for profile, result in zip(profiles, results):
                if profile is not None and "poison" in profile:
                    assert result.finish_reason == "error" and "cannot read this text" in result.error
                else:
                    assert result.finish_reason in ("stop", "length"), result.error
                    assert result.token_ids == alone(model, tokenizer, profile, prompt, 6), profile
    finally:
        engine.stop()
    record("isolation", rows=len(profiles), failing_rows=2, neighbours_right=3)
