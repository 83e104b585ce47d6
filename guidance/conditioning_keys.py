"""Keys this pack adds to a CONDITIONING entry's dict.

Extra keys never reach the UNet; sampler-level wrappers see them next to the entry's uuid,
which is how layout guidance finds each positive prompt's token positions.
"""

PROMPT_TOKENS = "cones2_prompt_tokens"  # guidance.prompt_tokens.PromptTokens of the encoded prompt
