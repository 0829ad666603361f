"""Locust users, one abstract class per endpoint API, each owning its client (the shape of Locust's
``contrib/oai.py``). A plain locustfile can use them directly::

    from fmbench_k8s.loadgen.users import OpenAIChatUser

    class Chat(OpenAIChatUser):
        host = "http://localhost:8000/v1"
        model = "meta-llama/Llama-3.1-8B-Instruct"

The fmbench master/worker commands do not spawn Locust users (they drive greenlets on a
schedule of their own, see worker.py); they use the same clients and fire the same request
events, so Locust's statistics and web UI show both the same way.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from locust import User, task

from fmbench_k8s.loadgen.clients import Client, make_client
from fmbench_k8s.loadgen.prompts import Prompt
from fmbench_k8s.loadgen.request import RequestState
from fmbench_k8s.loadgen.target import Target


def fire_request_event(environment: Any, api: str, name: str, st: RequestState) -> None:
    """Locust's ``request`` event for one finished request (response time = send to end, in ms)."""
    end = st.t_end or time.time()
    start = st.t_sent or st.t_scheduled
    environment.events.request.fire(
        request_type=api,
        name=name,
        response_time=(end - start) * 1000.0,
        response_length=st.output_tokens,
        exception=None if st.outcome == "ok" else RuntimeError(st.error or st.outcome or "failed"),
        context={},
    )


class LlmUser(User):
    """Sends one streamed generation per task; subclasses choose the API."""

    abstract = True
    api: ClassVar[str] = ""
    model: ClassVar[str | None] = None
    endpoint_name: ClassVar[str | None] = None  # sagemaker
    model_id: ClassVar[str | None] = None  # bedrock
    region: ClassVar[str | None] = None
    payload: ClassVar[str] = "tgi"
    prompt_words: ClassVar[int] = 128
    max_tokens: ClassVar[int] = 64

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        target = Target(self.api, self.host, self.model, self.endpoint_name, self.model_id, self.region, self.payload)
        self.client: Client = make_client(target, pool_size=4)
        self._n = 0

    def prompt(self) -> Prompt:
        return Prompt(" ".join(["hello"] * self.prompt_words), self.max_tokens, self.prompt_words)

    @task
    def generate(self) -> None:
        self._n += 1
        prompt = self.prompt()
        st = RequestState(f"{id(self):x}-{self._n}", time.time(), prompt.prompt_tokens)
        self.client.generate(prompt, st)
        fire_request_event(self.environment, self.api, self.api, st)

    def on_stop(self) -> None:
        self.client.close()


class OpenAIChatUser(LlmUser):
    abstract = True
    api = "openai-chat"


class OpenAICompletionsUser(LlmUser):
    abstract = True
    api = "openai-completions"


class TgiUser(LlmUser):
    abstract = True
    api = "tgi"


class TritonUser(LlmUser):
    abstract = True
    api = "triton"


class SageMakerUser(LlmUser):
    abstract = True
    api = "sagemaker"


class BedrockUser(LlmUser):
    abstract = True
    api = "bedrock"


USERS: dict[str, type[LlmUser]] = {
    u.api: u for u in (OpenAIChatUser, OpenAICompletionsUser, TgiUser, TritonUser, SageMakerUser, BedrockUser)
}


def user_class_for(api: str, host: str | None) -> type[LlmUser]:
    """A concrete (non-abstract) user class for Locust's Environment of a master or worker."""
    base = USERS[api]
    return type(f"{base.__name__}Run", (base,), {"abstract": False, "host": host or ""})
