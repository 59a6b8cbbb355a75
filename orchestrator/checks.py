"""
The checks of what a person asks for, one definition each: the prompt, the negative prompt and the image count.

Every front end and the session engine use these (the bot, `vibes generate`, starting and re-prompting
sessions), so a limit reads the same wherever it is hit.
"""

from __future__ import annotations

from orchestrator.config import LimitSettings
from orchestrator.errors import InputError


def _no_nul(text: str, what: str) -> None:
    # PostgreSQL's text cannot hold NUL (SQLite can): refused at the door, the two backends keep the same prompt.
    # No one types one; it comes from a pasted binary or a hostile client.
    if "\x00" in text:
        raise InputError(f"NUL in {what}", user_message=f"The {what} contains a NUL character (\\0); remove it.")


def check_prompt(prompt: str, limits: LimitSettings, *, allow_empty: bool = False) -> str:
    """The prompt as given; InputError when it is empty (unless allowed), over `max_prompt_chars`, or has a NUL."""
    _no_nul(prompt, "prompt")
    if not prompt.strip() and not allow_empty:
        raise InputError("empty prompt", user_message="The prompt is empty.")
    if len(prompt) > limits.max_prompt_chars:
        raise InputError(
            "prompt too long",
            user_message=f"The prompt is over {limits.max_prompt_chars} characters ({len(prompt)}); "
            f"the limit is {limits.max_prompt_chars}.",
        )
    return prompt


def check_negative(negative: str, limits: LimitSettings) -> str:
    """The negative prompt as given; InputError when it is over `max_negative_chars` or has a NUL."""
    _no_nul(negative, "negative prompt")
    if len(negative) > limits.max_negative_chars:
        raise InputError(
            "negative prompt too long",
            user_message=f"The negative prompt is {len(negative)} characters; "
            f"the limit is {limits.max_negative_chars}.",
        )
    return negative


def check_count(count: int, limits: LimitSettings) -> int:
    """The number of images; InputError unless it is between 1 and `max_count`."""
    if not 1 <= count <= limits.max_count:
        raise InputError("count", user_message=f"Count must be between 1 and {limits.max_count}.")
    return count
