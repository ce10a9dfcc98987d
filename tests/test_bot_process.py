"""bot.py as an operator runs it, in its own process, against the local Discord: start-up when Discord is
unreachable, answering 5xx or refusing the token, and a bot killed between a job's end and its delivery."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest
from botprocess import TOKEN, BotProcess, commands_synced, free_port, grid_for, wait_for_job
from prometheus_client.parser import text_string_to_metric_families
from safetycheckers import save_checker

from imaginebot.mockdiscord import run_mock_discord

pytestmark = pytest.mark.slow


async def test_start_up_waits_out_an_unreachable_or_failing_discord(
    tmp_path: Path, bots: list[BotProcess]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bot = await BotProcess(url, tmp_path / "data").start()
    bots.append(bot)
    unreachable = await bot.wait_for_line(rf"Logging in to Discord at {url} failed: .*Trying again", count=2)
    assert "Cannot connect" in unreachable[0]
    async with run_mock_discord(port=port, bot_token=TOKEN) as server:
        server.outage(600, 503)
        await bot.wait_for_line(r"failed: Discord answered 503.*Trying again")
        server.clear_faults()
        await commands_synced(bot, server, timeout=120)
        assert server.requests(path_contains="/users/@me", status=200)
        await bot.stop()
    assert "Traceback" not in bot.output and "Unclosed" not in bot.output
    assert TOKEN not in bot.output


async def test_a_refused_token_is_one_line_and_a_failed_exit(tmp_path: Path, bots: list[BotProcess]) -> None:
    async with run_mock_discord(bot_token=TOKEN) as server:
        wrong = "not-the-token-Secret-7731"
        bot = await BotProcess(server.url, tmp_path / "data", token=wrong).start()
        bots.append(bot)
        assert await bot.wait() == 1
    refused = [line for line in bot.lines if "refused the bot token" in line]
    assert len(refused) == 1 and "IMAGINEBOT_DISCORD_TOKEN" in refused[0]
    assert wrong not in bot.output and "Traceback" not in bot.output


async def test_a_bot_killed_between_done_and_delivered_delivers_at_its_next_start(
    tmp_path: Path, bots: list[BotProcess]
) -> None:
    data_dir = tmp_path / "data"
    async with run_mock_discord(bot_token=TOKEN) as server:
        first = await BotProcess(server.url, data_dir).start()
        bots.append(first)
        await commands_synced(first, server)
        interaction = await server.send_command(
            "imagine", {"prompt": "a red circle on a blue background --steps 30"}, user=server.alice
        )
        replied = server.wait_for_response(interaction, lambda m: bool(m.custom_ids), timeout=65)
        await first.expect("the first reply, with its Cancel button", replied, 60)
        server.outage(600, 503)  # Discord is down: the grid can't be delivered
        row = await wait_for_job(first, "done", lambda r: r["status"] == "done")
        assert row["delivery"] == "pending"
        await first.stop(signal.SIGKILL)  # no goodbye: the store is all that is left
        server.clear_faults()

        second = await BotProcess(server.url, data_dir).start()
        bots.append(second)
        grid = await grid_for(second, server, interaction)
        assert grid.attachments and grid.attachments[0].data[:4] == b"\x89PNG"
        row = await wait_for_job(second, "delivered", lambda r: r["delivery"] == "delivered")
        assert row["status"] == "done" and row["charged"] == 4  # charged once
        # The new process has no interaction object: the grid went in with the bot token.
        assert [r for r in server.requests(path_contains="/channels/", status=200) if r.method == "PATCH"]
        await second.stop()
    assert "delivering what the last run could not" in second.output


async def test_two_devices_two_workers(tmp_path: Path, bots: list[BotProcess]) -> None:
    """IMAGINEBOT_DEVICES: one engine and one worker per device (two CPU "devices" here), each with the
    safety checker of IMAGINEBOT_SAFETY_CHECKER; the operator's /healthz and /metrics show both."""
    checker = save_checker(tmp_path / "checker", flags=True)
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(
            server.url,
            tmp_path / "data",
            IMAGINEBOT_DEVICES="cpu,cpu",
            IMAGINEBOT_BATCH_CAPACITY="1",
            IMAGINEBOT_SAFETY_CHECKER=str(checker),
        ).start()
        bots.append(bot)
        await commands_synced(bot, server)
        interactions = [
            await server.send_command("imagine", {"prompt": f"a red circle --steps 40 --seed {i}"}, user=user)
            for i, user in enumerate((server.alice, server.bob))
        ]
        for interaction in interactions:
            grid = await grid_for(bot, server, interaction, timeout=120)
            assert grid.attachments[0].filename.startswith("SPOILER_")  # flagged: posted blurred, hidden
        [line] = await bot.wait_for_line(r"the web side \(gallery, /healthz, /metrics\) is at http://")
        web = line.rsplit(" ", 1)[-1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{web}/healthz") as response:
                health = await response.json()
                assert response.status == 200, health
            async with session.get(f"{web}/metrics") as response:
                metrics = await response.text()
        await bot.stop()
    assert health["ok"] and health["discord"] == {"connected": True}
    assert [(w["name"], w["alive"], w["models"]) for w in health["workers"]] == [
        (f"imaginebot-worker-{i}", True, ["shapes-64"]) for i in (0, 1)
    ]
    assert health["queue"] == {"queued": 0, "running": 0}
    page = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    assert page["imaginebot_jobs_finished_total", (("kind", "imagine"), ("state", "done"))] == 2
    assert page["imaginebot_flagged_images_total", ()] == 8
    for worker in ("0", "1"):  # each ran one job alone: its 40 steps, one UNet call each
        assert page["imaginebot_unet_call_samples_count", (("worker", worker),)] == 40
        assert (
            page["imaginebot_worker_up", (("name", f"imaginebot-worker-{worker}"), ("worker", worker))] == 1
        )
    assert "loading shapes-64 on cpu, cpu" in bot.output
    # one job at a time per worker, two jobs at once: each worker ran one
    assert "joins the batch on imaginebot-worker-0" in bot.output
    assert "joins the batch on imaginebot-worker-1" in bot.output


async def test_several_models_and_a_lora_folder(tmp_path: Path, bots: list[BotProcess]) -> None:
    """IMAGINEBOT_MODELS: bot.py loads each model, /models lists them, --model picks one with its own
    defaults."""
    from imaginebot.config import EMBEDDED_MODEL

    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "ink.safetensors").write_bytes(b"")  # listed by name; a prompt using it would be refused
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(
            server.url,
            tmp_path / "data",
            IMAGINEBOT_MODELS=f"shapes={EMBEDDED_MODEL}, quick={EMBEDDED_MODEL} steps=3 cfg=4",
            IMAGINEBOT_LORA_DIR=str(loras),
        ).start()
        bots.append(bot)
        await commands_synced(bot, server)
        listing = await server.send_command("models", {}, user=server.alice)
        shown = await bot.expect(
            "/models' answer", server.wait_for_response(listing, lambda m: m.ephemeral, timeout=65), 60
        )
        assert "**shapes** (default)" in shown.content and "**quick**" in shown.content
        assert "steps 3 · cfg 4" in shown.content and "`ink`" in shown.content
        asked = await server.send_command(
            "imagine", {"prompt": "a red circle --model quick"}, user=server.bob
        )
        grid = await grid_for(bot, server, asked, timeout=120)
        assert "--model quick" in grid.content
        row = await wait_for_job(bot, "done", lambda r: r["status"] == "done")
        await bot.stop()
    assert (row["model"], row["steps"], row["cfg"]) == ("quick", 3, 4.0)
    assert "loading shapes, quick on auto" in bot.output


async def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path: Path, bots: list[BotProcess]) -> None:
    broken = tmp_path / "half-downloaded.safetensors"
    header = b'{"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}'
    broken.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 100)
    async with run_mock_discord(bot_token=TOKEN) as server:
        bot = await BotProcess(server.url, tmp_path / "data", IMAGINEBOT_MODEL=str(broken)).start()
        bots.append(bot)
        assert await bot.wait() == 2
    said = [line for line in bot.lines if str(broken) in line]
    assert len(said) == 1 and "truncated" in said[0], bot.output
    assert "Traceback" not in bot.output
