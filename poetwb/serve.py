"""`poetwb serve`: the same workbench in a browser, for a training box reached over SSH or a LAN.

textual-serve runs one `poetwb` process per browser tab and pipes its screen over a websocket (aiohttp). What it
lacks for a tool that starts training jobs and writes files is a door: anyone who reaches its port drives the app.
So this server wraps textual-serve's `Server` with a random access token (`secrets.token_urlsafe`) that the page
(`/?token=…`), the websocket (`/ws/<token>`) and downloads all need; a missing or wrong token is a 403. The static
assets (textual's JavaScript, fonts) are public code and need none. The page also sets the token as an HttpOnly,
SameSite=Strict cookie so the app's file downloads work without it in their URL.

It binds 127.0.0.1 by default; another interface gets a warning (plain http, anyone with the URL drives the app).
The page's own links are built from the request's Host, so the URL printed works from another machine too, and its
Google-fonts link is dropped: the fonts ship with textual-serve, and the workbench works offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import shlex
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from poetwb.core.errors import PoetError

COOKIE = "poetwb_token"
TOKEN_BYTES = 32


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: addresses only this machine can reach."""
    if host.strip().lower() in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host as it goes into a URL: the machine's name for a wildcard address, IPv6 literals in brackets."""
    bare = host.strip("[]")
    if bare in {"0.0.0.0", "::", ""}:
        return socket.gethostname()
    return f"[{bare}]" if ":" in bare else bare


def app_command() -> str:
    """The command textual-serve runs per browser tab: this Python, this poetwb; `exec` so that the shell it runs
    in becomes the app, and the process the server holds is the app itself."""
    return "exec " + shlex.join([sys.executable, "-m", "poetwb"])


def _index_template() -> str:
    """textual-serve's page without its Google-fonts link (the Roboto Mono it names ships in its static folder)."""
    import textual_serve

    text = (Path(textual_serve.__file__).parent / "templates" / "app_index.html").read_text(encoding="utf-8")
    return re.sub(r"<link[^>]*fonts\.googleapis\.com[^>]*>", "", text, flags=re.S)


def make_server(host: str, port: int, token: str, command: str | None = None) -> Any:
    """A textual-serve Server whose routes need the token. Built lazily: aiohttp is imported only here."""
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, log, to_int

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

    class TokenServer(Server):
        def __init__(self) -> None:
            super().__init__(command or app_command(), host=host, port=port, title="poetwb")
            self.token = token
            self.sessions: dict[AppService, web.WebSocketResponse] = {}
            self.processes: set[asyncio.subprocess.Process] = set()

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            """One browser tab, one app process (textual-serve's session), tracked so that stopping the server
            ends them all instead of leaving orphans."""
            websocket = web.WebSocketResponse(heartbeat=15)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await websocket.prepare(request)
            service = AppService(self.command, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                 close=websocket.close, download_manager=self.download_manager, debug=self.debug)
            self.sessions[service] = websocket
            try:
                await service.start(width, height)
                await self._process_messages(websocket, service)
            except asyncio.CancelledError:
                pass
            except Exception:  # a broken session must not take the server down
                log.exception("browser session failed")
            finally:
                with contextlib.suppress(Exception):
                    await service.stop()
                self.sessions.pop(service, None)
                await websocket.close()
                if service._process is not None:
                    await self.reap(service._process)
            return websocket

        async def reap(self, proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
            """Wait for an app that was told to quit (its worker threads may still be finishing), then end it."""
            self.processes.add(proc)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            finally:
                self.processes.discard(proc)

        async def close_sessions(self, timeout: float = 10.0) -> None:
            """Ask every app to quit, wait for them, terminate the ones still running, close the websockets."""
            sessions = list(self.sessions.items())
            for service, _ in sessions:
                with contextlib.suppress(Exception):
                    await service.send_meta({"type": "quit"})
            procs = {s._process for s, _ in sessions if s._process is not None} | self.processes
            await asyncio.gather(*(self.reap(p, timeout) for p in procs))
            for _, websocket in sessions:
                await websocket.close()

        def token_ok(self, request: web.Request) -> bool:
            supplied = (request.match_info.get("token") or request.query.get("token")
                        or request.cookies.get(COOKIE) or "")
            return secrets.compare_digest(supplied.encode(), self.token.encode())

        @web.middleware
        async def require_token(self, request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/static/") or self.token_ok(request):
                return await handler(request)
            raise web.HTTPForbidden(text="poetwb serve: this needs the access token that `poetwb serve` printed "
                                         "when it started (open the URL with ?token=… it printed)\n")

        async def _make_app(self) -> web.Application:
            app = web.Application(middlewares=[self.require_token])
            aiohttp_jinja2.setup(app, loader=jinja2.DictLoader({"app_index.html": _index_template()}))
            app.add_routes([
                web.get("/", self.handle_index, name="index"),
                web.get("/ws", self.handle_websocket, name="websocket-cookie"),
                web.get("/ws/{token}", self.handle_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", self.statics_path, show_index=False, name="static"),
            ])
            return app

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            """textual-serve's page, its URLs built from the request's own host (so a LAN browser gets a
            websocket URL it can reach), and the token kept as a cookie for downloads."""
            proto = request.headers.get("X-Forwarded-Proto", request.scheme)
            base = f"{proto}://{request.host}"
            ws_base = ("wss://" if proto == "https" else "ws://") + request.host
            context = {
                "font_size": to_int(request.query.get("fontsize", "16"), 16),
                "app_websocket_url": ws_base + str(request.app.router["websocket"].url_for(token=self.token)),
                "config": {"static": {"url": base + "/static/"}},
                "application": {"name": "poetwb"},
            }
            response = aiohttp_jinja2.render_template("app_index.html", request, context)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
            response.headers["Cache-Control"] = "no-store"
            response.headers["Referrer-Policy"] = "no-referrer"
            return response

    return TokenServer()


async def _serve(server: Any, host: str, port: int, on_ready: Callable[[int], None]) -> None:
    from aiohttp import web

    app = await server._make_app()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / not the main thread
            loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise PoetError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            "pick another --port, or --port 0 for a free one") from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        on_ready(bound)
        await stop.wait()
    finally:
        await server.close_sessions()
        await runner.cleanup()


def serve(host: str = "127.0.0.1", port: int = 8000, out: TextIO | None = None, err: TextIO | None = None,
          command: str | None = None) -> None:
    """Serve the workbench until SIGINT/SIGTERM. Prints the URL with its token once the port is bound."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not 0 <= port <= 65535:
        raise PoetError(f"--port must be in 0..65535 (0: a free port), got {port}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if not is_loopback(host):
        print(f"poetwb: warning: serving on {host}, not only this machine: anyone who can reach this port and has "
              "the URL below drives the workbench (training, files in the data dir), and plain http is not "
              "encrypted. On an untrusted network prefer the default 127.0.0.1 with an SSH tunnel: "
              f"ssh -L {port or 8000}:127.0.0.1:{port or 8000} THIS_MACHINE", file=err, flush=True)

    def ready(bound: int) -> None:
        print(f"poetwb workbench at http://{url_host(host)}:{bound}/?token={token}", file=out, flush=True)
        print("open that URL in a browser (it holds the access token); ctrl+c stops the server", file=err,
              flush=True)

    asyncio.run(_serve(make_server(host, port, token, command), host, port, ready))
