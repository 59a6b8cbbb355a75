"""
Every error the orchestrator raises on purpose.

ImGenError                       root; `user_message` is safe to show a user
├── ConfigError                  a config file is missing a key or has a bad value (names file and key)
├── WorkflowError                a template cannot be filled, or a filled graph fails validation
├── ComfyError                   talking to one ComfyUI node went wrong
│   ├── NodeUnavailable          the node does not answer (connection refused, timeout, 5xx)
│   ├── PromptRejected           ComfyUI answered 400 to POST /prompt (carries node_errors)
│   └── ExecutionFailed          the node reported execution_error / execution_interrupted
├── StoreError                   the bytes from a node are not a usable image, or a path is unsafe
├── NoCapableNode                no configured node can run this family / size / model
├── InputError                   a user's request is out of range (count, flag, prompt length)
├── SessionError                 session rule broken
│   ├── SessionNotFound
│   ├── NotAllowed               not your session / not allowed to advance
│   └── InvalidState             action does not fit the session's current state
├── LimitExceeded                per-user caps on sessions or queued images
├── LlmError                     the LLM pipeline could not answer (the rules path takes over)
└── DatabaseUnavailable          the database server cannot be opened (also a ConnectionError)
"""

from __future__ import annotations

from dataclasses import dataclass


class ImGenError(Exception):
    """Root of all Vibes ImGen errors."""

    #: a short sentence for the person who caused it; never holds hosts, paths or tracebacks
    user_message: str = "Something went wrong."

    def __init__(self, message: str = "", *, user_message: str | None = None) -> None:
        super().__init__(message or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message
        elif message and type(self).user_message == ImGenError.user_message:
            self.user_message = message


class DatabaseUnavailable(ImGenError, ConnectionError):
    """The database server cannot be opened (unreachable, login refused, no such database); names it redacted."""


class ConfigError(ImGenError):
    """A configuration file is wrong; the message names the file and the key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        text = f"{file}: {key}: {problem}" if key else f"{file}: {problem}"
        super().__init__(text, user_message=text)


class WorkflowError(ImGenError):
    """A template cannot be filled or the graph is invalid for the node."""

    user_message = "The workflow for this request is not valid on the farm."


class ComfyError(ImGenError):
    """A ComfyUI node misbehaved."""

    user_message = "A GPU node had a problem."


class NodeUnavailable(ComfyError):
    """The node did not answer."""

    user_message = "A GPU node is not answering."


@dataclass(frozen=True, slots=True)
class NodeErrorDetail:
    """One validation error of one graph node, as ComfyUI reported it."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str
    input_name: str | None = None


class PromptRejected(ComfyError):
    """ComfyUI refused the graph (HTTP 400) with its own message and per-node errors."""

    user_message = "The GPU node refused the workflow."

    def __init__(self, error_type: str, message: str, node_errors: tuple[NodeErrorDetail, ...] = ()) -> None:
        self.error_type = error_type
        self.comfy_message = message
        self.node_errors = node_errors
        parts = [f"{error_type}: {message}"]
        parts += [f"node {e.node_id} ({e.class_type}): {e.message}: {e.details}" for e in node_errors]
        super().__init__("; ".join(parts))
        self.user_message = self.describe()

    def describe(self) -> str:
        """ComfyUI's own words, without hosts or paths."""
        if self.node_errors:
            e = self.node_errors[0]
            return f"ComfyUI rejected the workflow: {e.class_type}: {e.message}" + (
                f" ({e.details})" if e.details else ""
            )
        return f"ComfyUI rejected the workflow: {self.comfy_message}"


class ExecutionFailed(ComfyError):
    """The node started the prompt and then reported an error or an interruption."""

    def __init__(self, message: str, *, node_type: str | None = None, interrupted: bool = False) -> None:
        self.node_type = node_type
        self.interrupted = interrupted
        text = f"{node_type}: {message}" if node_type else message
        super().__init__(text, user_message=f"ComfyUI error: {text}")


class StoreError(ImGenError):
    """A node's output could not be stored."""

    user_message = "The GPU node sent something that is not a usable image."


class LocalStoreError(ImGenError):
    """The bot's own disk refused an image (full, read-only, I/O error): not the node's fault."""

    user_message = "The bot could not save the image to its disk."


class NoCapableNode(ImGenError):
    """No node in the farm can run the request."""

    user_message = "No GPU in the farm can run this request."


class InputError(ImGenError):
    """The user's request is malformed or out of range."""


class SessionError(ImGenError):
    """A session rule was broken."""


class SessionNotFound(SessionError):
    """No such session."""

    user_message = "That session no longer exists."


class NotAllowed(SessionError):
    """The user may not do this in this session."""

    user_message = "This is not your session."


class InvalidState(SessionError):
    """The action does not fit the session's current state."""


class LimitExceeded(ImGenError):
    """A per-user cap was hit."""


class LlmError(ImGenError):
    """The LLM pipeline failed; the rule-based path answers instead."""

    user_message = "The language model did not give a usable answer."
