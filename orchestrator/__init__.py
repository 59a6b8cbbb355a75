"""Vibes ImGen's engine: farm registry, scheduler, ComfyUI client, sessions, LLM pipeline. Knows nothing of Discord."""
