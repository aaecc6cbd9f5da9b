"""A language model over HTTP as a frozen in-context model: an OpenAI-compatible completions endpoint.

The prompt is the job's template filled with the chosen context examples and the query; each label is scored by the
log-probability the server gives its tokens after the prompt (``echo`` with ``logprobs``: one request scores every
label of every query of a task), or, where the server gives none, by the label the model generates (greedy): that
label 0, the others ``GENERATED_FLOOR``, all alike when it says none. Off unless configured: a base URL, a model name, and the name of the environment variable that holds the
key (never the key itself). Every failure — the server down, too slow, an answer that is not what the protocol says
— is one ``EndpointError`` line naming the endpoint; nothing is retried behind the caller's back.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from metaopt.incontext.frozen import FrozenModel

GENERATED_FLOOR = -30.0  # the log-score of the labels a generating server did not say (finite: a loss stays finite)


class EndpointError(RuntimeError):
    """The language model server did not answer as the protocol says (one line, naming the endpoint)."""


@dataclass(frozen=True)
class PromptTemplate:
    """How a context and a query become a prompt: each example ``{input_prefix}{text}{label_prefix}{label}\\n``, then
    the query without its label; ``instruction`` first."""

    instruction: str = ""
    input_prefix: str = "Input: "
    label_prefix: str = "\nLabel:"
    separator: str = "\n\n"

    def render(self, examples: Sequence[tuple[str, str]], query: str) -> str:
        """The prompt for ``query`` after ``examples`` (``(text, label)`` pairs, in the order given)."""
        shown = [f"{self.input_prefix}{text}{self.label_prefix} {label}" for text, label in examples]
        head = f"{self.instruction}{self.separator}" if self.instruction else ""
        return head + "".join(part + self.separator for part in shown) + f"{self.input_prefix}{query}{self.label_prefix}"


@dataclass
class CompletionsClient:
    """An OpenAI-compatible ``/v1/completions`` endpoint: ``base_url`` (``http://127.0.0.1:8000/v1``), ``model``,
    the key read from the environment variable ``api_key_env`` (none when unset or empty), ``timeout`` seconds."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 30.0
    logprobs: bool | None = None  # None: found out on the first call (a server without them is asked to generate)
    requests: int = field(default=0, init=False)

    @property
    def endpoint(self) -> str:
        """The completions URL."""
        return self.base_url.rstrip("/") + "/completions"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env or "", "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, json.dumps({"model": self.model, **body}).encode(), headers)
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace").replace("\n", " ")
            raise EndpointError(f"{self.endpoint}: HTTP {exc.code} {exc.reason} ({detail})") from None
        except TimeoutError:
            raise EndpointError(f"{self.endpoint}: no answer within {self.timeout:g} s (timeout)") from None
        except http.client.HTTPException as exc:  # a connection cut mid-answer, a broken status line
            raise EndpointError(f"{self.endpoint}: malformed answer ({type(exc).__name__}: {exc})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise EndpointError(f"{self.endpoint}: no answer within {self.timeout:g} s (timeout)") from None
            raise EndpointError(f"{self.endpoint}: cannot reach the server ({reason})") from None
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise ValueError("no 'choices' list")
            return data
        except ValueError as exc:
            shown = raw[:80].decode(errors="replace").replace("\n", " ")
            raise EndpointError(f"{self.endpoint}: malformed answer ({exc}): {shown!r}") from None

    def _choices(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer's choices in prompt order, one object with a text for each prompt of ``body``."""
        choices = self._post(body)["choices"]
        if len(choices) != len(body["prompt"]) or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                                                          for c in choices):
            raise EndpointError(f"{self.endpoint}: malformed answer (expected {len(body['prompt'])} choices with text)")
        return sorted(choices, key=lambda c: c.get("index", 0))

    def check(self) -> None:
        """``EndpointError`` (one line) unless the server answers a one-token completion for ``model``."""
        self._choices({"prompt": ["Hello"], "max_tokens": 1, "temperature": 0})

    def label_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> Tensor:
        """``[prompts, labels]``: the log-probability of each label's tokens after each prompt (the label follows
        the prompt after one space); a server without log-probabilities: 0 for the label it generates, -inf else."""
        if self.logprobs is not False:
            try:
                scores = self._echo_logprobs(prompts, labels)
                self.logprobs = True
                return scores
            except _NoLogprobs:
                if self.logprobs:
                    raise EndpointError(f"{self.endpoint}: malformed answer (log-probabilities stopped)") from None
                self.logprobs = False
        return self._generated(prompts, labels)

    def _echo_logprobs(self, prompts: Sequence[str], labels: Sequence[str]) -> Tensor:
        texts = [f"{prompt} {label}" for prompt in prompts for label in labels]
        choices = self._choices({"prompt": texts, "max_tokens": 0, "echo": True, "logprobs": 0, "temperature": 0})
        scores = []
        for text, prompt, choice in zip(texts, [p for p in prompts for _ in labels], choices, strict=True):
            logprobs = choice.get("logprobs")
            if not isinstance(logprobs, dict) or not logprobs.get("token_logprobs"):
                raise _NoLogprobs
            try:
                offsets, values = logprobs["text_offset"], logprobs["token_logprobs"]
                scores.append(sum(float(v) for o, v in zip(offsets, values, strict=True) if o >= len(prompt)
                                  and v is not None))
            except (KeyError, TypeError, ValueError) as exc:
                raise EndpointError(f"{self.endpoint}: malformed answer (logprobs: {exc})") from None
        return torch.tensor(scores, dtype=torch.float64).view(len(prompts), len(labels))

    def _generated(self, prompts: Sequence[str], labels: Sequence[str]) -> Tensor:
        choices = self._choices({"prompt": list(prompts), "max_tokens": 8, "temperature": 0, "stop": ["\n"]})
        scores = torch.zeros((len(prompts), len(labels)), dtype=torch.float64)  # no label said: all alike
        for row, choice in enumerate(choices):
            said = choice["text"].strip().lower()
            for column, label in enumerate(labels):
                if said.startswith(label.lower()):
                    scores[row] = GENERATED_FLOOR
                    scores[row, column] = 0.0
                    break
        return scores


class _NoLogprobs(Exception):
    pass


class TextModel(FrozenModel):
    """A language model as a frozen classifier of a text family: inputs decoded to their texts (``decode``), way
    ``i`` of every task named ``labels[i]``, each label scored by the client.

    ``calibration`` (default ``"N/A"``): contextual calibration (Zhao et al. 2021, "Calibrate Before Use") — each
    label's score minus its score for that content-free query after the same context, one more prompt per context. A
    small model's label prior otherwise decides everything (SmolLM2-135M answers "Horror" for every title of
    ``movie-genres`` uncalibrated). ``None``: raw scores.
    """

    def __init__(self, client: CompletionsClient, decode: Callable[[Tensor], list[str]], labels: Sequence[str],
                 template: PromptTemplate | None = None, queries_per_request: int = 16,
                 calibration: str | None = "N/A") -> None:
        self.client, self.decode, self.labels = client, decode, list(labels)
        self.template = template or PromptTemplate()
        self.queries_per_request, self.calibration = queries_per_request, calibration

    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """Log-probabilities over the ways ``[tasks, Q, ways]``; the prompts of all tasks go to the server
        ``queries_per_request`` at a time (each with every label)."""
        prompts, free = [], []
        for shots_x, shots_y, queries in zip(context_x, context_y, query_x, strict=True):
            examples = list(zip(self.decode(shots_x), (self.labels[int(y)] for y in shots_y), strict=True))
            prompts += [self.template.render(examples, text) for text in self.decode(queries)]
            if self.calibration is not None:
                free.append(self.template.render(examples, self.calibration))
        distinct = list(dict.fromkeys(free))  # a context shown to many queries (one per query) is calibrated once
        scores = self._scores(prompts + distinct)
        tasks, queries, ways = *query_x.shape[:2], len(self.labels)
        out = scores[: len(prompts)].view(tasks, queries, ways)
        if free:
            where = {prompt: len(prompts) + i for i, prompt in enumerate(distinct)}
            out = out - scores[[where[prompt] for prompt in free]].view(tasks, 1, ways)
        return out.log_softmax(-1).to(torch.float32)

    def _scores(self, prompts: list[str]) -> Tensor:
        step = self.queries_per_request
        return torch.cat([self.client.label_logprobs(prompts[i: i + step], self.labels)
                          for i in range(0, len(prompts), step)])
