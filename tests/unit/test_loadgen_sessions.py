"""Multi-turn conversations (loadgen/sessions.py, workload.conversation): each turn carries the
history, conversations end after their last turn or a failed one, and the wire formats carry it."""

from __future__ import annotations

import json

from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.protocols import protocol_for
from fmbench_k8s.loadgen.sessions import Sessions


def _turn(sessions: Sessions, text: str, answer: str | None) -> Prompt:
    session, prompt = sessions.take(Prompt(text, 8, len(text.split())))
    sessions.give_back(session, prompt, answer)
    return prompt


def test_each_turn_carries_the_earlier_turns_and_answers() -> None:
    sessions = Sessions(turns=3)
    first = _turn(sessions, "q1 a b", "r1")
    second = _turn(sessions, "q2", "r2 r2")
    third = _turn(sessions, "q3", "r3")
    assert (first.turn, first.history) == (1, ())
    assert (second.turn, second.history, second.prompt_tokens) == (2, ("q1 a b", "r1"), 5)
    assert (third.turn, third.history, third.prompt_tokens) == (3, ("q1 a b", "r1", "q2", "r2 r2"), 8)
    fourth = _turn(sessions, "q4", "r4")  # the third was the last: a new conversation
    assert (fourth.turn, fourth.history) == (1, ())


def test_a_failed_turn_ends_its_conversation_and_free_sessions_are_shared_in_order() -> None:
    sessions = Sessions(turns=5)
    a, pa = sessions.take(Prompt("a1", 8, 1))
    b, pb = sessions.take(Prompt("b1", 8, 1))  # a is busy: a second conversation
    sessions.give_back(a, pa, "ra")
    sessions.give_back(b, pb, None)  # failed: b starts over
    assert _turn(sessions, "a2", "ra2").history == ("a1", "ra")
    assert _turn(sessions, "x1", "rx").history == ()


def test_the_wire_formats_carry_the_history() -> None:
    prompt = Prompt("q2", 8, 3, history=("q1", "r1"), turn=2)
    chat = json.loads(protocol_for("openai-chat", "m").encode(prompt))
    assert chat["messages"] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "r1"},
                                {"role": "user", "content": "q2"}]  # fmt: skip
    assert json.loads(protocol_for("openai-completions", "m").encode(prompt))["prompt"] == "q1\n\nr1\n\nq2"
    assert json.loads(protocol_for("tgi").encode(prompt))["inputs"] == "q1\n\nr1\n\nq2"
