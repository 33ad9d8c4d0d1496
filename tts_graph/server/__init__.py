"""Graphs as OpenAI-compatible models: ``tts-graph serve`` and ``create_app``.

Any client that speaks the OpenAI chat API (the ``openai`` package, litellm, LangChain...) can
call a graph like a model: the model id is the graph's name.

    GET  /v1/models               every graph, in OpenAI's list format (id = graph name)
    GET  /v1/models/{id}          one graph
    POST /v1/chat/completions     run graph ``model`` on the conversation
    GET  /health                  {"status": "ok"} (no auth: for load balancers)

**The conversation.** The question is the content of the *last* message, which must come from
the user. When it is the only message, the graph gets it verbatim (so the answer, the usage
and the response cache are exactly those of ``graph.run(question)``). When earlier messages
exist (system or developer instructions, previous turns), they are prepended to the question as
a plain transcript, one ``Role: content`` entry per message, in order (see
``conversation_to_question``)::

    Conversation so far:
    System: Answer tersely.
    User: What is 2 + 2?
    Assistant: 4

    Question: And times 3?

Only text content is accepted (a string, or a list of ``{"type": "text"}`` parts).

**The answer.** ``choices[0].message.content`` is the final node's text (for a vote, the text
of a sample with the winning answer). ``usage`` sums prompt and completion tokens over *every*
call the graph made (cached calls included: they are calls of the graph, only not billed).
The extension field ``tts_graph`` holds the status, the extracted answer, the latency, the cost
(``cost_usd``, and ``billed_usd`` without cached calls), the usage totals and the per-node and
per-model breakdowns; a request may add ``"tts_graph": {"steps": true, "calls": true}`` (with
the ``openai`` client: ``extra_body=...``) to also get every step's candidates and every call.
``finish_reason`` is ``stop``, or ``length`` when the graph was cut short by its budget or
timeout (status ``budget`` or ``timeout``: still a 200, with the partial answer). A run that
ends in an infrastructure error (status ``error``: a backend failed after its retries)
answers 502 with an OpenAI-style error body, plus the same ``tts_graph`` field.

**Parameters.** The graph's own settings rule: ``temperature``, ``top_p``, ``max_tokens``,
``max_completion_tokens``, ``seed``, ``stop``, penalties, ``logit_bias``, ``user``,
``metadata``, ``store``, ``service_tier``, ``reasoning_effort`` and the like are accepted
and ignored — once checked as OpenAI checks them (``temperature`` in [0, 2], ``max_tokens``
≥ 1, ``seed`` a 64-bit integer, ``stop`` a string or strings...: see ``params``), so a client
with a bug gets OpenAI's 400 here too. Sampling seeds come from the graph, so the same
question gets the same answer. ``n`` must be 1. Parameters that would change what comes
back and that a graph cannot honour (``tools``, ``functions``, ``tool_choice``,
``response_format`` other than text, ``logprobs``, ``audio``, ``prediction``,
``web_search_options``...) are a 400 naming them, as are parameters OpenAI does not know.

**Streaming** (``stream: true``). Server-Sent Events in OpenAI's chunk format, ending with
``data: [DONE]``. A first chunk with the assistant role goes out at once. When the graph's
output node is a model call whose answer *is* its text — a ``solver``, ``fuser`` or
``refiner`` drawing one sample — its text is streamed token by token as the model decodes
it (the graph's earlier steps run first: the first token waits for them). Any other output
(a ``vote``, a ``judge``'s or ``ranker``'s pick, several samples, a debate) is *sent when it
is ready*, in one content chunk, as is an answer replayed from the response cache. SSE
comments (``: keep-alive``) go out while nothing else does. Then a chunk with
``finish_reason`` (and the ``tts_graph`` field), and, when the request asked for
``stream_options: {"include_usage": true}``, a usage chunk with empty ``choices``. A call
retried mid-stream does not repeat text the client already has. An infrastructure error
mid-stream is sent as ``data: {"error": {...}}`` (the ``openai`` client raises it) and the
stream ends; text already sent stays sent.

**Errors** follow OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``:

- 400: HTTP that does not parse (code ``invalid_http_request``: uvicorn's plain-text answer
  is replaced); a malformed body (not JSON — ``NaN``/``Infinity``, integers of more than
  ``MAX_INT_DIGITS`` digits and lone UTF-16 surrogates included —, nested deeper than
  ``MAX_JSON_DEPTH``, or a client that left before its whole body arrived); an unsupported
  or out-of-range parameter;
- 401 missing or wrong API key; 403 a web page's request to a keyless server (see Auth);
- 404 unknown graph or route; 405 known route, other method (with an ``Allow`` header;
  HEAD works wherever GET does; a trailing slash is the same route);
- 408 a body not all arrived ``body_timeout_s`` (``BODY_TIMEOUT_S``) after its headers. A
  connection that has not sent a whole request head ``HEAD_TIMEOUT_S`` after it opened or
  was last answered is closed (there is no request yet to answer);
- 413 a body larger than ``max_body_bytes``;
- 415 a ``Content-Type`` other than JSON (none at all is taken as JSON; a form or text type
  is what a web page may send cross-site unasked) or a compressed body (``Content-Encoding``);
- 502 an infrastructure error of the graph run.

Error messages quote a client's names clipped to 100 characters. A bad request never reaches
the log as a traceback.

**Auth.** With an API key, every ``/v1`` request needs ``Authorization: Bearer <key>`` (the
scheme in any case, as RFC 7235 says). The key is compared in constant time and never logged
or echoed. With a key, browsers may call the API from any web page (CORS: preflights are
answered, answers carry ``Access-Control-Allow-Origin: *``), as they may call OpenAI's; the
key guards it. Without a key there is no CORS, and a chat completion that a browser sends
from another origin (its ``Origin`` header names another host than ``Host``) is a 403
``cross_origin_forbidden``: no web page can read answers from, or spend tokens on, a keyless
server on the machine (clients that are no browser send no ``Origin``). DNS rebinding (a
page whose own host name resolves to this server) is not guarded against: give a server
that browsers can reach a key.

**Per-client limits.** Every request, whoever sends it: a body of at most ``max_body_bytes``
(``--max-body-mb``, default 4 MB; the ``Content-Length`` is checked before anything is read,
a chunked body is counted as it arrives and cut off at the limit), JSON nested at most
``MAX_JSON_DEPTH`` levels, and a request head (request line and headers) of at most 256 KB
(``HEAD_MAX_BYTES``: a longer one gets a 400, read to its end so that the client gets it).
There is *no* per-client rate limit or quota: all clients share ``max_concurrency`` graph
runs and wait in one queue. Put the server behind a proxy that limits rates per client when
it faces untrusted callers.

**Concurrency.** At most ``max_concurrency`` graph runs at once per server; further requests
*wait* in arrival order (no 429), and their wait counts towards the client's own timeout.
A client that disconnects (while waiting or running, streaming or not) cancels its graph run:
the run's pending backend calls are cancelled, not left to finish unseen.

The package, one module per concern: ``api_error`` (OpenAI-style error bodies), ``protocol``
(the request: accepted fields, limits, validation), ``params`` (the ignored fields' types and
ranges), ``conversation`` (messages → the question),
``graphs`` (which graph serves which model name), ``runs`` (concurrency and cancellation of
graph runs), ``responses`` (the answer's usage, extension field and finish reason), ``sse``
(streaming), ``app`` (routes and auth) and ``serving`` (socket and uvicorn, with a deadline
for each request head).
"""

from __future__ import annotations

from .api_error import APIError
from .app import create_app
from .conversation import conversation_to_question
from .graphs import graph_files, load_graphs
from .protocol import (
    BODY_TIMEOUT_S,
    IGNORED_PARAMS,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    UNSUPPORTED_PARAMS,
    ChatRequest,
    parse_chat_request,
    read_body,
)
from .responses import extension, usage_block
from .runs import ServerState
from .serving import HEAD_TIMEOUT_S, bind_socket, serve, uvicorn_config
from .sse import KEEPALIVE_S

__all__ = [
    "BODY_TIMEOUT_S",
    "HEAD_TIMEOUT_S",
    "IGNORED_PARAMS",
    "KEEPALIVE_S",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "UNSUPPORTED_PARAMS",
    "APIError",
    "ChatRequest",
    "ServerState",
    "bind_socket",
    "conversation_to_question",
    "create_app",
    "extension",
    "graph_files",
    "load_graphs",
    "parse_chat_request",
    "read_body",
    "serve",
    "usage_block",
    "uvicorn_config",
]
