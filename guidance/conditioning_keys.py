"""Keys this pack adds to a CONDITIONING entry's dict, and how their values are read.

Extra keys never reach the UNet; sampler-level wrappers see them next to the entry's uuid,
which is how layout guidance finds each positive prompt's token positions. Values are plain
strings, so core nodes that copy or save conditioning keep them (SaveConditioning in newer
hosts refuses option values that are not tensors, numbers or strings).
"""

from __future__ import annotations

from .prompt_tokens import PromptTokens

PROMPT_TOKENS = "cones2_prompt_tokens"  # PromptTokens.to_json() of the encoded prompt


def prompt_tokens(entry: dict) -> PromptTokens | None:
    """The token map recorded in a conditioning entry, or None if it has none.

    Raises ValueError if the recorded value is not a token map.
    """
    value = entry.get(PROMPT_TOKENS)
    return None if value is None else PromptTokens.from_json(value)
