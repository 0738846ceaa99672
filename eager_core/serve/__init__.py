"""An OpenAI-compatible HTTP server over ``LLMEngine`` (docs/serving.md). Needs the ``serve`` extra.

    protocol.py / prompts.py   request bodies -> prompt token ids and SamplingParams / EAGer
    engine_thread.py           the one thread that steps the engine; per-request queues
    stream.py                  waiting for results; server-sent events from cumulative outputs
    responses.py               OpenAI's response, chunk, usage and logprobs shapes (+ the eager extension)
    errors.py                  OpenAI-shaped errors and the handlers that guarantee them
    app.py                     the FastAPI routes
    server.py                  binding, uvicorn, clean exit on SIGTERM / Ctrl-C

Nothing here is imported by ``eager_core`` itself, so the library works without FastAPI.
"""
