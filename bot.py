"""imaginebot's launcher.

    python bot.py --mock                  the local Discord + the embedded model; prints the page's URL
    python bot.py --discord               real Discord with the token and model from .env
    python bot.py --discord-url URL       any Discord-compatible server

Reads the settings, builds the store, the engine, the executor and the job service, and runs the Bot with
them. Logging is set up here and nowhere else.

At start, Discord unreachable or answering 5xx gets one line per try and another try, with backoff and
jitter, until it answers; a token Discord refuses (401) gets one line and exit status 1. The token is
never printed or logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from cogs.common import describe_error, tell
from imaginebot.config import Settings, load_settings
from imaginebot.delivery import DeliveryPolicy
from imaginebot.discord_url import DEFAULT_DISCORD_URL, use_discord_url
from imaginebot.errors import ConfigError, ImagineError, ModelNotFound
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.store import Store

log = logging.getLogger("imaginebot")

# torch's idle OpenMP threads spin by default, taking the CPU from the event loop on a small machine.
# Read when torch is first imported, which is after this line (load_engine imports it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COGS = ("cogs.imagine", "cogs.moderation", "cogs.settings")


class ImagineBot(commands.Bot):
    """The Bot with what the cogs need: the settings, the store (quotas, settings, moderation) and the job
    service (everything about a job)."""

    def __init__(self, settings: Settings, store: Store, jobs: JobService, **options: Any) -> None:
        # The bot never joins voice: don't warn that voice libraries are missing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # Slash commands and buttons need no privileged intent (no message content, no member list).
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, **options)
        self.settings = settings
        self.store = store
        self.jobs = jobs

    async def setup_hook(self) -> None:
        self.tree.error(self.on_app_command_error)
        for name in COGS:
            await self.load_extension(name)
        guild = discord.Object(self.settings.guild_id) if self.settings.guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        await until_it_answers("Syncing the slash commands", lambda: self.tree.sync(guild=guild))

    async def on_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, ImagineError):
            message = str(original)
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You can't use this command here."
        else:
            log.exception(
                "command %s failed", interaction.command and interaction.command.name, exc_info=error
            )
            message = "Something went wrong; the error is in the bot's log."
        try:
            await tell(interaction, message)
        except discord.HTTPException:
            log.warning("could not tell the user about an error", exc_info=True)


def _transient(error: BaseException) -> bool:
    """Worth another try at start: Discord unreachable, timing out, rate limiting or answering 5xx."""
    if isinstance(error, discord.HTTPException):
        return error.status == 429 or error.status >= 500
    return isinstance(error, aiohttp.ClientError | OSError | TimeoutError)


async def until_it_answers(what: str, call: Callable[[], Awaitable[Any]], *, max_wait: float = 60.0) -> Any:
    """``call()``, tried again with exponential backoff and jitter (at most ``max_wait`` s apart) for as long
    as Discord (or the Ray cluster) is unreachable or Discord answers 5xx; one line in the log per failed
    try, no traceback."""

    def say(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed: %s. Trying again in %.1f s.", what, describe_error(error) if error else "?", wait
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(_transient),
        wait=wait_random_exponential(multiplier=1, max=max_wait),
        before_sleep=say,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")


def login(bot: commands.Bot, token: str) -> Callable[[], Awaitable[None]]:
    async def attempt() -> None:
        try:
            await bot.login(token)
        except BaseException:
            # Each try opens its own HTTP session over a new connector: close this one, and let the next
            # try make a connector again (closing the session closed the connector it owned).
            await bot.http.close()
            bot.http.connector = discord.utils.MISSING
            raise

    return attempt


def job_service(settings: Settings, store: Store, executor: Executor, native_size: int) -> JobService:
    return JobService(
        store,
        executor,
        defaults=settings.request_defaults,
        native_size=native_size,
        upscale_max_side=settings.upscale_max_side,
        preview_min_interval=settings.preview_min_interval,
        delivery=DeliveryPolicy(
            give_up_after=timedelta(hours=settings.delivery_give_up_hours),
            retry_max_s=settings.delivery_retry_max,
        ),
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="imaginebot: Midjourney's /imagine on your own GPU.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--mock", action="store_true", help="run on the local Discord (no token, no network)")
    where.add_argument(
        "--discord", action="store_true", help="run on Discord with the token from .env (default)"
    )
    where.add_argument("--discord-url", metavar="URL", help="run on any Discord-compatible server at URL")
    parser.add_argument(
        "--port", type=int, help="the local Discord's port with --mock (IMAGINEBOT_MOCK_PORT)"
    )
    parser.add_argument("--model", help="a diffusers folder or cached hub id (IMAGINEBOT_MODEL)")
    return parser.parse_args(argv)


async def local_executor(settings: Settings) -> tuple[Executor, int]:
    """One engine and one batching worker per device of this machine."""
    from imaginebot.engine import load_engine  # torch is imported only once the settings are good

    devices = settings.worker_devices
    log.info("loading the model %s on %s", settings.model_path, ", ".join(devices))
    engines = [
        await asyncio.to_thread(
            load_engine,
            settings.model_path,
            device=device,
            dtype=settings.dtype,
            upscale_max_side=settings.upscale_max_side,
        )
        for device in devices
    ]
    executor = Executor(
        engines,
        max_queued_per_user=settings.max_queued_per_user,
        preview_every=settings.preview_every,
        capacity=settings.batch_capacity,
    )
    return executor, engines[0].native_size


async def ray_executor(settings: Settings, stack: contextlib.AsyncExitStack) -> tuple[Executor, int]:
    """Workers on a Ray cluster: the bot plans from the model's configs and loads no weights itself."""
    from imaginebot.engine.loading import find_model_folder
    from imaginebot.engine.planning import Planner

    try:
        import ray

        from imaginebot.ray_workers import connect, probe
    except ImportError:
        raise ConfigError(
            "IMAGINEBOT_RAY_ADDRESS is set but Ray is not installed here; scripts/run.sh installs it "
            "(the [ray] extra: .venv/bin/pip install -e '.[ray]')."
        ) from None

    address = settings.ray_address
    assert address is not None
    await until_it_answers(
        f"Connecting to the Ray cluster at {address}", lambda: asyncio.to_thread(probe, address)
    )
    connect(address)  # a second or two, before anything else runs
    stack.callback(ray.shutdown)
    folder = await asyncio.to_thread(find_model_folder, settings.model_path)
    planner = Planner.from_folder(folder, upscale_max_side=settings.upscale_max_side)
    executor = Executor(
        planner=planner,
        max_queued_per_user=settings.max_queued_per_user,
        preview_every=settings.preview_every,
    )
    return executor, planner.native_size


def place_ray_workers(settings: Settings, executor: Executor, stack: contextlib.AsyncExitStack) -> None:
    """One worker per GPU of the cluster (or IMAGINEBOT_RAY_WORKERS), more as GPU nodes join."""
    from imaginebot.ray_workers import RayWorkers, WorkerConfig

    config = WorkerConfig(
        model=settings.model or "",
        dtype=settings.dtype,
        upscale_max_side=settings.upscale_max_side,
        capacity=settings.batch_capacity,
        preview_every=settings.preview_every,
    )
    workers = RayWorkers(
        config,
        executor.add_worker,
        workers=settings.ray_workers,
        cpus_per_worker=settings.ray_cpus_per_worker,
    )
    workers.top_up()
    watcher = asyncio.create_task(workers.watch())
    stack.callback(watcher.cancel)


async def run(settings: Settings, *, mock: bool) -> None:

    async with contextlib.AsyncExitStack() as stack:
        token = settings.discord_token.get_secret_value() if settings.discord_token else None
        url = settings.discord_url
        data_dir = settings.data_dir
        if mock:
            from imaginebot.mockdiscord import run_mock_discord

            server = await stack.enter_async_context(
                run_mock_discord(host=settings.mock_host, port=settings.mock_port, rate_limits=True)
            )
            url, token = server.url, server.bot_token
            data_dir = data_dir / "mock"  # the local Discord forgets its messages; keep its jobs apart
        elif token is None:
            raise ConfigError(
                "IMAGINEBOT_DISCORD_TOKEN is not set: put the bot's token in .env (see the README), "
                "or run on the local Discord with --mock."
            )
        if url:
            use_discord_url(url)
        store = await Store.open(data_dir, default_daily_images=settings.quota_per_day)
        stack.push_async_callback(store.close)
        if settings.ray_address:
            executor, native_size = await ray_executor(settings, stack)
        else:
            executor, native_size = await local_executor(settings)
        await executor.start()
        stack.push_async_callback(executor.stop)
        if settings.ray_address:
            place_ray_workers(settings, executor, stack)
        # Closed before the executor stops: what it was following stays in the store for the next start.
        jobs = await stack.enter_async_context(job_service(settings, store, executor, native_size))
        async with ImagineBot(settings, store, jobs) as bot:
            assert token is not None
            await until_it_answers(
                f"Logging in to Discord at {url or DEFAULT_DISCORD_URL}", login(bot, token)
            )
            if mock:
                print(f"\nThe local Discord is ready: open {server.page_url} in a browser.\n", flush=True)
            await bot.connect()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["mock_port"] = args.port
    if args.model:
        overrides["model"] = args.model
    if args.discord_url:
        overrides["discord_url"] = args.discord_url
    try:
        settings = load_settings(**overrides)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    discord.utils.setup_logging(level=getattr(logging, settings.log_level))
    try:
        asyncio.run(run(settings, mock=args.mock))
    except (ConfigError, ModelNotFound) as error:
        print(error, file=sys.stderr)
        return 2
    except discord.LoginFailure:
        log.error(
            "Discord refused the bot token (401 Unauthorized): set IMAGINEBOT_DISCORD_TOKEN in .env to the"
            " token from the developer portal (Bot → Reset Token)."
        )
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
