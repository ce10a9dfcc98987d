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
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from cogs.common import describe_error, tell
from imaginebot.catalog import Catalog
from imaginebot.config import Settings, load_settings
from imaginebot.delivery import DeliveryPolicy
from imaginebot.discord_url import DEFAULT_DISCORD_URL, use_discord_url
from imaginebot.engine.planning import Planner
from imaginebot.errors import ConfigError, ImagineError, ModelNotFound
from imaginebot.executor import Executor
from imaginebot.jobs import JobService
from imaginebot.store import Store
from imaginebot.web import WebContext, create_app, serve_web
from imaginebot.web.links import GalleryLinks, LinkSigner, load_or_create_secret, public_base_url

log = logging.getLogger("imaginebot")

# torch's idle OpenMP threads spin by default, taking the CPU from the event loop on a small machine.
# Read when torch is first imported, which is after this line (load_engine imports it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

COGS = ("cogs.imagine", "cogs.moderation", "cogs.settings", "cogs.gallery", "cogs.prefer")


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
        self.gallery_links: GalleryLinks | None = None  # set once the web side serves (None: it is off)

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


def job_service(settings: Settings, store: Store, executor: Executor, catalog: Catalog) -> JobService:
    return JobService(
        store,
        executor,
        catalog=catalog,
        upscale_max_side=settings.upscale_max_side,
        preview_min_interval=settings.preview_min_interval,
        max_jobs=settings.max_permutations,
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
    parser.add_argument(
        "--model", help="a .safetensors checkpoint, a diffusers folder or a cached hub id (IMAGINEBOT_MODEL)"
    )
    return parser.parse_args(argv)


async def local_executor(settings: Settings) -> tuple[Executor, Catalog]:
    """One batching worker per device of this machine, each with the models its device holds."""
    # torch is imported only once the settings are good
    from imaginebot.engine import DiffusionEngine
    from imaginebot.engine.models import load_models

    devices, entries = settings.worker_devices, settings.model_entries
    log.info("loading %s on %s", ", ".join(e.name for e in entries), ", ".join(devices))
    sets = [
        await asyncio.to_thread(
            load_models,
            entries,
            device=device,
            dtype=settings.dtype,
            upscale_max_side=settings.upscale_max_side,
            lora_dir=settings.lora_dir,
            safety_checker=settings.safety_checker,
        )
        for device in devices
    ]
    planners: dict[str, Planner] = {}  # each model some device holds, from the first that holds it
    for models in sets:
        for name in models.names:
            engine = models.engine(name)
            assert isinstance(engine, DiffusionEngine)
            planners.setdefault(name, engine.planner)
    for entry in entries:
        if entry.name not in planners:
            log.error("model %s fits on no device here: prompts can't use it", entry.name)
    executor = Executor(
        sets,
        max_queued_per_user=settings.max_queued_per_user,
        preview_every=settings.preview_every,
        capacity=settings.batch_capacity,
    )
    return executor, settings.catalog(planners)


async def ray_executor(settings: Settings, stack: contextlib.AsyncExitStack) -> tuple[Executor, Catalog]:
    """Workers on a Ray cluster: the bot plans from the models' configs and loads no weights itself."""
    from imaginebot.engine.models import ModelPlanner

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
    planners = {
        entry.name: await asyncio.to_thread(planner_for, entry.path, settings.upscale_max_side)
        for entry in settings.model_entries
    }
    executor = Executor(
        planner=ModelPlanner(planners),
        max_queued_per_user=settings.max_queued_per_user,
        preview_every=settings.preview_every,
    )
    return executor, settings.catalog(planners)


def planner_for(model: str, upscale_max_side: int) -> Planner:
    """A model's planner from its configs alone (no weights)."""
    from imaginebot.engine.loading import find_model_folder
    from imaginebot.engine.single_file import is_single_file

    if is_single_file(model):  # a .safetensors / .ckpt: the shipped configs of its kind, from its header
        return Planner.from_checkpoint(model, upscale_max_side=upscale_max_side)
    folder = find_model_folder(model)
    return Planner.from_folder(folder, upscale_max_side=upscale_max_side)


def place_ray_workers(settings: Settings, executor: Executor, stack: contextlib.AsyncExitStack) -> None:
    """One worker per GPU of the cluster (or IMAGINEBOT_RAY_WORKERS), more as GPU nodes join."""
    from imaginebot.ray_workers import RayWorkers, WorkerConfig

    config = WorkerConfig(
        models=settings.model_entries,
        lora_dir=str(settings.lora_dir) if settings.lora_dir else None,
        dtype=settings.dtype,
        upscale_max_side=settings.upscale_max_side,
        capacity=settings.batch_capacity,
        preview_every=settings.preview_every,
        safety_checker=str(settings.safety_checker) if settings.safety_checker else None,
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


def discord_connected(bot: commands.Bot) -> bool:
    """For /healthz: logged in and its gateway connection open now (discord.py stays "ready" while it
    reconnects after a drop)."""
    return bot.is_ready() and not bot.is_closed() and bot.ws is not None and bot.ws.open


def web_context(
    jobs: JobService, data_dir: Path, bot: commands.Bot, links: LinkSigner | None = None
) -> WebContext:
    return WebContext(jobs, data_dir, discord_connected=lambda: discord_connected(bot), links=links)


@contextlib.asynccontextmanager
async def web_side(
    settings: Settings, jobs: JobService, data_dir: Path, bot: ImagineBot
) -> AsyncIterator[None]:
    """The gallery, /healthz and /metrics on IMAGINEBOT_WEB_HOST:IMAGINEBOT_WEB_PORT (none when off); /gallery
    hands out links to it from then on."""
    if settings.web_port is None:
        yield
        return
    signer = LinkSigner(await asyncio.to_thread(load_or_create_secret, data_dir))
    context = web_context(jobs, data_dir, bot, signer)
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(
                serve_web(create_app(context), settings.web_host, settings.web_port)
            )
        except OSError as error:
            where = f"{settings.web_host}:{settings.web_port}"
            raise ConfigError(
                f"The web side can't listen on {where} ({error.strerror or error}): set "
                "IMAGINEBOT_WEB_PORT to a free port, 0 for any, or off."
            ) from None
        log.info("the web side (gallery, /healthz, /metrics) is at %s", url)
        port = int(url.rsplit(":", 1)[1])
        base = settings.web_url or public_base_url(settings.web_host, port)
        bot.gallery_links = GalleryLinks(signer, base, timedelta(hours=settings.gallery_link_hours))
        if base != url:
            log.info("/gallery links point to %s", base)
        try:
            yield
        finally:
            bot.gallery_links = None


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
            executor, catalog = await ray_executor(settings, stack)
        else:
            executor, catalog = await local_executor(settings)
        await executor.start()
        stack.push_async_callback(executor.stop)
        if settings.ray_address:
            place_ray_workers(settings, executor, stack)
        # Closed before the executor stops: what it was following stays in the store for the next start.
        jobs = await stack.enter_async_context(job_service(settings, store, executor, catalog))
        async with ImagineBot(settings, store, jobs) as bot, web_side(settings, jobs, data_dir, bot):
            assert token is not None
            await until_it_answers(
                f"Logging in to Discord at {url or DEFAULT_DISCORD_URL}", login(bot, token)
            )
            if mock:
                gallery = " Type /gallery there for the class gallery." if bot.gallery_links else ""
                print(
                    f"\nThe local Discord is ready: open {server.page_url} in a browser.{gallery}\n",
                    flush=True,
                )
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
