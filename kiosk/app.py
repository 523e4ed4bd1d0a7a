"""``biblioedge kiosk run``: the agent and its touch screen in one process, one asyncio loop.

The screen pulls snapshots (the gate's view, the frame it is deciding, whether the broker is
reachable) ten times a second and hands each to the voice (tones, spoken prompts); neither
calls the agent's internals or the drivers. Closing the window stops the agent; SIGTERM to
the agent closes the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from biblioedge.agent.config import AgentConfig
from biblioedge.agent.role import Extras
from biblioedge.agent.runtime import AgentRuntime

log = logging.getLogger("biblioedge.kiosk")


def _kivy_setup(fullscreen: bool, size: tuple[int, int]) -> None:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")  # our logging carries kivy's lines
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    from kivy.config import Config

    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("kivy", "exit_on_escape", "0")  # a reader's keyboard must not close the kiosk


async def run_kiosk(
    config: AgentConfig,
    *,
    fullscreen: bool = True,
    lang: str = "vi",
    size: tuple[int, int] = (1024, 600),
    extras: Sequence[Extras] = (),
) -> int:
    _kivy_setup(fullscreen, size)
    runtime = AgentRuntime(config, extras)
    stop = asyncio.Event()
    if config.role == "desk":
        app: Any = _desk_app(runtime, lang)
    elif config.role == "selfcheck":
        app = _selfcheck_app(runtime, lang)
    elif config.role == "exitgate":
        app = _exitgate_app(runtime, lang)
    else:
        app = _gate_app(runtime, lang)
    agent = asyncio.create_task(runtime.run(stop), name="kiosk:agent")
    ui = asyncio.create_task(app.async_run(async_lib="asyncio"), name="kiosk:ui")
    done, _ = await asyncio.wait({agent, ui}, return_when=asyncio.FIRST_COMPLETED)
    if ui in done and not agent.done():
        log.info("screen closed: stopping the agent")
        stop.set()
    if agent in done and not ui.done():
        app.stop()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await asyncio.gather(agent, ui, return_exceptions=True)
    return (
        agent.result()
        if agent.done() and not agent.cancelled() and agent.exception() is None
        else 1
    )


def _brand(runtime: AgentRuntime) -> dict[str, Any]:
    """The library's name and logo for the top of the screen (``[screen]``)."""
    cfg = runtime.config.screen
    return {"library_name": cfg.library_name, "logo": str(cfg.logo) if cfg.logo else None}


def _flow(runtime: AgentRuntime, role: str) -> Any:
    """The running flow of the screen's role once its component built it, else None."""
    return next((r.flow for r in runtime.roles if r.name == role), None)


def _desk_app(runtime: AgentRuntime, lang: str) -> Any:
    from biblioedge.agent.desk.flow import DeskView
    from biblioedge.kiosk.desk_screen import DeskScreen

    def tap(name: str) -> None:
        flow: Any = _flow(runtime, "desk")
        if flow is not None:
            flow.tap(name)

    return _screen_app(
        runtime,
        "desk",
        lambda: DeskScreen(lang=lang, on_action=tap, **_brand(runtime)),  # type: ignore[arg-type]
        DeskView("idle", "desk_idle"),
    )


def _selfcheck_app(runtime: AgentRuntime, lang: str) -> Any:
    from biblioedge.agent.selfcheck.station import SelfcheckView
    from biblioedge.kiosk.selfcheck_screen import SelfcheckScreen

    def station() -> Any:
        return _flow(runtime, "selfcheck")

    def tap(name: str) -> None:
        if (s := station()) is not None:
            s.tap(name)

    def pin(value: str) -> None:
        if (s := station()) is not None:
            s.pin(value)

    return _screen_app(
        runtime,
        "selfcheck",
        lambda: SelfcheckScreen(lang=lang, on_action=tap, on_pin=pin, **_brand(runtime)),  # type: ignore[arg-type]
        SelfcheckView("starting", "selfcheck_starting"),
    )


def _exitgate_app(runtime: AgentRuntime, lang: str) -> Any:
    from biblioedge.agent.exitgate.flow import ExitView
    from biblioedge.kiosk.exitgate_screen import ExitgateScreen

    return _screen_app(
        runtime,
        "exitgate",
        lambda: ExitgateScreen(lang=lang, **_brand(runtime)),  # type: ignore[arg-type]
        ExitView("starting", "exit_starting"),
    )


def _gate_app(runtime: AgentRuntime, lang: str) -> Any:
    from biblioedge.agent.gate.flow import GateView
    from biblioedge.kiosk.gate_screen import GateScreen

    return _screen_app(
        runtime,
        "gate",
        lambda: GateScreen(lang=lang, **_brand(runtime)),  # type: ignore[arg-type]
        GateView("idle", "welcome_idle"),
    )


def _screen_app(runtime: AgentRuntime, role: str, make: Any, waiting: Any) -> Any:
    """A Kivy app that shows the role's flow ten times a second: its view, the frame it is
    working on and whether the broker is reachable; ``waiting`` until the flow is built."""
    from kivy.app import App
    from kivy.clock import Clock

    class ScreenApp(App):  # type: ignore[misc]
        title = f"biblioedge {role}"

        def build(self) -> Any:
            from biblioedge.kiosk.voice import kiosk_voice

            self.screen = make()
            self.voice = kiosk_voice(role, lambda: runtime.config.sound)
            Clock.schedule_interval(self.tick, 0.1)
            log.info("%s screen started", role)
            return self.screen

        def tick(self, _dt: float) -> None:
            flow: Any = _flow(runtime, role)
            online = runtime.sync.status.connected
            if flow is None:
                self.screen.show(waiting, None, online)
                return
            current = getattr(flow, "current", None)
            frame = current.image if current is not None else None
            self.screen.show(flow.view, frame, online)
            self.voice.heard(flow.view)

        def on_stop(self) -> None:
            if hasattr(self, "voice"):
                self.voice.close()

    return ScreenApp()
