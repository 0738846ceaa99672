"""Starting and stopping the server: bind, load the engine, run uvicorn, exit 0 on SIGTERM / Ctrl-C.

The socket is bound before the model loads, so a busy port fails at once; ``port=0`` lets the OS
choose, and the bound address is printed on stdout once the server accepts requests
(``eager_core serve: listening on http://HOST:PORT (model NAME)``), which is how scripts and the
tests find it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from eager_core.errors import ConfigError

READY_PREFIX = "eager_core serve: listening on "


@dataclass
class ServeConfig:
    ckpt: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None
    num_kv_blocks: int | None = None
    max_num_seqs: int = 256
    max_queue: int | None = None
    api_key: str | None = None
    served_model_name: str | None = None
    seed: int = 0
    log_level: str = "info"
    enable_prefix_caching: bool = True


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); a ConfigError naming the flag when that fails."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0..65535 (0: any free port)")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto is
        # IPPROTO_TCP, and with Nagle on, a response written as headers + body waits ~40 ms for the
        # client's delayed ACK on every kept-alive request.
        sock = socket.socket(info[0], socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(info[4])
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def default_model_name(ckpt: str | None, ckpt_dir: Any) -> str:
    if ckpt is None:
        from eager_core.io.default_model import GGUF_NAME
        return GGUF_NAME.split(".")[0]   # "SmolLM2-135M-Instruct"
    return Path(ckpt_dir).name


def run(cfg: ServeConfig) -> int:
    """Serve until SIGTERM / Ctrl-C; 0 after a clean shutdown."""
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"the server needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install --no-build-isolation -e \".[serve]\"") from None
    for flag, value in (("--threads", cfg.threads), ("--max-queue", cfg.max_queue)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: expected an integer >= 1")
    if cfg.api_key is not None and not cfg.api_key:
        raise ConfigError("--api-key: expected a non-empty key")
    sock = bind(cfg.host, cfg.port)
    import torch

    from eager_core.engine.llm_engine import LLMEngine
    from eager_core.serve.app import create_app
    from eager_core.serve.engine_thread import EngineThread
    from eager_core.serve.prompts import ServedModel

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    engine = LLMEngine(cfg.ckpt, dtype=cfg.dtype, device=cfg.device, num_kv_blocks=cfg.num_kv_blocks,
                       max_num_seqs=cfg.max_num_seqs, seed=cfg.seed,
                       enable_prefix_caching=cfg.enable_prefix_caching)
    served = ServedModel(cfg.served_model_name or default_model_name(cfg.ckpt, engine.ckpt_dir), engine.tokenizer,
                         engine.max_model_len, engine.config.vocab_size, engine.args.max_num_seqs)
    engine_thread = EngineThread(engine, cfg.max_queue)
    app = create_app(engine_thread, served, cfg.api_key)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    banner = f"{READY_PREFIX}http://{shown}:{port} (model {served.name})"
    _server(app, engine_thread, banner, cfg.log_level).run(sockets=[sock])
    return 0


def _server(app: Any, engine_thread: Any, banner: str, log_level: str) -> Any:
    import uvicorn
    from uvicorn.server import HANDLED_SIGNALS

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Abort in-flight requests now, so open streams end at once instead of running to
            # their max_tokens while uvicorn waits for connections to close.
            engine_thread.stop()
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the signal after a graceful shutdown, so the process would die of
            # it (SIGTERM: exit -15); a server that stopped cleanly on request exits 0 instead.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(banner, flush=True)

    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5,
                            timeout_keep_alive=5)
    return Server(config)

