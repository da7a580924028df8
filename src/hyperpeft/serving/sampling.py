"""Per-row decoding settings and the choice of each row's next token: greedy, or sampled with its own seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Temperatures below this decode greedily, as in vLLM: dividing logits by a tinier one overflows softmax.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """
    How one sequence is decoded, as an OpenAI request asks for it.

    Args:
        max_tokens (`int`): the most new tokens; the sequence ends with `finish_reason="length"` there.
        temperature (`float`, defaults to 0): 0 (or below 1e-5) decodes greedily; above it, samples from
            `softmax(logits / temperature)`.
        top_p (`float`, defaults to 1): nucleus sampling, the smallest set of tokens whose probability reaches `top_p`.
        seed (`int`, *optional*): the seed of this sequence's own random generator, so that the same request with the
            same seed samples the same tokens whatever else shares its batch.
        stop (`tuple[str, ...]`): stop strings; the text ends just before the first one (`finish_reason="stop"`).
        logprobs (`int`, *optional*): when set, return each chosen token's log-probability and this many top
            alternatives (log-softmax of the model's logits, before temperature and top-p, as vLLM returns them).
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def generator(self) -> torch.Generator | None:
        """A random generator for a sampled sequence (seeded by `seed`, else from the OS), `None` when greedy."""
        if self.greedy:
            return None
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log-probability and the top alternatives, as `(token_id, logprob)` pairs."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> tuple[list[int], list[TokenLogprob | None]]:
    """
    Choose every row's next token from its last logits.

    Args:
        logits (`torch.Tensor` of shape `(rows, vocab)`): the model's last-position logits.
        params (`list[SamplingParams]`), generators (`list[torch.Generator | None]`): one per row.

    Returns:
        the chosen token ids, and for rows that asked for them their log-probabilities (else `None`).
    """
    logits = logits.float()
    chosen = logits.argmax(-1).tolist()  # greedy rows keep these
    for row, (p, generator) in enumerate(zip(params, generators)):
        if p.greedy:
            continue
        probs = torch.softmax(logits[row] / p.temperature, dim=-1)
        if p.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            # keep a token while the probability of the tokens before it is below top_p, and always the first
            drop = sorted_probs.cumsum(0) - sorted_probs >= p.top_p
            drop[0] = False
            probs = probs.scatter(0, order[drop], 0.0)
        chosen[row] = int(torch.multinomial(probs.cpu(), 1, generator=generator))
    logprobs: list[TokenLogprob | None] = [None] * len(params)
    wanted = [row for row, p in enumerate(params) if p.logprobs is not None]
    if wanted:
        all_logprobs = torch.log_softmax(logits[wanted], dim=-1)
        for i, row in enumerate(wanted):
            k = params[row].logprobs
            top = all_logprobs[i].topk(k) if k else None
            logprobs[row] = TokenLogprob(
                token_id=chosen[row],
                logprob=float(all_logprobs[i, chosen[row]]),
                top=tuple(zip(top.indices.tolist(), top.values.tolist())) if top is not None else (),
            )
    return chosen, logprobs
