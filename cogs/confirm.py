"""The question /imagine asks before it queues several jobs (permutations, --repeat): how many jobs and
images, and Yes or No.

Both buttons are DynamicItems whose custom_id carries the batch (``ib:batch:<id>:y`` / ``:n``), and the
batch is in the store, so a Yes still queues it after a restart of the bot (or says that the question has
expired). The question is ephemeral: only its student sees it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import discord

from cogs.common import short
from imaginebot.batches import Question

BATCH_ID = r"ib:batch:(?P<batch>[0-9]{1,20}):(?P<answer>[yn])"  # well under Discord's 100 characters
LISTED = 10  # prompts shown in the question; the rest are counted
QUESTION_CHARS = 1900


class Answer(StrEnum):
    YES = "y"
    NO = "n"


class BatchButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=BATCH_ID):
    """Yes or No under a batch's question."""

    def __init__(self, batch_id: int, answer: Answer) -> None:
        yes = answer is Answer.YES
        super().__init__(
            discord.ui.Button(
                label="Yes" if yes else "No",
                style=discord.ButtonStyle.success if yes else discord.ButtonStyle.danger,
                custom_id=f"ib:batch:{batch_id}:{answer}",
            )
        )
        self.batch_id, self.answer = batch_id, answer

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction[Any], item: discord.ui.Button[Any], match: Any, /
    ) -> BatchButton:
        return cls(int(match["batch"]), Answer(match["answer"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        cog: Any = interaction.client.get_cog("Imagine")
        await cog.on_batch_answer(interaction, self.batch_id, self.answer)


def question_view(batch_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(BatchButton(batch_id, Answer.YES))
    view.add_item(BatchButton(batch_id, Answer.NO))
    return view


def question_text(question: Question) -> str:
    jobs, images = question.jobs, question.images
    how = (
        f"{question.permutations} prompts from its {{ }} options"
        if question.permutations > 1
        else "one prompt"
    )
    if jobs > question.permutations:
        how += " with --repeat"
    lines = [f"**This prompt makes {jobs} jobs, {images} images in all** ({how}). Queue them all?"]
    lines += [f"- `{short(prompt, 160)}`" for prompt in question.prompts[:LISTED]]
    if jobs > LISTED:
        lines.append(f"- … and {jobs - LISTED} more.")
    if question.relax_jobs == jobs:
        lines.append("They run in relax: they start when no fast job waits, and cost no quota.")
    elif question.relax_jobs:
        lines.append(f"{question.relax_jobs} of them run in relax, costing no quota.")
    lines.append("**Yes** queues every one of them (the quota is taken for all at once); **No** queues none.")
    return short("\n".join(lines), QUESTION_CHARS)
