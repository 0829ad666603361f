"""Multi-turn conversations (workload.conversation): a worker's sessions, kept across its stages.

Each request takes a free session, is sent as that conversation's next user turn with every
earlier turn and answer, and hands the session back with its own turn added once it is answered.
A conversation ends after its last turn, or when a turn fails (the history the server would have
seen is then unknown), and a new one starts. Sessions outlive stages: a stage's requests continue
the conversations the last stage left, so a stage does not restart every history from turn 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from fmbench_k8s.loadgen.prompts import Prompt


@dataclass
class Session:
    history: list[str] = field(default_factory=list)  # user, assistant, user, assistant, ...

    @property
    def turn(self) -> int:
        """The 1-based number of the conversation's next turn."""
        return len(self.history) // 2 + 1


class Sessions:
    def __init__(self, turns: int) -> None:
        self.turns = turns
        self._free: deque[Session] = deque()

    def take(self, prompt: Prompt) -> tuple[Session, Prompt]:
        """A free session (the longest free first) and ``prompt`` as its next turn."""
        session = self._free.popleft() if self._free else Session()
        if session.history:
            words = sum(len(t.split()) for t in session.history)
            known = prompt.prompt_tokens + words if prompt.prompt_tokens is not None else None
            prompt = replace(prompt, history=tuple(session.history), prompt_tokens=known)
        return session, replace(prompt, turn=session.turn)

    def give_back(self, session: Session, prompt: Prompt, answer: str | None) -> None:
        """``answer`` None: the turn failed and the conversation ends."""
        if answer is None or session.turn >= self.turns:
            session.history.clear()
        else:
            session.history += [prompt.text, answer]
        self._free.append(session)
